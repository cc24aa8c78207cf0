"""Run the custom-op graph (``sfc::TopKTemporalPool``) on ONNX Runtime without TensorRT.

onnxruntime-extensions executes Python custom ops registered in its own domain
(``ai.onnx.contrib``); we register the NumPy reference there and load the graph with the custom
node moved into that domain, in memory only (the file on disk keeps domain ``sfc`` for the
TensorRT plugin). So the custom graph is verified against the same oracle as every other
implementation of the op.
"""

from __future__ import annotations

import onnx

from sfc_deploy.errors import BackendUnavailableError
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE

_REGISTERED = False


def _register() -> str:
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
        for suffix, dtype in (("", PyCustomOpDef.dt_float), ("_f16", PyCustomOpDef.dt_float16)):

            @onnx_op(op_type=OP_TYPE + suffix, inputs=[dtype], outputs=[dtype], attrs=attrs)
            def _topk(x, **kwargs):
                if int(kwargs.get("axis", 2)) != 2:
                    raise ValueError("TopKTemporalPool supports axis=2 only")
                return topk_temporal_pool_reference(x, int(kwargs["k"]))

        _REGISTERED = True
    return get_library_path()


def load_custom_graph(path: str) -> tuple[bytes, str]:
    """The model bytes with ``sfc::TopKTemporalPool`` moved to the extensions' domain, and the
    extensions library to register on the session."""
    from onnxruntime_extensions import default_opset_domain

    library = _register()
    model = onnx.load(path)
    fp16 = {
        init.name for init in model.graph.input if init.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            node.domain = default_opset_domain()
            if fp16:
                node.op_type = OP_TYPE + "_f16"
    for imp in model.opset_import:
        if imp.domain == DOMAIN:
            imp.domain = default_opset_domain()
    return model.SerializeToString(), library
