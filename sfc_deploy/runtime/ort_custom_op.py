"""Run the custom-op graph (``sfc::TopKTemporalPool``) on ONNX Runtime without TensorRT.

onnxruntime-extensions executes Python custom ops registered in its own domain
(``ai.onnx.contrib``); we register the NumPy reference there, so the custom graph is verified
against the same oracle as every other implementation of the op. The graph ONNX Runtime serves has
the node in that domain already (written at export by :mod:`sfc_deploy.export.ort_graph`, which
also wraps an fp16 node in exact casts: the extensions' Python ops have no float16, and registering
one aborts the process); the file exported for TensorRT keeps domain ``sfc``.
"""

from __future__ import annotations

from sfc_deploy.errors import BackendUnavailableError
from sfc_deploy.export.onnx import OP_TYPE

_REGISTERED = False


def register_topk_op() -> str:
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
