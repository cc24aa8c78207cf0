"""Head-feature cache: the frozen head's output for a few fixed augmented views of every video.

The head (stem, res2, res3) is frozen and in eval mode, so its output for a given view of a
video never changes during SFC training. Rendering that view and running the head on the whole
video dominates an SFC step on a small backbone; with ``V`` fixed views per video, SFC training
runs the head ``V`` times per video in total instead of once per video per epoch. The price is
less augmentation (``V`` views instead of a fresh one each epoch).

The views are drawn from ``(seed, video index)`` only, so a rebuilt cache (after ``--resume``)
is identical to the first one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.data.crops import full_video_indices
from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.train.common import Progress, epoch_generator
from sfc_deploy.train.views import Augment, FrameStore, View, crop_size, render

#: Stream id of the cache's generators, apart from the epoch streams.
_CACHE_STREAM = 7


def video_indices(num_frames: int, stride: int, offset: int, max_frames: int | None) -> list[int]:
    """SFC's frames for a view: every ``stride``-th frame from ``offset``, capped at ``max_frames``."""
    idx = full_video_indices(num_frames, stride, max_frames)
    return [min(i + offset, num_frames - 1) for i in idx]


def cache_views(augment: Augment, seed: int, num_videos: int, views: int, stride: int) -> list[list[View]]:
    """The fixed views of every video: a function of (seed, video index) only."""
    out = []
    for i in range(num_videos):
        g = epoch_generator(seed, i, stream=_CACHE_STREAM)
        out.append([augment.draw(g, stride) for _ in range(views)])
    return out


def render_view(store: FrameStore, i: int, view: View, model: SFCModel, augment: Augment,
                max_frames: int | None, frames: torch.Tensor | None = None) -> torch.Tensor:
    """The normalised (3, T, h, w) input of one view of video ``i`` (``frames``: all its raw frames)."""
    cfg = model.config
    info = store.infos[i]
    idx = video_indices(info.num_frames, cfg.stride, view.offset, max_frames)
    raw = frames.index_select(1, torch.tensor(idx)) if frames is not None else store.frames(i, idx)
    crop = crop_size(info.height, info.width, cfg.preprocess, augment.crop_fraction)
    return render(raw, view, cfg.preprocess, crop)


@torch.no_grad()
def head_features(model: SFCModel, x: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Head output (C, T, h, w) of one rendered view (3, T, h, w).

    The head runs over ``chunk`` frames at a time where it has no temporal receptive field (the
    result is identical), so a long video's activations never all sit in memory at once.
    """
    streamable = model.config.head_temporal_receptive_field(model.split) == 1
    return model.head(x.unsqueeze(0), chunk=chunk if streamable else None)[0]


@torch.no_grad()
def build_cache(
    model: SFCModel,
    store: FrameStore,
    views: list[list[View]],
    augment: Augment,
    *,
    max_frames: int | None = None,
    progress: Progress | None = None,
) -> list[list[torch.Tensor]]:
    """``cache[i][v]``: the head features of view ``v`` of video ``i`` (each video decoded once)."""
    model.eval()
    cache: list[list[torch.Tensor]] = []
    for i in range(len(store)):
        frames = store.all_frames(i)
        cache.append([head_features(model, render_view(store, i, view, model, augment, max_frames, frames))
                      for view in views[i]])
        if progress is not None:
            progress("cache head features", i + 1, len(store))
    return cache


def cache_key(model: SFCModel, videos: list[str], checkpoint: str | None, views: list[list[View]],
              max_frames: int | None) -> dict:
    """Everything the cached features depend on: a cache file is reused only when all of it matches."""
    digest = None
    if checkpoint is not None:
        import hashlib

        digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    return {"backbone": model.config.to_json(), "checkpoint_sha256": digest, "split": model.split,
            "views": [[dataclasses.astuple(v) for v in vs] for vs in views], "max_frames": max_frames,
            "videos": list(videos)}


def load_or_build_cache(path: Path | None, key: dict, build: Callable[[], list[list[torch.Tensor]]],
                        ) -> tuple[list[list[torch.Tensor]], bool]:
    """The cache stored at ``path`` if it was built with exactly ``key``, else a new one (saved there).

    Several SFC variants trained on the same backbone, views and videos (pooling or prior
    ablations, seeds of the same views) then pay for the head once. Returns (cache, loaded).
    """
    key = json.loads(json.dumps(key))  # tuples become lists, as they come back from any file
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
            saved = None
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["features"], True
    cache = build()
    if path is not None:
        atomic_write(path, lambda tmp: torch.save({"key": key, "features": cache}, tmp))
    return cache, False
