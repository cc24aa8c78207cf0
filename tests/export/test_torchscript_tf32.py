"""A TorchScript file's fp32 convolutions stay fp32 on a GPU.

``torch.jit.trace`` freezes cuDNN's ``allow_tf32`` into every ``aten::_convolution`` node (its last
argument). Traced under torch's default (on), an "fp32" file ran its convolutions in TF32 on an
H200, 4.8e-4 off the reference where fp32's tolerance is far tighter (benchmarks/gpu). The
exporter now traces with TF32 off; this reads the frozen flag back out of every written file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sfc_deploy.export.manifest import load_manifest


def _frozen_tf32_flags(path: Path) -> list[bool]:
    module = torch.jit.load(str(path), map_location="cpu")
    flags = []
    for graph in [module.inlined_graph]:
        for node in graph.findAllNodes("aten::_convolution"):
            allow_tf32 = list(node.inputs())[-1].node()
            assert allow_tf32.kind() == "prim::Constant", allow_tf32
            flags.append(bool(allow_tf32.i("value")))
    return flags


def test_traced_convolutions_do_not_allow_tf32(sfc_export_ts: Path) -> None:
    manifest = load_manifest(sfc_export_ts)
    checked = 0
    for art in manifest.artifacts:
        if art.format != "torchscript":
            continue
        flags = _frozen_tf32_flags(manifest.path_of(art))
        if art.part not in ("sfc", "sfc_normalise") or flags:  # head, tail, clip and SFC's weighted pieces are convolutions
            assert flags and not any(flags), (art.file, flags)
            checked += 1
    assert checked >= 12  # head, tail, clip, sfc_abs, sfc_theta_q, sfc_theta_k in fp32 and fp16
    assert torch.backends.cudnn.allow_tf32  # the process-wide setting is left as it was
