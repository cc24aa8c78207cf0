"""The baseline SFC replaces: 30-crop dense sampling (10 temporal clips x 3 spatial crops).

Every crop goes through the whole backbone and the logits are averaged, exactly as in the
literature the paper compares with (SlowFast, Non-local), so SFC and dense can be compared on the
same weights.
"""

from __future__ import annotations

import torch

from sfc_deploy.data.crops import dense_crops
from sfc_deploy.models.resnet3d import ResNet3d


@torch.no_grad()
def dense_logits(
    backbone: ResNet3d,
    video: torch.Tensor,
    *,
    num_clips: int = 10,
    num_crops: int = 3,
    batch_size: int = 30,
    softmax: bool = False,
) -> torch.Tensor:
    """Average of the per-crop logits (or probabilities) of each video.

    Args:
        backbone: the whole network, applied clip by clip.
        video: (N, 3, T_raw, H, W) normalised frames at the full frame rate, short side resized
            to the crop size.
        batch_size: crops per forward pass.
        softmax: average probabilities instead of logits.

    Returns:
        (N, classes).
    """
    crops = dense_crops(video, backbone.config, num_clips=num_clips, num_crops=num_crops)
    out = torch.cat([backbone(chunk) for chunk in crops.split(batch_size)])
    if softmax:
        out = out.softmax(-1)
    return out.reshape(video.shape[0], num_clips * num_crops, -1).mean(1)
