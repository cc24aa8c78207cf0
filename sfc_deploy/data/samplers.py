"""Sampling strategies: which frames and pixels of a video each inference strategy feeds the model.

Every strategy is split in two so that decoding and index arithmetic stay separate:

1. a *plan* (pure index arithmetic, built from :mod:`sfc_deploy.data.crops`) lists the batch rows,
   each as the raw frame indices it reads and the (top, left) of its crop, or no crop;
2. :func:`sample_video` decodes only the union of those frames once (see
   :func:`~sfc_deploy.data.video.read_frames`), preprocesses them once, then gathers and crops the
   rows; :func:`sample_tensor` does the same on a video already in memory (benchmarks skip decoding).

Both return a :class:`SampledVideo`: exactly the (B, 3, T, H, W) float32 batch the runtimes take,
plus the frame indices of every row (tests check them; ``predict --explain`` maps attention back
to time with them).

Strategies (``SAMPLERS``): ``single`` (centre clip, centre crop), ``uniform`` (N clips, centre
crop), ``dense`` (the 10x3 baseline, clip-major), ``sfc`` (the whole
video at the model's stride, no crop, falling back to segments past ``max_frames``) and
``segments`` (always S segments of consecutive sampled frames: the paper's section 6 input).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sfc_deploy.data.crops import clip_frame_indices, clip_starts, full_video_indices, spatial_crop_offsets
from sfc_deploy.data.video import DecodeStats, VideoInfo, output_size, preprocess_frames, probe_video, read_frames
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import BackboneConfig

Crop = tuple[int, int]


@dataclass(frozen=True)
class Row:
    """One row of a batch: raw frame indices and the (top, left) of its square crop (None: no crop)."""

    frames: tuple[int, ...]
    crop: Crop | None


@dataclass(frozen=True)
class SampledVideo:
    """Model input produced by a strategy, with the provenance of every row.

    Attributes:
        tensor: float32 (B, 3, T, H, W), preprocessed for the config it was sampled for.
        frame_indices: raw frame indices (source frame rate, presentation order) of each row.
        crops: (top, left) of each row's crop in the resized frame, or None for uncropped rows.
        strategy: the strategy name.
        num_frames: frames in the source video.
    """

    tensor: torch.Tensor
    frame_indices: tuple[tuple[int, ...], ...]
    crops: tuple[Crop | None, ...]
    strategy: str
    num_frames: int


PlanFn = Callable[..., list[Row]]


@dataclass(frozen=True)
class Sampler:
    """A registered strategy. ``plan(num_frames, height, width, config, **options) -> rows``.

    ``height``/``width`` are the frame size *after* resizing, so crops are placed where the model
    sees them. ``options`` are the keyword-only parameters of ``plan`` with their defaults.
    """

    name: str
    description: str
    plan: PlanFn

    @property
    def options(self) -> dict[str, object]:
        params = inspect.signature(self.plan).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_options(self, opts: dict[str, object]) -> None:
        """Reject options this strategy does not take: a typo must not be silently ignored."""
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ConfigError(
                f"strategy {self.name!r} takes no option {', '.join(unknown)}; accepted options: {accepted}"
            )

    def make_plan(self, num_frames: int, height: int, width: int, config: BackboneConfig, **opts: object) -> list[Row]:
        """The rows for a video of ``num_frames`` frames of ``height`` x ``width`` (after resizing)."""
        self.check_options(opts)
        if num_frames < 1:
            raise VideoError("video has no frames; check that the file decodes (ffprobe FILE)")
        return self.plan(num_frames, height, width, config, **opts)


SAMPLERS: dict[str, Sampler] = {}


def register_sampler(name: str, description: str) -> Callable[[PlanFn], PlanFn]:
    """Register a plan function under ``name`` (decorator)."""

    def wrap(fn: PlanFn) -> PlanFn:
        SAMPLERS[name] = Sampler(name=name, description=description, plan=fn)
        return fn

    return wrap


def get_sampler(name: str) -> Sampler:
    """The sampler registered as ``name``; an unknown name fails with the close matches."""
    if name not in SAMPLERS:
        close = difflib.get_close_matches(name, list(SAMPLERS), n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(f"unknown sampling strategy {name!r}; {hint}available: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _clip_rows(num_frames: int, config: BackboneConfig, num_clips: int, offsets: Sequence[Crop]) -> list[Row]:
    rows = []
    for start in clip_starts(num_frames, config.clip_span, num_clips):
        frames = tuple(clip_frame_indices(num_frames, start, config.frames, config.stride))
        rows.extend(Row(frames, offset) for offset in offsets)
    return rows


@register_sampler("single", "one centre clip, centre crop: (1, 3, frames, crop, crop)")
def plan_single(num_frames: int, height: int, width: int, config: BackboneConfig) -> list[Row]:
    """The cheapest baseline: the middle ``frames x stride`` raw frames, centre crop."""
    return _clip_rows(num_frames, config, 1, spatial_crop_offsets(height, width, config.preprocess.crop, 1))


@register_sampler("uniform", "N clips evenly spaced, centre crop: (N, 3, frames, crop, crop)")
def plan_uniform(num_frames: int, height: int, width: int, config: BackboneConfig, *, num_clips: int = 10) -> list[Row]:
    """Dense sampling's clips without its extra spatial crops (paper Table 7's 'Uniform')."""
    num_clips = _positive("num_clips", num_clips)
    return _clip_rows(num_frames, config, num_clips, spatial_crop_offsets(height, width, config.preprocess.crop, 1))


@register_sampler("dense", "10 clips x 3 crops, clip-major: (30, 3, frames, crop, crop)")
def plan_dense(
    num_frames: int, height: int, width: int, config: BackboneConfig, *, num_clips: int = 10, num_crops: int = 3
) -> list[Row]:
    """The 30-crop baseline: clips in time order, each with its crops along the long side."""
    num_clips, num_crops = _positive("num_clips", num_clips), _positive("num_crops", num_crops)
    offsets = spatial_crop_offsets(height, width, config.preprocess.crop, num_crops)
    return _clip_rows(num_frames, config, num_clips, offsets)


def segment_indices(num_frames: int, stride: int, segments: int, frames_per_segment: int) -> list[int]:
    """Paper section 6: S segments of consecutive sampled frames, uniformly placed, concatenated.

    A segment is a clip of ``frames_per_segment`` frames at ``stride``; segment starts are evenly
    spaced over the video exactly like dense sampling's clip starts (first segment at frame 0, last
    ending at the last frame), and a video too short for a segment repeats its last frame.
    """
    span = frames_per_segment * stride
    return [i for start in clip_starts(num_frames, span, segments)
            for i in clip_frame_indices(num_frames, start, frames_per_segment, stride)]


@register_sampler("sfc", "whole video at the model stride, no crop: (1, 3, T, H, W); segments past max_frames")
def plan_sfc(
    num_frames: int,
    height: int,
    width: int,
    config: BackboneConfig,
    *,
    max_frames: int | None = 1024,
    segments: int = 8,
    min_frames: int | None = None,
) -> list[Row]:
    """SFC's input: every ``stride``-th frame of the whole video, at full resized resolution.

    Args:
        max_frames: most sampled frames the head may take (memory grows linearly with it; the paper
            quotes ~4k frames as the practical limit and uses 256 or 1024 for ActivityNet). A longer
            video becomes ``segments`` segments of ``max_frames // segments`` consecutive sampled
            frames. None: no limit.
        segments: S, the number of segments past ``max_frames`` (the paper uses 8).
        min_frames: pad a very short video by repeating its last sampled frame up to this many
            frames, so the network never sees fewer frames than one clip (default
            ``config.frames``, the same repetition rule as a short video's dense clips; 1 disables).
    """
    segments = _positive("segments", segments)
    min_frames = config.frames if min_frames is None else _positive("min_frames", min_frames)
    idx = full_video_indices(num_frames, config.stride)
    if max_frames is not None:
        max_frames = _positive("max_frames", max_frames, segments)
        if len(idx) > max_frames:
            idx = segment_indices(num_frames, config.stride, segments, max_frames // segments)
    idx += [idx[-1]] * (min_frames - len(idx))
    return [Row(tuple(idx), None)]


@register_sampler("segments", "S segments of L consecutive sampled frames, no crop: (1, 3, S*L, H, W)")
def plan_segments(
    num_frames: int, height: int, width: int, config: BackboneConfig, *, segments: int = 8, frames_per_segment: int = 32
) -> list[Row]:
    """A fixed-size SFC input for untrimmed videos (paper Table 7: 8 x 32 = 256 or 8 x 128 = 1024)."""
    segments = _positive("segments", segments)
    frames_per_segment = _positive("frames_per_segment", frames_per_segment)
    return [Row(tuple(segment_indices(num_frames, config.stride, segments, frames_per_segment)), None)]


def _resolve(config: BackboneConfig | str) -> BackboneConfig:
    if isinstance(config, str):
        from sfc_deploy.models.registry import get_config

        return get_config(config)
    return config


def _assemble(
    frames: torch.Tensor, order: dict[int, int], rows: list[Row], crop: int, strategy: str, n: int
) -> SampledVideo:
    """Gather each row's frames from ``frames`` (3, U, H, W) and crop them into one batch."""
    batch = []
    for row in rows:
        positions = [order[i] for i in row.frames]
        if positions == list(range(frames.shape[1])):
            clip = frames
        else:
            clip = frames.index_select(1, torch.tensor(positions, dtype=torch.long, device=frames.device))
        if row.crop is not None:
            top, left = row.crop
            clip = clip[..., top : top + crop, left : left + crop]
        batch.append(clip)
    tensor = torch.stack(batch).contiguous() if len(batch) > 1 else batch[0].unsqueeze(0).contiguous()
    return SampledVideo(
        tensor=tensor,
        frame_indices=tuple(r.frames for r in rows),
        crops=tuple(r.crop for r in rows),
        strategy=strategy,
        num_frames=n,
    )


def sample_video(
    path: str | Path,
    strategy: str,
    config: BackboneConfig | str,
    *,
    info: VideoInfo | None = None,
    stats: DecodeStats | None = None,
    reference_only: bool = False,
    **opts: object,
) -> SampledVideo:
    """Decode and preprocess a video file the way ``strategy`` feeds the model of ``config``.

    Only the frames some row needs are decoded (once each, even when rows share them), so a
    ``single`` clip of a long video costs a seek and a few dozen frames, not the whole file.

    Args:
        path: the video file.
        strategy: a name in :data:`SAMPLERS`.
        config: the backbone config (or its registry name): frames, stride and preprocessing.
        info: a previous :func:`probe_video` result.
        stats: receives decoding counts.
        reference_only: decode reference frames only, each wanted frame the nearest decoded one
            (``--fast-decode``; see :func:`~sfc_deploy.data.video.read_frames`).
        **opts: the strategy's options (e.g. ``num_clips=5`` for uniform, ``max_frames`` for sfc).

    Raises:
        VideoError: missing, corrupt or too-short file. ConfigError: bad strategy or option.
    """
    sampler = get_sampler(strategy)
    config = _resolve(config)
    info = info or probe_video(path)
    height, width = output_size(info.height, info.width, config.preprocess.short_side)
    rows = sampler.make_plan(info.num_frames, height, width, config, **opts)
    unique = sorted({i for row in rows for i in row.frames})
    frames = preprocess_frames(read_frames(path, unique, info=info, stats=stats, reference_only=reference_only),
                               config.preprocess)
    order = {i: j for j, i in enumerate(unique)}
    return _assemble(frames, order, rows, config.preprocess.crop, strategy, info.num_frames)


def sample_tensor(
    video: torch.Tensor,
    strategy: str,
    config: BackboneConfig | str,
    *,
    preprocessed: bool | None = None,
    **opts: object,
) -> SampledVideo:
    """:func:`sample_video` on a video already in memory at its full frame rate.

    Args:
        video: (3, T, H, W) or (1, 3, T, H, W). Raw RGB (uint8, or float in 0-255 with
            ``preprocessed=False``) is resized and normalised after the needed frames are picked;
            a float tensor is otherwise taken as already resized and normalised and only indexed
            and cropped (how benchmarks feed synthetic input).
        strategy: a name in :data:`SAMPLERS`.
        config: the backbone config or its registry name.
        preprocessed: override the dtype-based guess above.
        **opts: the strategy's options.
    """
    sampler = get_sampler(strategy)
    config = _resolve(config)
    if video.dim() == 5 and video.shape[0] == 1:
        video = video[0]
    if video.dim() != 4 or video.shape[0] != 3:
        raise VideoError(
            f"expected a video tensor of shape (3, T, H, W), got {tuple(video.shape)}; "
            "permute (T, H, W, 3) frames first"
        )
    done = video.is_floating_point() if preprocessed is None else preprocessed
    _, t, h, w = video.shape
    height, width = (h, w) if done else output_size(h, w, config.preprocess.short_side)
    rows = sampler.make_plan(t, height, width, config, **opts)
    unique = sorted({i for row in rows for i in row.frames})
    frames = video if unique == list(range(t)) else video.index_select(1, torch.tensor(unique, device=video.device))
    if not done:
        frames = preprocess_frames(frames, config.preprocess)
    order = {i: j for j, i in enumerate(unique)}
    return _assemble(frames.to(torch.float32), order, rows, config.preprocess.crop, strategy, t)
