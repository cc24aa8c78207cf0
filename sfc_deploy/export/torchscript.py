"""TorchScript export (``torch.jit.trace``), loadable from Python and from C++ (``torch::jit::load``).

Tracing records the SFC's TopK as plain aten ops (``topk_impl="aten"``) so that C++ can run it
without the Python custom op. A trace freezes Python arithmetic on sizes, so the SFC part keeps the
time axis it was traced with (recorded in the manifest); head, tail and clip are convolutions
and pooling only and accept any batch and time.

So do SFC's streaming pieces (:func:`~sfc_deploy.export.parts.build_sfc_pieces`), which is why the
TorchScript runtime streams SFC over time like ONNX Runtime: no TopK (the driver pools on the host);
the abstraction and theta are convolutions (theta without temporal padding, so a chunk with its halo,
time + 2p frames, gives time frames at any length); the normalisation reads T and k from its input's
shape, sizes the tracer records as ``aten::size`` rather than freezing (the prior's arithmetic
included). Tests and ``verify`` run each piece at lengths other than its trace's.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.export.parts import Part

EXTRA_FILE = "sfc_deploy.json"


def fp32_convolutions():
    """Trace with cuDNN's TF32 off: a trace freezes ``allow_tf32`` into every ``aten::_convolution``
    node, so a file traced with torch's default (on) would run its fp32 convolutions in TF32 (10
    significand bits) on any GPU it is loaded on, whatever the caller sets. Found by the first GPU
    run: the fp32 TorchScript head on an H200 was 4.8e-4 off the CPU reference, the PyTorch runtime
    with TF32 off was within fp32 tolerance. Every other cuDNN setting is kept as it is."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                       allow_tf32=False)


def export_torchscript(part: Part, path: Path, *, variant: str = "default", metadata: dict | None = None) -> Path:
    """Trace ``part`` and save it atomically with the metadata as an extra file."""
    with warnings.catch_warnings(), torch.no_grad(), fp32_convolutions():
        warnings.simplefilter("ignore")  # TracerWarnings about frozen sizes are expected for SFC
        traced = torch.jit.trace(part.module.eval(), part.example, check_trace=False)
    extra = {EXTRA_FILE: json.dumps({"part": part.name, **(metadata or {})})}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # C++ loaders still read TorchScript
            torch.jit.save(traced, str(tmp), _extra_files=extra)

    return atomic_write(path, write)
