"""Precisions as data: the name users type, the torch dtype, the dtype name in manifests.

:data:`PRECISIONS` are the ones every export format writes (fp32, fp16). bf16 is served by the
PyTorch runtime only (:data:`RUNTIME_PRECISIONS`): it converts the reference weights at load, so
no artifact is written for it, and ONNX/TensorRT bf16 is not worth supporting; every other
runtime refuses it with one line (:func:`check_runtime_precision`).

int8 (:data:`QUANTIZED`) is written for the ONNX format only, by ONNX Runtime's static quantiser
from the fp32 graphs (:mod:`sfc_deploy.export.quantize`), and served by ONNX Runtime only. Its
graphs take and return float32 tensors (the int8 arithmetic is inside, between QuantizeLinear and
DequantizeLinear nodes), so its dtype is float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfc_deploy.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    name: str  # as on the command line: fp32, fp16, bf16
    dtype: torch.dtype
    dtype_name: str  # as in manifest tensor specs: float32, float16, bfloat16


#: precisions every export format writes (``export --precisions``)
PRECISIONS: dict[str, Precision] = {
    p.name: p for p in (Precision("fp32", torch.float32, "float32"), Precision("fp16", torch.float16, "float16"))
}
#: quantised precisions: written for one format, served by one runtime (float32 in and out)
QUANTIZED: dict[str, Precision] = {"int8": Precision("int8", torch.float32, "float32")}
#: the format that writes the quantised precisions, and the runtime that serves them
QUANTIZED_FORMAT, QUANTIZED_RUNTIME = "onnx", "onnxruntime"
#: precisions ``export --precision`` takes
EXPORT_PRECISIONS: dict[str, Precision] = {**PRECISIONS, **QUANTIZED}
#: precisions a runtime may serve: the exported ones, and bf16 on the PyTorch runtime (weights converted at load)
RUNTIME_PRECISIONS: dict[str, Precision] = {
    **EXPORT_PRECISIONS, "bf16": Precision("bf16", torch.bfloat16, "bfloat16"),
}
#: the runtime that serves the precisions no artifact is written in
WEIGHTS_RUNTIME = "pytorch"
#: manifest dtype name -> torch dtype (tensor specs also name integer tensors)
TORCH_DTYPES: dict[str, torch.dtype] = {
    **{p.dtype_name: p.dtype for p in RUNTIME_PRECISIONS.values()},
    "int64": torch.int64,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def get_precision(name: str) -> Precision:
    """The precision called ``name`` (exported or runtime-only), or a one-line error listing the known ones."""
    if name not in RUNTIME_PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; expected one of {', '.join(RUNTIME_PRECISIONS)}")
    return RUNTIME_PRECISIONS[name]


def serves_precision(runtime: str, name: str) -> bool:
    """Whether ``runtime`` serves precision ``name``: int8 on ONNX Runtime only, bf16 (no file is written
    in it) on the PyTorch runtime only, fp32 and fp16 everywhere."""
    if name in QUANTIZED:
        return runtime == QUANTIZED_RUNTIME
    return name in PRECISIONS or runtime == WEIGHTS_RUNTIME


def check_runtime_precision(name: str, runtime: str) -> Precision:
    """``name`` if ``runtime`` can serve it (:func:`serves_precision`), one line otherwise."""
    precision = get_precision(name)
    if serves_precision(runtime, name):
        return precision
    if name in QUANTIZED:
        raise ConfigError(
            f"precision {name} is served by the {QUANTIZED_RUNTIME} runtime only (ONNX Runtime static "
            f"quantisation), not {runtime}; use --runtime {QUANTIZED_RUNTIME}, or --precision fp32 or fp16"
        )
    raise ConfigError(
        f"precision {name} is served by the {WEIGHTS_RUNTIME} runtime only (exports are written in "
        f"{', '.join(PRECISIONS)}; ONNX/TensorRT bf16 is not supported); use --runtime {WEIGHTS_RUNTIME} "
        f"or --precision fp16"
    )


def torch_dtype(precision: str) -> torch.dtype:
    """``"fp16"`` -> ``torch.float16``."""
    return get_precision(precision).dtype
