"""The model as its deployable parts, and the copy each export format is traced from.

A deployment runs four modules, each a thin view onto one :class:`SFCModel` (shared weights):

``head``  video  (batch, 3, time, H, W)         -> f_head (batch, C, time, h, w)
``sfc``   f_head (batch, C, time, h, w)         -> f_sfc (batch, C, k, h, w), attention (batch, k, time)
``tail``  f_sfc  (batch, C, k, h, w)            -> logits (batch, classes)
``clip``  clip   (batch, 3, frames, crop, crop) -> logits (batch, classes)   (the dense baseline)

Exporters trace these modules; the PyTorch runtime serves them directly, so what PyTorch runs and
what an artifact runs are the same modules.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sfc_deploy.models.sfc_model import SFCModel

PARTS = ("head", "sfc", "tail", "clip")


class HeadPart(nn.Module):
    def __init__(self, model: SFCModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(video)


class SFCPart(nn.Module):
    def __init__(self, model: SFCModel) -> None:
        super().__init__()
        self.sfc = model.sfc

    def forward(self, f_head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sfc(f_head, return_attention=True)


class TailPart(nn.Module):
    def __init__(self, model: SFCModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, f_sfc: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_tail(f_sfc)


class ClipPart(nn.Module):
    def __init__(self, model: SFCModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.backbone(clip)


PART_MODULES: dict[str, type[nn.Module]] = {"head": HeadPart, "sfc": SFCPart, "tail": TailPart, "clip": ClipPart}


def part_modules(model: SFCModel) -> dict[str, nn.Module]:
    """The four parts of ``model`` as modules sharing its weights, in eval mode."""
    return {name: cls(model).eval() for name, cls in PART_MODULES.items()}


def copy_for_export(model: SFCModel, dtype: torch.dtype, *, topk_impl: str) -> SFCModel:
    """A copy in ``dtype`` whose TopK is the custom op ("op", for ONNX and eager PyTorch) or plain
    aten ops ("aten", for TorchScript/AOTInductor, which C++ loads without the Python op). The
    original is untouched."""
    clone = copy.deepcopy(model).to(dtype)
    clone.sfc.topk_impl = topk_impl
    return clone.eval()
