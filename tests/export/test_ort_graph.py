"""The graph ONNX Runtime serves (sfc_deploy/export/ort_graph.py): same outputs as the exported graph
for other batch sizes and time lengths, every unit-time-kernel op really in 2D form, the custom op
runnable on ONNX Runtime, the source's names and metadata kept, and an atomic write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx  # hard dependencies (pyproject): a broken install must fail here, not skip
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from sfc_deploy.export import ort_graph
from sfc_deploy.export.manifest import sha256_of
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE, check_onnx, export_onnx
from sfc_deploy.export.ort_graph import EXTENSIONS_DOMAIN, fold_time, write_ort_graph
from sfc_deploy.export.parts import build_parts
from sfc_deploy.models.parts import copy_for_export
from sfc_deploy.ops import topk_temporal_pool_reference
from sfc_deploy.runtime.ort_custom_op import register_topk_op

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


# --- a synthetic slow-only block ---------------------------------------------------------------
def _block() -> onnx.ModelProto:
    """stem-like 1x3x3 conv -> relu -> maxpool -> residual (temporal 3x1x1, 1x3x3, 1x1x1) -> mean."""
    rng = np.random.default_rng(0)
    w = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)  # noqa: E731
    inits = [w("w_stem", 8, 3, 1, 3, 3), w("b_stem", 8), w("w_a", 8, 8, 3, 1, 1), w("w_b", 8, 8, 1, 3, 3), w("w_c", 8, 8, 1, 1, 1)]
    nodes = [
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["s"], kernel_shape=[1, 3, 3], pads=[0, 1, 1, 0, 1, 1], strides=[1, 2, 2]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[1, 3, 3], pads=[0, 1, 1, 0, 1, 1], strides=[1, 2, 2]),
        helper.make_node("Conv", ["p", "w_a"], ["a"], kernel_shape=[3, 1, 1], pads=[1, 0, 0, 1, 0, 0]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "w_b"], ["b"], kernel_shape=[1, 3, 3], pads=[0, 1, 1, 0, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"]),
        helper.make_node("Conv", ["br", "w_c"], ["c"], kernel_shape=[1, 1, 1]),
        helper.make_node("Add", ["c", "p"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["y5"]),
        helper.make_node("AveragePool", ["y5"], ["avg"], kernel_shape=[1, 2, 2], strides=[1, 2, 2]),
        helper.make_node("ReduceMean", ["avg"], ["pooled"], axes=[2, 3, 4], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "t", 16, 20])],
        [helper.make_tensor_value_info("y5", TensorProto.FLOAT, ["n", 8, "t", 4, 5]),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["n", 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _folded(model: onnx.ModelProto) -> onnx.ModelProto:
    return ir.to_proto(fold_time(ir.from_proto(model)))


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.register_custom_ops_library(register_topk_op())  # harmless for a graph without the op
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _close(got: list[np.ndarray], want: list[np.ndarray], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        w64 = w.astype(np.float64)
        np.testing.assert_allclose(g.astype(np.float64), w64, rtol=rtol, atol=atol * max(np.abs(w64).max(), 1.0))


def _kernels(model: onnx.ModelProto) -> dict[str, list[list[int]]]:
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    out: dict[str, list[list[int]]] = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            out.setdefault("Conv", []).append(weights[n.input[1]][2:])
        elif n.op_type in ("MaxPool", "AveragePool"):
            out.setdefault(n.op_type, []).append(list(next(a.ints for a in n.attribute if a.name == "kernel_shape")))
    return out


@pytest.mark.parametrize("shape", [(1, 3, 5, 16, 20), (2, 3, 3, 16, 20)])
def test_folded_block_matches_the_3d_block(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    _close(_session(_folded(_block())).run(None, {"x": x}), _session(_block()).run(None, {"x": x}))


def test_every_convolution_and_pool_of_the_block_runs_in_2d():
    onnx.checker.check_model(_block(), full_check=True)
    folded = _folded(_block())
    onnx.checker.check_model(folded, full_check=True)
    kernels = _kernels(folded)
    assert sorted(kernels["Conv"]) == [[1, 1], [3, 1], [3, 3], [3, 3]]  # the temporal conv: (3, 1) over (T, H*W)
    assert kernels["MaxPool"] == [[3, 3]] and kernels["AveragePool"] == [[2, 2]]
    assert not any(len(i.dims) == 5 for i in folded.graph.initializer)  # the 3D weights are gone
    assert [o.name for o in folded.graph.output] == ["y5", "pooled"]
    assert [d.dim_param or d.dim_value for d in folded.graph.input[0].type.tensor_type.shape.dim] == ["n", 3, "t", 16, 20]


def test_a_graph_without_unit_time_ops_is_left_alone():
    only_relu = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 4, 4])]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model = ir.from_proto(only_relu)
    nodes = list(model.graph)
    fold_time(model)
    assert list(model.graph) == nodes and len(model.graph.initializers) == 0


def test_a_weight_shared_with_a_3d_conv_keeps_its_3d_copy():
    """A weight used by a conv that stays 3D (temporal stride 2) and by one that folds: both still run."""
    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 3, 3)).astype(np.float32), "w")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["a"], pads=[0, 1, 1, 0, 1, 1]),
         helper.make_node("Conv", ["a", "w"], ["y"], pads=[0, 1, 1, 0, 1, 1], strides=[2, 1, 1])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "t", 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w]), opset_imports=[helper.make_opsetid("", 18)])
    folded = _folded(model)
    assert sorted(_kernels(folded)["Conv"]) == [[1, 3, 3], [3, 3]]
    x = rng.standard_normal((2, 4, 5, 6, 6)).astype(np.float32)
    _close(_session(folded).run(None, {"x": x}), _session(model).run(None, {"x": x}))


def test_a_product_broadcast_over_time_is_not_folded():
    """Squeeze-excitation: (N, C, 1, 1, 1) gates * (N, C, T, H, W) broadcasts over time; folded,
    (N, C, 1, 1) would not broadcast against (N*T, C, H, W), so the Mul stays 5D."""
    rng = np.random.default_rng(3)
    w = lambda name: numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1, 1)).astype(np.float32), name)  # noqa: E731
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"]),
         helper.make_node("ReduceMean", ["a"], ["m"], axes=[2, 3, 4], keepdims=1),
         helper.make_node("Conv", ["m", "w2"], ["g"]),
         helper.make_node("Sigmoid", ["g"], ["s"]),
         helper.make_node("Mul", ["a", "s"], ["y"])],
        "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "t", 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "t", 6, 6])], [w("w1"), w("w2")]),
        opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)  # as exported graphs are: every value's shape known
    folded = _folded(model)
    assert sorted(_kernels(folded)["Conv"]) == [[1, 1], [1, 1]]
    assert [n.op_type for n in folded.graph.node if n.output[0] == "y"] == ["Mul"]  # on the unfolded tensors
    x = rng.standard_normal((2, 4, 3, 6, 6)).astype(np.float32)
    _close(_session(folded).run(None, {"x": x}), _session(model).run(None, {"x": x}))


# --- real parts of slow8x8_tiny ----------------------------------------------------------------
#: (part, variant, precision) exported once for the module: ~2-4 s each on 2 cores
EXPORTS = [("head", "portable", "fp32"), ("sfc", "portable", "fp32"), ("tail", "portable", "fp32"),
           ("sfc", "custom", "fp32"), ("head", "portable", "fp16"), ("sfc", "portable", "fp16"), ("sfc", "custom", "fp16")]


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory, sfc_tiny):
    """(part, variant, precision) -> (exported file, served file, the torch.export Part)."""
    folder = tmp_path_factory.mktemp("ort_graph")
    model = sfc_tiny.model().eval()
    frames = sfc_tiny.raw_frames // 8
    out = {}
    for precision in ("fp32", "fp16"):
        dtype = torch.float32 if precision == "fp32" else torch.float16
        exported = copy_for_export(model, dtype, topk_impl="op")
        parts = {static: build_parts(exported, frames=frames, size=sfc_tiny.size, dtype=dtype, static_time=static)
                 for static in (False, True)}
        for part, variant, prec in EXPORTS:
            if prec != precision:
                continue
            src = folder / f"{part}.{variant}.{precision}.onnx"
            export_onnx(parts[variant == "custom"][part], src, variant=variant)
            out[part, variant, precision] = (src, write_ort_graph(src, folder / f"{src.stem}.ort.onnx"),
                                             parts[variant == "custom"][part])
    return out


def _feed(part, batch: int, time: int, dtype) -> dict[str, np.ndarray]:
    (spec,) = part.inputs
    shape = [batch if d == "batch" else time if d in ("time", "k") else d for d in spec.shape]
    return {spec.name: np.random.default_rng(batch * 100 + time).standard_normal(shape).astype(dtype)}


@pytest.mark.parametrize("key", [k for k in EXPORTS if k[1] == "portable"], ids="-".join)
def test_served_part_matches_the_exported_part(tiny_parts, key) -> None:
    src, served, part = tiny_parts[key]
    fp16 = key[2] == "fp16"
    want, got = _session(src), _session(served)
    for batch, time in ((1, 8), (3, 5)):  # other batch sizes and time lengths than the export's (2, 8)
        feed = _feed(part, batch, time, np.float16 if fp16 else np.float32)
        _close(got.run(None, feed), want.run(None, feed), *((1e-2, 2e-3) if fp16 else (1e-4, 1e-5)))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_served_custom_op_graph_runs_and_matches_the_portable_graph(tiny_parts, precision) -> None:
    """The custom node runs through onnxruntime-extensions (the NumPy reference): same values as
    PyTorch for fp32, as the exported portable graph (standard TopK ops) for fp16."""
    src, served, part = tiny_parts["sfc", "custom", precision]
    model = onnx.load(served)
    domains = {imp.domain for imp in model.opset_import}
    assert EXTENSIONS_DOMAIN in domains and DOMAIN not in domains
    assert [n.domain for n in model.graph.node if n.op_type == OP_TYPE] == [EXTENSIONS_DOMAIN]
    for batch in (1, 3):  # the time axis of the custom graph is fixed at export
        feed = _feed(part, batch, 8, np.float16 if precision == "fp16" else np.float32)
        got = _session(served).run(None, feed)
        if precision == "fp32":
            with torch.no_grad():
                want = [t.numpy() for t in part.module(torch.from_numpy(feed["f_head"]))]
            _close(got, want)
        else:
            _close(got, _session(tiny_parts["sfc", "portable", "fp16"][0]).run(None, feed), 1e-2, 2e-3)


@pytest.mark.parametrize("key", EXPORTS, ids="-".join)
def test_every_3d_convolution_becomes_2d_and_names_and_metadata_stay(tiny_parts, key) -> None:
    src, served, _ = tiny_parts[key]
    before, after = onnx.load(src), onnx.load(served)
    convs, temporal = _kernels(before)["Conv"], [k for k in _kernels(before)["Conv"] if k[0] > 1]
    assert convs and all(len(k) == 3 and (k[0] == 1 or k[1:] == [1, 1]) for k in convs)  # slow-only: all foldable
    kernels = _kernels(after)["Conv"]
    assert len(kernels) == len(convs)  # no conv added or lost ...
    assert not [k for k in kernels if len(k) == 3]  # ... and no 5D conv left
    assert sorted(k for k in kernels if k[0] > 1 and k[1] == 1) == sorted([k[0], 1] for k in temporal)  # (kt, 1)
    for a, b in ((before.graph.input, after.graph.input), (before.graph.output, after.graph.output)):
        assert [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in a] == [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                                for v in b]
    props = {p.key: p.value for p in after.metadata_props}
    assert {p.key: props.get(p.key) for p in before.metadata_props} == {p.key: p.value for p in before.metadata_props}
    assert props["sfc_deploy.served_by"] == "onnxruntime"
    assert props["sfc_deploy.derived_from"] == src.name and props["sfc_deploy.derived_from_sha256"] == sha256_of(src)
    if key[1] == "portable":
        check_onnx(served)  # the full check with shape inference


def test_an_fp16_custom_op_whose_input_type_is_not_recorded_is_still_wrapped(tmp_path: Path) -> None:
    """No value_info for the node's input: shape inference finds it is fp16, so the casts go in."""
    node = helper.make_node(OP_TYPE, ["r"], ["y"], domain=DOMAIN, k=3, axis=2, plugin_namespace="sfc", plugin_version="1")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3, 7, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3, 3, 2, 2])]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)])
    src = tmp_path / "custom.onnx"
    onnx.save(model, src)
    served = write_ort_graph(src, tmp_path / "custom.ort.onnx")
    assert [n.op_type for n in onnx.load(served).graph.node] == ["Relu", "Cast", OP_TYPE, "Cast"]
    x = np.random.default_rng(0).integers(-4, 4, (2, 3, 7, 2, 2)).astype(np.float16)  # many ties
    (got,) = _session(served).run(None, {"x": x})
    np.testing.assert_array_equal(got, topk_temporal_pool_reference(np.maximum(x, 0), 3))


def test_extensions_domain_is_the_one_onnxruntime_extensions_uses() -> None:
    from onnxruntime_extensions import default_opset_domain

    assert EXTENSIONS_DOMAIN == default_opset_domain()


def test_failed_write_leaves_no_file_behind(tiny_parts, tmp_path: Path, monkeypatch) -> None:
    src, _, _ = tiny_parts["head", "portable", "fp32"]
    dst = tmp_path / "head.ort.fp32.onnx"
    dst.write_bytes(b"the previous file")

    def refuse(path) -> None:
        assert Path(path).is_file() and Path(path) != dst
        raise onnx.checker.ValidationError("simulated checker failure")

    monkeypatch.setattr(ort_graph, "check_ort_graph", refuse)
    with pytest.raises(onnx.checker.ValidationError):
        write_ort_graph(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == [dst.name] and dst.read_bytes() == b"the previous file"
    monkeypatch.undo()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(Exception):
        write_ort_graph(broken, tmp_path / "broken.ort.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, broken.name])
