"""The one Runner interface: context manager, input validation, each backend, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.export.manifest import MANIFEST_VERSION, load_manifest
from sfc_deploy.ops import topk_temporal_pool_reference
from sfc_deploy.runtime import load, make_runner
from sfc_deploy.runtime.base import check_feed


pytestmark = pytest.mark.usefixtures("sfc_one_thread")

@pytest.mark.parametrize("runtime", ["pytorch", "torchscript"])
def test_runner_runs_the_part_and_matches_pytorch(sfc_export_ts: Path, sfc_tiny, runtime: str) -> None:
    manifest = load_manifest(sfc_export_ts)
    model = sfc_tiny.model()
    art = manifest.find("tail", "torchscript")
    x = torch.randn(3, 64, 4, 4, 5)  # batch 3 and k 4 through the dynamic axes of the tail
    with make_runner(manifest, art, runtime) as runner:
        assert runner.active
        got = runner.infer({"f_sfc": x})["logits"]
    assert not runner.active
    with torch.no_grad():
        torch.testing.assert_close(got, model.tail(x), rtol=1e-5, atol=1e-6)


def test_onnxruntime_runs_both_sfc_graphs(sfc_export_onnx: Path, sfc_tiny) -> None:
    manifest = load_manifest(sfc_export_onnx)
    model = sfc_tiny.model()
    f_head = torch.randn(2, 64, 8, 4, 5)
    with torch.no_grad():
        want, want_m = model.sfc(f_head, return_attention=True)
    # the portable graph as written (what TensorRT builds from) and both graphs ONNX Runtime serves
    for variant in ("portable", "ort", "ort-custom"):
        with make_runner(manifest, manifest.find("sfc", "onnx", variant=variant), "onnxruntime", threads=1) as runner:
            got = runner.infer({"f_head": f_head})
        torch.testing.assert_close(got["f_sfc"], want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["attention"], want_m, rtol=1e-4, atol=1e-6)
    # the custom graph as written keeps the TensorRT plugin's domain: ONNX Runtime refuses it, naming the fix
    with pytest.raises(ArtifactError, match="sfc.custom.fp32.onnx"):
        with make_runner(manifest, manifest.find("sfc", "onnx", variant="custom"), "onnxruntime", threads=1):
            pass
    # the served portable graph's time axis is dynamic: another length runs too
    with make_runner(manifest, manifest.find("sfc", "onnx", variant="ort"), "onnxruntime", threads=1) as runner:
        f_head = torch.randn(1, 64, 11, 4, 5)
        with torch.no_grad():
            torch.testing.assert_close(runner.infer({"f_head": f_head})["f_sfc"], model.sfc(f_head), rtol=1e-4, atol=1e-5)


def test_custom_op_fp16_graph_runs_on_onnxruntime(tmp_path: Path) -> None:
    """The extensions' Python ops have no fp16: the node is wrapped in exact casts."""
    import onnxruntime as ort

    from sfc_deploy.export.onnx import DOMAIN, OP_TYPE, check_onnx
    from sfc_deploy.export.ort_graph import write_ort_graph
    from sfc_deploy.runtime.ort_custom_op import register_topk_op

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3, 7, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3, 3, 2, 2])
    node = helper.make_node(OP_TYPE, ["x"], ["y"], domain=DOMAIN, k=3, axis=2, plugin_namespace="sfc", plugin_version="1")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
    )
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    check_onnx(path)
    served = write_ort_graph(path, tmp_path / "custom.ort.onnx")  # the graph ONNX Runtime serves
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(register_topk_op())
    session = ort.InferenceSession(str(served), opts, providers=["CPUExecutionProvider"])
    value = np.random.default_rng(0).integers(-4, 4, (2, 3, 7, 2, 2)).astype(np.float16)  # many ties
    (got,) = session.run(None, {"x": value})
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, topk_temporal_pool_reference(value, 3))


