"""Run the custom-op graph (``sfc::TopKTemporalPool``) on ONNX Runtime without TensorRT.

onnxruntime-extensions executes Python custom ops registered in its own domain
(``ai.onnx.contrib``); we register the NumPy reference there and load the graph with the custom
node moved into that domain, in memory only (the file on disk keeps domain ``sfc`` for the
TensorRT plugin). So the custom graph is verified against the same oracle as every other
implementation of the op.

The extensions' Python op API has no float16 (registering one aborts the process), so in an
fp16 graph the node is wrapped in ``Cast`` to float32 and back. That is exact: every fp16 value
is representable in fp32 and the op only selects values, it never computes new ones.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from sfc_deploy.errors import BackendUnavailableError
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE

_REGISTERED = False


def _register() -> str:
    """Register the NumPy reference with onnxruntime-extensions (once); the library to load."""
    global _REGISTERED
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as exc:
        raise BackendUnavailableError(
            "running the custom-op ONNX graph on ONNX Runtime needs onnxruntime-extensions; "
            "pip install onnxruntime-extensions (or use the portable graph)"
        ) from exc
    if not _REGISTERED:
        from sfc_deploy.ops import topk_temporal_pool_reference

        attrs = {
            "k": PyCustomOpDef.dt_int64,
            "axis": PyCustomOpDef.dt_int64,
            "plugin_namespace": PyCustomOpDef.dt_string,
            "plugin_version": PyCustomOpDef.dt_string,
        }

        @onnx_op(op_type=OP_TYPE, inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float], attrs=attrs)
        def _topk(x, **kwargs):
            if int(kwargs.get("axis", 2)) != 2:
                raise ValueError("TopKTemporalPool supports axis=2 only")
            return topk_temporal_pool_reference(x, int(kwargs["k"]))

        _REGISTERED = True
    return get_library_path()


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named value whose type the graph or shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    return {
        v.name: v.type.tensor_type.elem_type
        for v in (*graph.input, *graph.value_info, *graph.output)
        if v.type.HasField("tensor_type")
    }


def load_custom_graph(path: str) -> tuple[bytes, str]:
    """The model bytes with ``sfc::TopKTemporalPool`` moved to the extensions' domain (fp16
    nodes wrapped in casts), and the extensions library to register on the session."""
    from onnxruntime_extensions import default_opset_domain

    from sfc_deploy.export.onnx import register_schema

    library = _register()
    register_schema()  # shape inference below must know the op
    model = onnx.load(path)
    types = _value_types(model)
    contrib = default_opset_domain()
    nodes = []
    for node in model.graph.node:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            nodes.append(node)
            continue
        node.domain = contrib
        if types.get(node.input[0]) == TensorProto.FLOAT16:
            x16, y16 = node.input[0], node.output[0]
            x32, y32 = f"{x16}__sfc_fp32", f"{y16}__sfc_fp32"
            nodes.append(helper.make_node("Cast", [x16], [x32], to=TensorProto.FLOAT))
            node.input[0], node.output[0] = x32, y32
            nodes.append(node)
            nodes.append(helper.make_node("Cast", [y32], [y16], to=TensorProto.FLOAT16))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for imp in model.opset_import:
        if imp.domain == DOMAIN:
            imp.domain = contrib
    return model.SerializeToString(), library
