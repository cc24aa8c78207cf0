"""The ONNX Runtime runner serves its file as is, and tells a broken artifact (a failure) from a
backend this machine lacks ("not run"): verify must never pass over a graph that does not load."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sfc_deploy.errors import ArtifactError, BackendUnavailableError
from sfc_deploy.export.manifest import Artifact, TensorSpec
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE
from sfc_deploy.export.ort_graph import write_ort_graph
from sfc_deploy.ops import topk_temporal_pool_reference
from sfc_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner


def _model(node, dtype=TensorProto.FLOAT, shape=(2, 3), out_shape=None, domains=()) -> onnx.ModelProto:
    return helper.make_model(
        helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, shape)],
                          [helper.make_tensor_value_info("y", dtype, out_shape or shape)]),
        opset_imports=[helper.make_opsetid("", 18), *(helper.make_opsetid(d, 1) for d in domains)],
    )


def _runner(path: Path, dtype: str = "float32", shape=(2, 3), **options) -> OnnxRuntimeRunner:
    art = Artifact(file=path.name, part="sfc", format="onnx", precision="fp32",
                   inputs=(TensorSpec("x", tuple(shape), dtype),), outputs=(TensorSpec("y", (), dtype),))
    return OnnxRuntimeRunner(art, path, threads=1, **options)


def _write(tmp_path: Path, data: bytes | onnx.ModelProto, name: str = "sfc.ort.fp32.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.SerializeToString())
    return path


def _refused_as_broken(path: Path, **options) -> str:
    with pytest.raises(ArtifactError) as exc:
        with _runner(path, **options):
            pass
    message = str(exc.value)
    assert not isinstance(exc.value, BackendUnavailableError)
    assert path.name in message and "sfc-deploy export --force" in message and "\n" not in message
    return message


def test_the_file_is_served_as_is(tmp_path: Path) -> None:
    path = _write(tmp_path, _model(helper.make_node("Relu", ["x"], ["y"])))
    with _runner(path) as runner:
        x = torch.randn(2, 3)
        torch.testing.assert_close(runner.infer({"x": x})["y"], x.clamp(min=0))
        assert runner.session._model_path == str(path)  # the path itself, no bytes rewritten in memory


def test_truncated_bytes_are_a_broken_artifact(tmp_path: Path) -> None:
    good = _model(helper.make_node("Relu", ["x"], ["y"])).SerializeToString()
    _refused_as_broken(_write(tmp_path, good[: len(good) // 2]))


@pytest.mark.parametrize(
    "node",
    [
        helper.make_node("NotAnOp", ["x"], ["y"]),  # invalid graph
        helper.make_node("Relu", ["x"], ["y"], bogus=3),  # attribute the schema does not have
        helper.make_node("Relu", ["nowhere"], ["y"]),  # dangling input
    ],
    ids=["unknown-op", "bad-attribute", "dangling-input"],
)
def test_an_invalid_graph_is_a_broken_artifact(tmp_path: Path, node) -> None:
    _refused_as_broken(_write(tmp_path, _model(node)))


def test_failed_shape_inference_is_a_broken_artifact(tmp_path: Path) -> None:
    model = helper.make_model(
        helper.make_graph([helper.make_node("Add", ["x", "c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [helper.make_tensor("c", TensorProto.FLOAT, [4, 5], [0.0] * 20)]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    _refused_as_broken(_write(tmp_path, model))


def test_the_tensorrt_graph_is_refused_as_the_wrong_artifact(tmp_path: Path) -> None:
    node = helper.make_node(OP_TYPE, ["x"], ["y"], domain=DOMAIN, k=2, axis=2, plugin_namespace="sfc", plugin_version="1")
    message = _refused_as_broken(_write(tmp_path, _model(node, shape=(1, 2, 4, 1, 1), out_shape=(1, 2, 2, 1, 1), domains=(DOMAIN,))))
    assert "TensorRT plugin" in message


def test_a_kernel_onnxruntime_lacks_is_not_run(tmp_path: Path) -> None:
    path = _write(tmp_path, _model(helper.make_node("Tanh", ["x"], ["y"]), dtype=TensorProto.BFLOAT16))
    with pytest.raises(BackendUnavailableError, match="NOT_IMPLEMENTED") as exc:
        with _runner(path, dtype="bfloat16"):
            pass
    assert path.name in str(exc.value)


def test_a_provider_that_is_not_installed_is_not_run(tmp_path: Path) -> None:
    path = _write(tmp_path, _model(helper.make_node("Relu", ["x"], ["y"])))
    with pytest.raises(BackendUnavailableError, match="has no NoSuchExecutionProvider"):
        with _runner(path, providers=["NoSuchExecutionProvider", "CPUExecutionProvider"]):
            pass


@pytest.mark.parametrize("module", ["onnxruntime", "onnxruntime_extensions"])
def test_a_missing_library_is_not_run(tmp_path: Path, monkeypatch, module: str) -> None:
    src = _write(tmp_path, _model(helper.make_node(OP_TYPE, ["x"], ["y"], domain=DOMAIN, k=2, axis=2),
                                  shape=(1, 2, 4, 1, 1), out_shape=(1, 2, 2, 1, 1), domains=(DOMAIN,)), "sfc.custom.fp32.onnx")
    served = write_ort_graph(src, tmp_path / "sfc.ort-custom.fp32.onnx")
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    if module == "onnxruntime_extensions":
        monkeypatch.setattr("sfc_deploy.runtime.ort_custom_op._REGISTERED", False)
    with pytest.raises(BackendUnavailableError, match="pip install"):
        with _runner(served, shape=(1, 2, 4, 1, 1)):
            pass


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_the_served_custom_op_graph_runs_with_the_numpy_reference(tmp_path: Path, dtype) -> None:
    node = helper.make_node(OP_TYPE, ["x"], ["y"], domain=DOMAIN, k=3, axis=2, plugin_namespace="sfc", plugin_version="1")
    src = _write(tmp_path, _model(node, dtype=dtype, shape=(2, 3, 7, 2, 2), out_shape=(2, 3, 3, 2, 2), domains=(DOMAIN,)),
                 "sfc.custom.onnx")
    served = write_ort_graph(src, tmp_path / "sfc.ort-custom.onnx")
    name = "float16" if dtype == TensorProto.FLOAT16 else "float32"
    value = np.random.default_rng(0).integers(-4, 4, (2, 3, 7, 2, 2)).astype(name)  # many ties
    with _runner(served, dtype=name, shape=(2, 3, 7, 2, 2)) as runner:
        got = runner.infer({"x": torch.from_numpy(value)})["y"].numpy()
    assert got.dtype == value.dtype
    np.testing.assert_array_equal(got, topk_temporal_pool_reference(value, 3))


@pytest.mark.parametrize("options", [{}, {"shrink_arena": True}, {"cpu_arena": False},
                                     {"cpu_arena": False, "shrink_arena": True}])
def test_the_arena_settings_give_the_same_result(tmp_path: Path, options) -> None:
    """With or without ONNX Runtime's CPU arena (and its shrinking, which needs one) the graph runs alike."""
    path = _write(tmp_path, _model(helper.make_node("Relu", ["x"], ["y"])))
    x = torch.tensor([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]])
    with _runner(path, **options) as runner:
        assert runner.session.get_session_options().enable_cpu_mem_arena == options.get("cpu_arena", True)
        for _ in range(2):  # a second run after the first one's buffers went back
            assert torch.equal(runner.infer({"x": x})["y"], x.clamp(min=0))
