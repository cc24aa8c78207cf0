"""The model as its deployable parts, and the copy each export format is traced from.

A deployment runs four modules, each a thin view onto one :class:`SFCModel` (shared weights):

``head``  video  (batch, 3, time, H, W)         -> f_head (batch, C, time, h, w)
``sfc``   f_head (batch, C, time, h, w)         -> f_sfc (batch, C, k, h, w), attention (batch, k, time)
``tail``  f_sfc  (batch, C, k, h, w)            -> logits (batch, classes)
``clip``  clip   (batch, 3, frames, crop, crop) -> logits (batch, classes)   (the dense baseline)

Exporters trace these modules; the PyTorch runtime serves them directly, so what PyTorch runs and
what an artifact runs are the same modules.

The SFC part's weighted steps are also modules of their own (:data:`SFC_PIECES`), so that a runtime
serving graphs can stream SFC over time (:func:`sfc_deploy.models.sfc_stream.stream_sfc`) instead of
running the whole-video ``sfc`` graph:

``sfc_abs``        f_head chunk (batch, C, time, h, w)        -> f_abs (batch, C, time, h', w')
``sfc_theta_q``    pooled chunk + halo (batch, C, time + 2p, h', w') -> q (batch, C, time, h', w')
``sfc_theta_k``    f_abs chunk + halo  (batch, C, time + 2p, h', w') -> key (batch, C, time, h', w')
``sfc_normalise``  logits (batch, k, time) fp32               -> attention (batch, k, time) fp32
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.models.sfc_stream import conv_valid_time

PARTS = ("head", "sfc", "tail", "clip")
#: the SFC part's weighted steps, for streaming it over time (module doc); no ``sfc_abs`` for kqv="head"
SFC_PIECES = ("sfc_abs", "sfc_theta_q", "sfc_theta_k", "sfc_normalise")


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


class SFCAbsPart(nn.Module):
    def __init__(self, model: SFCModel) -> None:
        super().__init__()
        self.abstraction = model.sfc.abstraction

    def forward(self, f_head: torch.Tensor) -> torch.Tensor:
        return self.abstraction(f_head)


class SFCThetaPart(nn.Module):
    """theta_q or theta_k on a chunk with its halo frames: the conv without temporal padding."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_valid_time(self.conv, x)


class SFCNormalisePart(nn.Module):
    """Logits -> attention (scale, prior, softmax over time); ``d`` = C*h'*w' is fixed by the frame size."""

    def __init__(self, model: SFCModel, d: int) -> None:
        super().__init__()
        self.sfc, self.d = model.sfc, d

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.sfc.normalise(logits, logits.shape[2], logits.shape[1], self.d)


def sfc_piece_modules(model: SFCModel, d: int) -> dict[str, nn.Module]:
    """The :data:`SFC_PIECES` of ``model`` (sharing its weights, in eval mode); ``d`` as in :class:`SFCNormalisePart`."""
    sfc = model.sfc
    pieces = {
        "sfc_abs": SFCAbsPart(model) if sfc.abstraction is not None else None,
        "sfc_theta_q": SFCThetaPart(sfc.theta_q),
        "sfc_theta_k": SFCThetaPart(sfc.theta_k),
        "sfc_normalise": SFCNormalisePart(model, d),
    }
    return {name: module.eval() for name, module in pieces.items() if module is not None}


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
