"""Training clips decoded on the fly, in DataLoader worker processes, from plans drawn in the main process.

Decoding every frame of every video up front (:class:`~sfc_deploy.train.views.FrameStore` with
``preload``) makes resident memory grow with the dataset: 3.6 GB for 320 small synthetic videos, and
terabytes for a Kinetics-size list. Here a clip is decoded only when a batch needs it, reading only
that clip's frames (:func:`~sfc_deploy.data.video.read_frames` seeks to the nearest keyframe), so
memory is bounded by ``workers x prefetch x batch`` clips whatever the list's length.

Determinism does not depend on the number of workers because the workers draw nothing: the main
process draws every random choice of an epoch (which video, where the clip starts, which crop and
flip) into :class:`ClipPlan` s, as the loop always did, and the workers only render them. The
DataLoader's batch sampler hands out the plans themselves (a map-style dataset may be indexed by
any picklable key), so persistent workers render each epoch's new plans without being restarted.

A clip that fails to decode (a file deleted, truncated or replaced while training runs) is not
raised inside the worker, where the DataLoader would wrap it in a multi-line traceback; the worker
returns a :class:`LoadFailure` naming the file, and the main process raises it as one
:class:`~sfc_deploy.errors.VideoError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from sfc_deploy.common.device import is_cuda
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import Preprocess
from sfc_deploy.train.views import FrameStore, View, render

#: Batches each worker prepares ahead of the training step (DataLoader's ``prefetch_factor``).
PREFETCH = 2


@dataclass(frozen=True)
class ClipPlan:
    """Everything random about one training clip, drawn in the main process.

    Attributes:
        video: index into the :class:`FrameStore`.
        indices: raw frame indices of the clip.
        view: the crop, scale and flip it is rendered with.
    """

    video: int
    indices: tuple[int, ...]
    view: View


@dataclass(frozen=True)
class LoadFailure:
    """A clip that could not be decoded, carried back from a worker as data (see the module doc)."""

    message: str


class ClipDataset(Dataset):
    """Renders a :class:`ClipPlan` into ``(normalised float32 (3, T, h, w), label)``."""

    def __init__(self, store: FrameStore, preprocess: Preprocess, crop: tuple[int, int]) -> None:
        self.store, self.preprocess, self.crop = store, preprocess, crop

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, plan: ClipPlan) -> tuple[torch.Tensor, int] | LoadFailure:  # type: ignore[override]
        try:
            frames = self.store.frames(plan.video, plan.indices)
            return render(frames, plan.view, self.preprocess, self.crop), self.store.label(plan.video)
        except VideoError as exc:
            return LoadFailure(str(exc))
        except Exception as exc:  # noqa: BLE001 - anything a decoder throws becomes the same one-line report
            return LoadFailure(f"{self.store.path(plan.video)}: cannot be decoded ({type(exc).__name__}: {exc})")


def collate(items: Sequence[tuple[torch.Tensor, int] | LoadFailure]) -> tuple[torch.Tensor, torch.Tensor] | LoadFailure:
    """Stack a batch, or pass on its first failure."""
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    clips, labels = zip(*items)  # type: ignore[misc]
    return torch.stack(clips), torch.tensor(labels, dtype=torch.long)


class _Plans:
    """The batch sampler: the current epoch's batches of plans (replaced by :meth:`ClipLoader.epoch`)."""

    def __init__(self) -> None:
        self.batches: list[list[ClipPlan]] = []

    def __iter__(self) -> Iterator[list[ClipPlan]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ClipLoader:
    """Batches of planned clips on ``device``, rendered by ``workers`` processes (0: in this one).

    Batches arrive in plan order whatever ``workers`` is. On CUDA they are staged in pinned memory
    and copied asynchronously, so decoding the next batches overlaps with the GPU's step.
    """

    def __init__(self, store: FrameStore, preprocess: Preprocess, crop: tuple[int, int], *, workers: int = 0,
                 device: str = "cpu", channels_last: bool = False, prefetch: int = PREFETCH) -> None:
        if workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 decodes in the main process), got {workers}")
        if prefetch < 1:
            raise ConfigError(f"prefetch must be >= 1 batch per worker, got {prefetch}")
        self.device, self.channels_last = device, channels_last
        self._plans = _Plans()
        extra = dict(persistent_workers=True, prefetch_factor=prefetch) if workers else {}
        self._loader = DataLoader(ClipDataset(store, preprocess, crop), batch_sampler=self._plans, collate_fn=collate,
                                  num_workers=workers, pin_memory=is_cuda(device), **extra)

    def epoch(self, batches: list[list[ClipPlan]], *, where: str = "") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(clips, labels)`` on the device for each batch of plans, in order.

        Raises:
            VideoError: a clip could not be decoded; the message names the file (and ``where``).
        """
        self._plans.batches = batches
        for batch in self._loader:
            if isinstance(batch, LoadFailure):
                raise VideoError(f"{batch.message}{where}")
            x, y = batch
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            yield x, y.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the workers now rather than when the loader is garbage-collected."""
        iterator = getattr(self._loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader = None  # type: ignore[assignment]

    def __enter__(self) -> ClipLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
