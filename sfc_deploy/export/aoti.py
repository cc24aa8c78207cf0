"""AOTInductor packages (``.pt2``): ``torch.export`` + Inductor ahead-of-time compilation.

Loadable from Python (``torch._inductor.aoti_load_package``) and from C++
(``torch::inductor::AOTIModelPackageLoader``). Batch stays dynamic, and time too except in the
SFC package (see ``exporter._variants``). The SFC's TopK is
compiled from aten ops (``topk_impl="aten"``) so the package needs no Python custom op.
Compiling runs a C++ compiler: expect about a minute per part on 2 cores.

A package is compiled for one device type: ``device="cuda:N"`` moves the part and its example
input there, so Inductor emits Triton/CUDA kernels and the package runs on CUDA only (the exporter
records the device in the manifest and the runner refuses a mismatch). The TopK stays aten inside
a CUDA package too: the project's CUDA kernel is a Python-registered implementation of
``torch.ops.sfc.topk_temporal_pool``, which a package loaded from C++ could not call.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.export.parts import Part


def export_aoti(part: Part, path: Path, *, variant: str = "default", metadata: dict | None = None,
                device: str = "cpu") -> Path:
    """Export and compile ``part`` for ``device`` into an AOTInductor package at ``path`` (atomically)."""
    module = part.module.eval().to(device)
    example = tuple(t.to(device) for t in part.example)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, example, dynamic_shapes=part.dynamic or None)

        def package(tmp: Path) -> None:
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))

        return atomic_write(path, package, suffix=".pt2")  # the packager insists on a .pt2 name
