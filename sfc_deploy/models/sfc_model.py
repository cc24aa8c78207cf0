"""The full SFC model: frozen head -> SFC -> frozen tail, and its checkpoint format.

The backbone stays frozen (``requires_grad=False``) and in eval mode (BatchNorm statistics are
pretrained and must not move), even when the module is put in training mode: only SFC learns.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.errors import CheckpointError
from sfc_deploy.models.config import BackboneConfig, check_split
from sfc_deploy.models.resnet3d import ResNet3d
from sfc_deploy.models.sfc import SFC

SFC_FORMAT = "sfc/1"


class SFCModel(nn.Module):
    """head -> SFC -> tail on a whole video (N, 3, T, H, W); ``backbone(clip)`` is the dense model."""

    def __init__(self, backbone: ResNet3d, sfc: SFC, *, split: str = "res3") -> None:
        super().__init__()
        self.backbone = backbone
        self.sfc = sfc
        self.split = check_split(split)
        backbone.split = self.split
        backbone.requires_grad_(False)
        backbone.eval()

    @property
    def config(self) -> BackboneConfig:
        return self.backbone.config

    def train(self, mode: bool = True) -> "SFCModel":
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm, as in the paper
        return self

    def head(self, video: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Head features. ``chunk`` streams the head over time, identical where the head has no
        temporal receptive field (splits up to res3 of slow-only): memory then stops growing with
        the video's length except for the head feature itself."""
        if chunk is None or chunk >= video.shape[2]:
            return self.backbone.forward_head(video)
        self.config.check_head_chunk(self.split, chunk)
        return torch.cat([self.backbone.forward_head(c) for c in video.split(chunk, dim=2)], dim=2)

    def tail(self, f: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_tail(f)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.tail(self.sfc(self.head(video)))

    def forward_with_attention(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the attention map M (N, k, T) over the head's time steps (paper Fig. 6)."""
        out, m = self.sfc(self.head(video), return_attention=True)
        return self.tail(out), m


def save_sfc_checkpoint(model: SFCModel, path: str | Path, *, extra: dict | None = None) -> Path:
    """Write SFC weights with the backbone and SFC config they belong to (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {
        "sfc_deploy_format": SFC_FORMAT,
        "backbone_config": model.config.to_json(),
        "sfc_config": model.sfc.config.to_json(),
        "split": model.split,
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.sfc.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta), suffix=".safetensors")
    return path


def read_sfc_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """SFC weights and their metadata; anything but an sfc-deploy SFC checkpoint is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"SFC checkpoint {path} is a folder, not a file; pass the sfc.safetensors `sfc-deploy train` wrote")
    if not path.is_file():
        raise CheckpointError(f"SFC checkpoint {path} does not exist; pass the file written by `sfc-deploy train`")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a safetensors SFC checkpoint ({exc}); pass the file written by `sfc-deploy train`") from exc
    if raw.get("sfc_deploy_format") != SFC_FORMAT:
        raise CheckpointError(
            f"{path} is not an SFC checkpoint (format {raw.get('sfc_deploy_format')!r}, expected {SFC_FORMAT!r}); "
            "backbone weights go to --checkpoint, SFC weights to --sfc-checkpoint"
        )
    meta = {
        "backbone_config": json.loads(raw["backbone_config"]),
        "sfc_config": json.loads(raw["sfc_config"]),
        "split": raw["split"],
        "extra": json.loads(raw.get("extra", "{}")),
    }
    return state, meta