@pytest.mark.parametrize(
    ("feed", "match"),
    [
        ({"video": torch.randn(1, 3, 8, 32, 40)}, r"inputs \['video'\] given, expected \['f_sfc'\]"),
        ({"f_sfc": torch.randn(1, 64, 4, 4, 5, dtype=torch.float64)}, "is torch.float64, expected torch.float32"),
        ({"f_sfc": torch.randn(64, 4, 4, 5)}, "expected rank 5"),
        ({"f_sfc": torch.randn(1, 128, 4, 4, 5)}, "axis 1 must be 64"),
    ],
)
def test_infer_validates_names_dtypes_and_shapes(sfc_export_ts: Path, feed, match: str) -> None:
    manifest = load_manifest(sfc_export_ts)
    with make_runner(manifest, manifest.find("tail", "torchscript"), "torchscript") as runner:
        with pytest.raises(ArtifactError, match=match) as exc:
            runner.infer(feed)
    assert "\n" not in str(exc.value)


def test_symbolic_dims_must_agree_and_runner_must_be_active(sfc_export_ts: Path) -> None:
    from sfc_deploy.export.manifest import TensorSpec

    specs = (TensorSpec("a", ("batch", 2), "float32"), TensorSpec("b", ("batch", 2), "float32"))
    with pytest.raises(ArtifactError, match="dimension 'batch' is 2 in one input and 3"):
        check_feed({"a": torch.zeros(2, 2), "b": torch.zeros(3, 2)}, specs, where="test")
    manifest = load_manifest(sfc_export_ts)
    runner = make_runner(manifest, manifest.find("tail", "torchscript"), "torchscript")
    with pytest.raises(ArtifactError, match="not active; use it as a context manager"):
        runner.infer({"f_sfc": torch.randn(1, 64, 4, 4, 5)})


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_artifact_is_refused_on_load(sfc_export_ts: Path, tmp_path: Path) -> None:
    folder = _copy(sfc_export_ts, tmp_path / "export")
    (folder / "head.fp32.ts").write_bytes((folder / "head.fp32.ts").read_bytes() + b"\0")
    with load(folder, runtime="torchscript") as dep:
        with pytest.raises(ArtifactError, match=r"head\.fp32\.ts does not match its sha256") as exc:
            dep.predict(torch.randn(1, 3, 8, 32, 40))
    assert "\n" not in str(exc.value)
    (folder / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ArtifactError, match="model.safetensors does not match its sha256"):
        load(folder, runtime="pytorch")


def test_incompatible_or_missing_manifest_is_refused(sfc_export_ts: Path, tmp_path: Path) -> None:
    folder = _copy(sfc_export_ts, tmp_path / "export")
    data = json.loads((folder / "manifest.json").read_text())
    data["manifest_version"] = MANIFEST_VERSION + 1
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=f"manifest version {MANIFEST_VERSION + 1} but this sfc-deploy") as exc:
        load(folder, runtime="torchscript")
    assert "\n" not in str(exc.value) and "re-export" in str(exc.value)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="has no manifest.json; pass a folder written by `sfc-deploy export`"):
        load(folder)


def test_bad_deployment_options_are_refused(sfc_export_ts: Path) -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'tvm'; expected one of"):
        load(sfc_export_ts, runtime="tvm")
    with pytest.raises(ConfigError, match="custom-op SFC graph is ONNX-only"):
        load(sfc_export_ts, runtime="torchscript", sfc_variant="custom")
    with pytest.raises(ConfigError, match="unknown SFC graph variant 'fast'"):
        load(sfc_export_ts, runtime="torchscript", sfc_variant="fast")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        load(sfc_export_ts, runtime="torchscript", precision="int4")
    with pytest.raises(ConfigError, match="int8 is served by the onnxruntime runtime only"):
        load(sfc_export_ts, runtime="torchscript", precision="int8")
    with load(sfc_export_ts, runtime="onnxruntime") as dep:  # no ONNX files in this folder
        with pytest.raises(ArtifactError, match="has no head artifact in onnx/fp32; it has .*torchscript/fp32"):
            dep.predict(torch.randn(1, 3, 8, 32, 40))
