"""FLOP and parameter accounting that counts what actually runs.

``torch.utils.flop_counter.FlopCounterMode`` counts the matmuls and convolutions dispatched by a
real forward pass; we run it on the ``meta`` device so that a 1.6-TFLOP dense video costs no
compute. The paper's "FLOPs" are multiply-accumulates, so everything here is reported in GMACs
(= counted FLOPs / 2).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sfc_deploy.models.sfc_model import SFCModel


@dataclass(frozen=True)
class Cost:
    """Cost of classifying one video with one strategy."""

    gmacs: float
    params_m: float
    by_part: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def count_macs(fn, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of ``fn(*inputs)``, counted by the dispatcher."""
    with FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return counter.get_total_flops() // 2


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(module: nn.Module) -> nn.Module:
    """``module`` on the meta device (a copy; the module itself where it already is): counting runs nothing."""
    return copy.deepcopy(module).to("meta") if next(module.parameters()).device.type != "meta" else module


def sfc_cost(model: SFCModel, *, frames: int, size: tuple[int, int], batch: int = 1) -> Cost:
    """GMACs per video of head -> SFC -> tail on a whole video of ``frames`` sampled frames."""
    m = on_meta(model)
    video = torch.empty(batch, 3, frames, *size, device="meta")
    with torch.no_grad():
        head_macs = count_macs(m.head, video)
        f = m.head(video)
        sfc_macs = count_macs(m.sfc, f)
        tail_macs = count_macs(m.tail, m.sfc(f))
    per_video = {k: v / batch / 1e9 for k, v in {"head": head_macs, "sfc": sfc_macs, "tail": tail_macs}.items()}
    return Cost(gmacs=sum(per_video.values()), params_m=params(model) / 1e6, by_part=per_video)


def dense_cost(model: SFCModel, *, num_clips: int = 10, num_crops: int = 3) -> Cost:
    """GMACs per video of 30-crop dense sampling: one clip's cost times the number of crops."""
    m = on_meta(model)
    cfg = m.config
    clip = torch.empty(1, 3, cfg.frames, cfg.preprocess.crop, cfg.preprocess.crop, device="meta")
    with torch.no_grad():
        clip_gmacs = count_macs(m.backbone, clip) / 1e9
    crops = num_clips * num_crops
    return Cost(
        gmacs=clip_gmacs * crops,
        params_m=params(model.backbone) / 1e6,
        by_part={"clip": clip_gmacs, "crops": float(crops)},
    )
