"""Precisions as data: the name users type, the torch dtype, the dtype name in manifests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfc_deploy.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    name: str  # as on the command line: fp32, fp16
    dtype: torch.dtype
    dtype_name: str  # as in manifest tensor specs: float32, float16


PRECISIONS: dict[str, Precision] = {
    p.name: p for p in (Precision("fp32", torch.float32, "float32"), Precision("fp16", torch.float16, "float16"))
}
#: manifest dtype name -> torch dtype (tensor specs also name integer tensors)
TORCH_DTYPES: dict[str, torch.dtype] = {
    **{p.dtype_name: p.dtype for p in PRECISIONS.values()},
    "int64": torch.int64,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def get_precision(name: str) -> Precision:
    """The precision called ``name``, or a one-line error listing the known ones."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def torch_dtype(precision: str) -> torch.dtype:
    """``"fp16"`` -> ``torch.float16``."""
    return get_precision(precision).dtype
