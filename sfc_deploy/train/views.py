"""Training inputs: decoded frames kept in memory, and augmented views of them.

An augmented view is plain data (:class:`View`): a temporal offset, an outward scale, a crop
position and a flip. Drawing the parameters and rendering the pixels are separate, so the same
view can be rendered twice (once to fill the feature cache, once to check it against the head)
and give the same tensor.

Augmentation follows the paper's recipe: "outward scaling" (resize the short side to a random
size at least the test size), a crop (224x273 of 256x312, i.e. 0.875 of each side) and an
optional horizontal flip. The flip is off by default here: the synthetic dataset's classes come
in mirror pairs (move_left/move_right, orbit_cw/orbit_ccw), which a flip would swap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sfc_deploy.common.parsing import parse_values
from sfc_deploy.data.datasets import VideoList
from sfc_deploy.data.video import normalize, output_size, probe_video, read_frames, resize_short_side
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.config import Preprocess
from sfc_deploy.train.common import Progress


class FrameStore:
    """Raw uint8 frames of every video of a list, decoded once (``preload``) or on each request.

    Decoding dominates a small model's training step, and an epoch reads every video again, so
    preloading pays for itself from the second epoch; ``preload=False`` is for lists that do not
    fit in memory (each request then decodes only the frames it needs).
    """

    def __init__(self, videos: VideoList, *, preload: bool = True, progress: Progress | None = None,
                 reference_only: bool = False) -> None:
        self.videos = videos
        self.reference_only = reference_only  # the fast decode mode of read_frames
        self.infos = [probe_video(path) for path, _ in videos]
        self._frames: list[torch.Tensor] | None = None
        if preload:
            self._frames = []
            for i, ((path, _), info) in enumerate(zip(videos, self.infos)):
                self._frames.append(read_frames(path, range(info.num_frames), info=info, reference_only=reference_only))
                if progress is not None:
                    progress("decode", i + 1, len(videos))

    def __len__(self) -> int:
        return len(self.videos)

    def num_frames(self, i: int) -> int:
        return self.infos[i].num_frames

    def label(self, i: int) -> int:
        return self.videos[i][1]

    def path(self, i: int) -> Path:
        return self.videos[i][0]

    def frames(self, i: int, indices: Sequence[int]) -> torch.Tensor:
        """uint8 (3, len(indices), H, W)."""
        if self._frames is not None:
            return self._frames[i].index_select(1, torch.as_tensor(list(indices), dtype=torch.long))
        return read_frames(self.videos[i][0], list(indices), info=self.infos[i], reference_only=self.reference_only)

    def all_frames(self, i: int) -> torch.Tensor:
        return self._frames[i] if self._frames is not None else self.frames(i, range(self.num_frames(i)))


@dataclass(frozen=True)
class View:
    """One augmented view of a video.

    Attributes:
        offset: raw frames added to every sampled index (temporal jitter within one stride).
        scale: the short side is resized to ``round(short_side * scale)`` (>= 1: outward scaling).
        top: crop position along the height, as a fraction of the free margin (0 top, 1 bottom).
        left: same along the width.
        flip: mirror horizontally.
    """

    offset: int = 0
    scale: float = 1.0
    top: float = 0.5
    left: float = 0.5
    flip: bool = False


@dataclass(frozen=True)
class Augment:
    """Ranges views are drawn from.

    Attributes:
        scale: (min, max) outward scale of the short side.
        crop_fraction: crop side / test-size side (0.875 is the paper's 224x273 of 256x312).
        flip: draw horizontal flips.
        jitter: draw a temporal offset in [0, stride) instead of 0.
    """

    scale: tuple[float, float] = (1.0, 1.25)
    crop_fraction: float = 0.875
    flip: bool = False
    jitter: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(f"scale range must satisfy 0 < min <= max, got {lo}-{hi}")
        if not 0 < self.crop_fraction <= 1:
            raise ConfigError(f"crop fraction must be in (0, 1], got {self.crop_fraction}")

    def draw(self, g: torch.Generator, stride: int) -> View:
        u = torch.rand(5, generator=g).tolist()
        lo, hi = self.scale
        return View(
            offset=int(u[0] * stride) if self.jitter else 0,
            scale=lo + (hi - lo) * u[1],
            top=u[2],
            left=u[3],
            flip=self.flip and u[4] < 0.5,
        )


def parse_range(text: str, name: str) -> tuple[float, float]:
    """``"1.0,1.25"`` -> (1.0, 1.25)."""
    try:
        values = parse_values(text, float, name, "1.0,1.25")
    except ConfigError:
        values = []  # a bad number gets the same MIN,MAX advice as a wrong count
    if len(values) != 2:
        raise ConfigError(f"{name} must be MIN,MAX such as 1.0,1.25, got {text!r}")
    return values[0], values[1]


def render(frames: torch.Tensor, view: View, preprocess: Preprocess, crop: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, T, H, W) -> normalised float32 (3, T, ch, cw): outward scale, crop, flip.

    The crop is taken from the frames resized to ``short_side * view.scale``; ``crop`` never exceeds
    that size as long as the scale is >= the crop's share of the test size.
    """
    short = max(1, round(preprocess.short_side * view.scale))
    x = resize_short_side(frames, short)
    h, w = x.shape[-2:]
    ch, cw = crop
    if ch > h or cw > w:
        raise ConfigError(
            f"crop {ch}x{cw} does not fit frames resized to {h}x{w}; lower the crop fraction or raise the scale"
        )
    top, left = round(view.top * (h - ch)), round(view.left * (w - cw))
    x = x[..., top : top + ch, left : left + cw]
    if view.flip:
        x = x.flip(-1)
    return normalize(x.contiguous(), preprocess)


def inference_size(height: int, width: int, preprocess: Preprocess) -> tuple[int, int]:
    """The frame size inference sees: the short side resized, no crop (SFC's input)."""
    return output_size(height, width, preprocess.short_side)


def crop_size(height: int, width: int, preprocess: Preprocess, fraction: float) -> tuple[int, int]:
    """The training crop: ``fraction`` of each side of the inference frame size."""
    h, w = inference_size(height, width, preprocess)
    return max(1, round(h * fraction)), max(1, round(w * fraction))
