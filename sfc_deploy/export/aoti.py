"""AOTInductor packages (``.pt2``): ``torch.export`` + Inductor ahead-of-time compilation.

Loadable from Python (``torch._inductor.aoti_load_package``) and from C++
(``torch::inductor::AOTIModelPackageLoader``). Batch stays dynamic, and time too except in the
SFC package (see ``exporter._variants``). The SFC's TopK is
compiled from aten ops (``topk_impl="aten"``) so the package needs no Python custom op.
Compiling runs a C++ compiler: expect about a minute per part on 2 cores.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch

from sfc_deploy.export.parts import Part


def export_aoti(part: Part, path: Path, *, device: str = "cpu") -> Path:
    """Export and compile ``part`` into an AOTInductor package at ``path`` (atomically)."""
    path = Path(path)
    module = part.module.eval().to(device)
    example = tuple(t.to(device) for t in part.example)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, example, dynamic_shapes=part.dynamic or None)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".pt2")
        os.close(fd)
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
