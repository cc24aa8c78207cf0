"""The time-folding rewrite ONNX Runtime runs every graph through (sfc_deploy/runtime/ort_fold.py):
same outputs as the 3D graph, and every unit-time-kernel op really moved to the 2D form."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sfc_deploy.runtime.ort_fold import fold_time  # noqa: E402


def _graph() -> onnx.ModelProto:
    """stem-like 1x3x3 conv -> relu -> maxpool -> residual (1x1x1 + temporal 3x1x1) -> mean: a slow-only block."""
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
        helper.make_node("ReduceMean", ["y5"], ["pooled"], axes=[2, 3, 4], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "t", 16, 20])],
        [helper.make_tensor_value_info("y5", TensorProto.FLOAT, None), helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("shape", [(1, 3, 5, 16, 20), (2, 3, 3, 16, 20)])
def test_folded_graph_matches_the_3d_graph(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref = _run(_graph(), x)
    out = _run(fold_time(_graph()), x)
    for r, o in zip(ref, out):
        assert o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5 * np.abs(r).max())


def test_every_convolution_runs_in_2d():
    folded = fold_time(_graph())
    weights = {i.name: list(i.dims) for i in folded.graph.initializer}
    convs = [n for n in folded.graph.node if n.op_type in ("Conv", "MaxPool")]
    assert len(convs) == 5
    for n in convs:
        kernel = next(a.ints for a in n.attribute if a.name == "kernel_shape")
        assert len(kernel) == 2, n.output
    assert weights["w_a"] == [8, 8, 3, 1]  # the temporal conv became a (3, 1) conv over (T, H*W)
    assert weights["w_stem"] == [8, 3, 3, 3]


def test_a_graph_without_unit_time_ops_is_left_alone():
    only_temporal = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    before = only_temporal.SerializeToString()
    assert fold_time(only_temporal).SerializeToString() == before
