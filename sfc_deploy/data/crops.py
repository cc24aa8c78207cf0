"""Index arithmetic of the sampling strategies, on tensors already decoded and normalised.

These functions are the single source of truth for *which* frames and pixels each strategy uses;
the decoders in :mod:`sfc_deploy.data` call them to know which frames to read.
"""

from __future__ import annotations

import torch

from sfc_deploy.errors import VideoError
from sfc_deploy.models.config import BackboneConfig


def clip_starts(num_frames: int, clip_span: int, num_clips: int) -> list[int]:
    """First raw frame of each of ``num_clips`` clips, evenly spaced over max(frames - span, 0)."""
    max_start = max(num_frames - clip_span, 0)
    if num_clips == 1:
        return [max_start // 2]
    return [round(i * max_start / (num_clips - 1)) for i in range(num_clips)]


def clip_frame_indices(num_frames: int, start: int, frames: int, stride: int) -> list[int]:
    """Raw frame indices of one clip; a video shorter than the clip repeats its last frame."""
    if num_frames < 1:
        raise VideoError("video has no frames; check that the file decodes (ffprobe FILE)")
    return [min(start + j * stride, num_frames - 1) for j in range(frames)]


def spatial_crop_offsets(height: int, width: int, crop: int, num_crops: int = 3) -> list[tuple[int, int]]:
    """(top, left) of each crop: left/centre/right along the long side (top/centre/bottom if H > W)."""
    if min(height, width) < crop:
        raise VideoError(
            f"frames are {height}x{width} but the crop is {crop}; resize the short side to at least {crop}"
        )
    long_is_width = width >= height
    span = (width if long_is_width else height) - crop
    centre = ((height if long_is_width else width) - crop) // 2
    if num_crops == 1:
        along = [span // 2]
    else:
        along = [round(i * span / (num_crops - 1)) for i in range(num_crops)]
    return [(centre, a) if long_is_width else (a, centre) for a in along]


def full_video_indices(num_frames: int, stride: int, max_frames: int | None = None) -> list[int]:
    """Frames SFC reads: every ``stride``-th raw frame, at most ``max_frames`` of them."""
    idx = list(range(0, num_frames, stride))
    return idx[:max_frames] if max_frames else idx
