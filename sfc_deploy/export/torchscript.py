"""TorchScript export (``torch.jit.trace``), loadable from Python and from C++ (``torch::jit::load``).

Tracing records the SFC's TopK as plain aten ops (``topk_impl="aten"``) so that C++ can run it
without the Python custom op. A trace freezes Python arithmetic on sizes, so the SFC part keeps the
time axis it was traced with (recorded in the manifest); head, tail and clip are convolutions
and pooling only and accept any batch and time.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.export.parts import Part

EXTRA_FILE = "sfc_deploy.json"


def export_torchscript(part: Part, path: Path, *, variant: str = "default", metadata: dict | None = None) -> Path:
    """Trace ``part`` and save it atomically with the metadata as an extra file."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about frozen sizes are expected for SFC
        traced = torch.jit.trace(part.module.eval(), part.example, check_trace=False)
    extra = {EXTRA_FILE: json.dumps({"part": part.name, **(metadata or {})})}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # C++ loaders still read TorchScript
            torch.jit.save(traced, str(tmp), _extra_files=extra)

    return atomic_write(path, write)
