"""sfc-deploy: Selective Feature Compression (Liu et al., ICCV 2021) for cheap video action recognition.

``import sfc_deploy`` never needs an optional backend (TensorRT, CUDA); those load lazily. Nor does it
import torch: the names below load :mod:`sfc_deploy.models` on first use, so a tool that needs only a
torch-free helper (``sfc_deploy.common.atomic``, say, in ``benchmarks/gpu/collect.py``, which runs after
every step of the GPU check) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: what ``from sfc_deploy import ...`` offers, all from :mod:`sfc_deploy.models`
_MODELS = ("BackboneConfig", "SFCConfig", "SFCModel", "create_backbone", "create_model", "list_backbones")

__all__ = [*_MODELS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _MODELS:
        value = getattr(importlib.import_module("sfc_deploy.models"), name)
        globals()[name] = value  # once: later lookups find it without this function
        return value
    raise AttributeError(f"module 'sfc_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODELS})
