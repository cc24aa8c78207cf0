"""AOTInductor packages (``.pt2``): ``torch.export`` + Inductor ahead-of-time compilation.

Loadable from Python (``torch._inductor.aoti_load_package``) and from C++
(``torch::inductor::AOTIModelPackageLoader``). Batch stays dynamic, and time too except in the
SFC package (the format's ``sfc_variants``: aten TopK guards on T). The SFC's TopK is
compiled from aten ops (``topk_impl="aten"``) so the package needs no Python custom op.
Compiling runs a C++ compiler: expect about a minute per part on 2 cores.

SFC's streaming pieces (:func:`~sfc_deploy.export.parts.build_sfc_pieces`) are packages of their own
with a dynamic time axis, which is why the AOTInductor runtime streams SFC over time like ONNX Runtime
and TorchScript, on videos of any length: no TopK (the driver pools on the host), so nothing guards on
T; the abstraction and theta are convolutions (theta without temporal padding: a chunk with its halo,
time + 2p frames, gives time frames); the normalisation reads T and k from its input's shape. The
packages do not check a dynamic axis against its declared range at run time, and these pieces' code
holds no assumption on it: a streamed video's last chunk may be one frame (theta then sees 1 + 2p),
below the range's minimum of 2 (which only keeps ``torch.export`` from specialising an example of 1);
tests run each piece at such lengths. The four pieces add about 30 s of compilation for the tiny test
model on 2 cores; ``ExportOptions.sfc_pieces`` (``export --no-sfc-pieces``) leaves them out.

A package is compiled for one device type: ``device="cuda:N"`` moves the part and its example
input there, so Inductor emits Triton/CUDA kernels and the package runs on CUDA only (the exporter
records the device in the manifest and the runner refuses a mismatch), with its weights in torch's
caching allocator (:func:`inductor_configs`). The TopK stays aten inside
a CUDA package too: the project's CUDA kernel is a Python-registered implementation of
``torch.ops.sfc.topk_temporal_pool``, which a package loaded from C++ could not call.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.export.parts import Part


def inductor_configs(device: str) -> dict[str, object]:
    """Inductor settings for a package compiled for ``device``.

    On CUDA the package takes its weights from torch's caching allocator: by default AOTInductor
    ``cudaMalloc``s them itself, out of sight of ``torch.cuda.memory_allocated``, so ``bench`` would count
    no weights for an AOTInductor package where it counts them for the other runtimes. Left out where
    this torch has no such setting.
    """
    if torch.device(device).type == "cuda" and hasattr(torch._inductor.config.aot_inductor, "weight_use_caching_allocator"):
        return {"aot_inductor.weight_use_caching_allocator": True}
    return {}


def export_aoti(part: Part, path: Path, *, variant: str = "default", metadata: dict | None = None,
                device: str = "cpu") -> Path:
    """Export and compile ``part`` for ``device`` into an AOTInductor package at ``path`` (atomically)."""
    module = part.module.eval().to(device)
    example = tuple(t.to(device) for t in part.example)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, example, dynamic_shapes=part.dynamic or None)

        def package(tmp: Path) -> None:
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp),
                                                     inductor_configs=inductor_configs(device) or None)

        return atomic_write(path, package, suffix=".pt2")  # the packager insists on a .pt2 name
