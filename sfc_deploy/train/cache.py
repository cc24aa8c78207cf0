"""Head-feature cache: the frozen head's output for a few fixed augmented views of every video.

The head (stem, res2, res3) is frozen and in eval mode, so its output for a given view of a
video never changes during SFC training. Rendering that view and running the head on the whole
video dominates an SFC step on a small backbone; with ``V`` fixed views per video, SFC training
runs the head ``V`` times per video in total instead of once per video per epoch. The price is
less augmentation (``V`` views instead of a fresh one each epoch).

The views are drawn from ``(seed, video index)`` only, so a rebuilt cache (after ``--resume``)
is identical to the first one.

On disk the cache is a folder (:func:`open_or_build_cache`): one safetensors file per video
holding its ``V`` views, and ``cache.json`` naming the key it was built for. Training reads one
view of one video at a time (:class:`FeatureCache`), so memory does not grow with the number of
videos. Under ``torch.distributed`` every rank computes the features of its own share of the
videos (video ``i`` on rank ``i % world``); rank 0 alone writes the metadata, after a barrier. The
key does not hold the world size, so a cache built by two processes serves one, and the reverse.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write, atomic_write_text
from sfc_deploy.data.crops import full_video_indices
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.train.common import Progress, epoch_generator
from sfc_deploy.train.distributed import World
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
def video_features(model: SFCModel, store: FrameStore, i: int, views: list[View], augment: Augment,
                   max_frames: int | None, device: str = "cpu") -> list[torch.Tensor]:
    """Head features of every view of video ``i`` (decoded once), on the CPU."""
    frames = store.all_frames(i)
    return [head_features(model, render_view(store, i, view, model, augment, max_frames, frames).to(device)).cpu()
            for view in views]


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
    """``cache[i][v]``: the head features of view ``v`` of video ``i``, in memory (small lists, tests)."""
    model.eval()
    cache: list[list[torch.Tensor]] = []
    for i in range(len(store)):
        cache.append(video_features(model, store, i, views[i], augment, max_frames))
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


CACHE_META = "cache.json"
_BUILDING = "building.json"


def _video_file(i: int) -> str:
    return f"video_{i:07d}.safetensors"


class FeatureCache:
    """The cached head features in a folder, read one view at a time (memory-mapped, never all at once)."""

    def __init__(self, folder: Path, num_videos: int) -> None:
        self.folder = folder
        self.num_videos = num_videos

    def __len__(self) -> int:
        return self.num_videos

    def view(self, i: int, v: int) -> torch.Tensor:
        """Features (C, T, h, w) of view ``v`` of video ``i``."""
        from safetensors import safe_open

        with safe_open(str(self.folder / _video_file(i)), framework="pt") as fh:
            return fh.get_slice("views")[v : v + 1][0]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _prepare(folder: Path, key: dict, num_videos: int) -> str:
    """Rank 0: ``"loaded"`` when ``folder`` holds a complete cache for ``key``, else ready it for a build.

    A build interrupted for the same key keeps the videos it finished (each file was written
    atomically); a folder built for another key is emptied first.
    """
    meta = _read_json(folder / CACHE_META)
    files_present = all((folder / _video_file(i)).is_file() for i in range(num_videos))
    if meta is not None and meta.get("key") == key and files_present:
        return "loaded"
    building = _read_json(folder / _BUILDING)
    (folder / CACHE_META).unlink(missing_ok=True)
    if building is None or building.get("key") != key:
        if folder.is_dir():
            for stale in folder.glob("video_*.safetensors"):
                stale.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / _BUILDING, json.dumps({"key": key}))
    return "build"


def open_or_build_cache(
    folder: Path,
    key: dict,
    num_videos: int,
    features: Callable[[int], list[torch.Tensor]],
    *,
    world: World = World(),
    progress: Progress | None = None,
) -> tuple[FeatureCache, bool]:
    """The cache in ``folder`` if it was built with exactly ``key``, else build it there (sharded by rank).

    ``features(i)`` computes the views of video ``i``. Several SFC variants trained on the same
    backbone, views and videos (pooling or prior ablations) then pay for the head once. Every rank
    must call this (it has barriers). Returns (cache, loaded).
    """
    from safetensors.torch import save_file

    key = json.loads(json.dumps(key))  # tuples become lists, as they come back from any file
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--cache-file {folder} is a file (an older single-file cache?); the feature cache is "
                          "now a folder: remove the file or pass another path")
    decision = world.broadcast_object(_prepare(folder, key, num_videos) if world.is_main else None)
    if decision == "build":
        mine = range(world.rank, num_videos, world.size)
        for done, i in enumerate(mine, 1):
            path = folder / _video_file(i)
            if not path.is_file():
                views = torch.stack(features(i)).contiguous()
                atomic_write(path, lambda tmp, views=views: save_file({"views": views}, str(tmp)),
                             suffix=".safetensors")
            if progress is not None:
                progress("cache head features", done, len(mine))
        world.barrier()
        if world.is_main:
            atomic_write_text(folder / CACHE_META, json.dumps({"key": key, "videos": num_videos}))
            (folder / _BUILDING).unlink(missing_ok=True)
        world.barrier()
    return FeatureCache(folder, num_videos), decision == "loaded"
