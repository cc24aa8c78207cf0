"""One video's row of ``sfc-deploy classify``, made the same way by every engine.

The options of a job, the row's columns, and the per-video work: probe and decode with the one
video-to-input function (:func:`~sfc_deploy.data.inputs.model_input`), run the SFC pipeline, keep the
top classes and the most-attended frames. A failure of either step becomes the row's ``error``.
The local engine (:mod:`sfc_deploy.scale.classify`) and the Ray actors
(:mod:`sfc_deploy.scale.ray_engine`) both call :func:`classify_one` / :func:`make_row`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfc_deploy.common.text import one_line
from sfc_deploy.data.inputs import InputSpec, ModelInput, check_segments, sfc_input
from sfc_deploy.data.prefetch import Prefetched
from sfc_deploy.data.video import probe_video
from sfc_deploy.errors import ConfigError, SfcError
from sfc_deploy.models.config import head_step_frames
from sfc_deploy.runtime.pipeline import Deployment

COLUMNS = ("path", "top1", "top1_prob", "topk", "peak_frames", "peak_seconds", "num_frames", "fps", "decode_s",
           "model_s", "error")



@dataclass(frozen=True)
class ClassifyOptions:
    """How to run the job.

    Attributes:
        runtime, precision, threads: the deployment (as for predict).
        workers: decoding threads working ahead of the model.
        prefetch: most decoded (or decoding) videos held at once: the memory bound.
        top: classes per row; peaks: most-attended sampled frames per row.
        max_frames: most sampled frames per video (longer videos become segments); None: all.
        segments: (S, F): S uniformly spaced segments of F consecutive sampled frames per video
            (paper section 6, untrimmed videos) instead of the whole video; None: the whole video.
        jsonl: also write the rows as JSON lines to this file.
        fast_decode: decode reference frames only (``--fast-decode``).
    """

    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    workers: int = 2
    prefetch: int = 4
    top: int = 5
    peaks: int = 3
    max_frames: int | None = None
    jsonl: Path | None = None
    segments: tuple[int, int] | None = None
    fast_decode: bool = False

    def check(self) -> None:
        for name in ("workers", "prefetch", "top", "peaks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        check_frame_options(self.max_frames, self.segments)

    def check_spec(self, spec: InputSpec) -> None:
        """Refuse segments that do not fill a fixed time axis, before any video is decoded."""
        if self.segments is not None:
            check_segments(spec, *self.segments)


@dataclass(frozen=True)
class RayOptions:
    """The Ray engine's cluster and actors (see :mod:`sfc_deploy.scale.ray_engine`).

    Attributes:
        address: an existing Ray cluster ("auto", "ray://host:10001"); None starts a local one.
        workers: actors, each loading the export once.
        cpus_per_worker: CPUs each actor reserves; its runtime gets as many intra-op threads.
        gpus_per_worker: GPUs each actor reserves (0 on a CPU machine).
    """

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def check(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ConfigError(
                f"--cpus-per-worker must be > 0 and --gpus-per-worker >= 0, got {self.cpus_per_worker}, {self.gpus_per_worker}"
            )


def check_frame_options(max_frames: int | None, segments: tuple[int, int] | None) -> None:
    """``--max-frames`` and ``--segments/--segment-frames`` (classify, serve): in range, not both."""
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    if segments is not None:
        if len(segments) != 2 or min(segments) < 1:
            raise ConfigError(f"--segments and --segment-frames must be >= 1, got {tuple(segments)}")
        if max_frames is not None:
            raise ConfigError("--max-frames applies to whole-video input; drop it with --segments/--segment-frames")


def class_names(dep: Deployment) -> tuple[str, ...]:
    n, names = dep.config.num_classes, dep.config.class_names
    return tuple(names) if names and len(names) == n else tuple(str(i) for i in range(n))


def decode(path: str, config, spec: InputSpec, max_frames: int | None,
           segments: tuple[int, int] | None = None, *, reference_only: bool = False) -> tuple[ModelInput, Any, float]:
    t0 = time.perf_counter()
    info = probe_video(path)
    fitted = sfc_input(path, config, spec, info=info, max_frames=max_frames, segments=segments,
                       reference_only=reference_only)
    return fitted, info, time.perf_counter() - t0


def classify_one(path: str, dep: Deployment, names: tuple[str, ...], options: ClassifyOptions,
                 spec: InputSpec | None = None) -> dict[str, Any]:
    """One video's row, decoded and inferred on this thread (what each Ray actor does per video)."""
    future: Future = Future()
    try:
        future.set_result(decode(path, dep.config, spec or dep.input_spec, options.max_frames,
                                 options.segments, reference_only=options.fast_decode))
    except Exception as exc:  # noqa: BLE001 - becomes the row's error
        future.set_exception(exc)
    return make_row(path, future, dep, names, options)


def make_row(path: str, future: Future | Prefetched, dep: Deployment, names: tuple[str, ...], options: ClassifyOptions) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(path=path, topk=[], peak_frames=[], peak_seconds=[], error="")
    try:
        fitted, info, decode_s = future.result()
    except SfcError as exc:
        return {**row, "error": one_line(exc, 500)}
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the job
        return {**row, "error": f"{type(exc).__name__}: {one_line(exc, 500)}"}
    row.update(num_frames=info.num_frames, fps=info.fps, decode_s=decode_s)
    t0 = time.perf_counter()
    try:
        logits, attention = dep.predict_with_attention(fitted.tensor)
    except Exception as exc:  # noqa: BLE001 - e.g. a video too long for memory: its row says so
        return {**row, "error": f"model: {type(exc).__name__}: {one_line(exc, 500)}"}
    row["model_s"] = time.perf_counter() - t0
    row.update(summarize(logits[0], attention[0], fitted.sampled.frame_indices[0], info.fps, names,
                         top=options.top, peaks=options.peaks))
    return row


def summarize(logits, attention, frame_indices: Sequence[int], fps: float, names: Sequence[str], *,
              top: int = 5, peaks: int = 3) -> dict[str, Any]:
    """One video's answer from its logits (classes,) and attention (k, T): the top classes (name,
    index, probability) and the most-attended sampled frames as source frames and seconds."""
    probs = logits.float().softmax(-1)
    best = probs.topk(min(top, probs.numel()))
    topk = [{"class": names[int(i)], "index": int(i), "prob": float(p)} for p, i in zip(best.values, best.indices)]
    mass = attention.float().sum(0)
    positions = mass.topk(min(peaks, mass.numel())).indices.tolist()
    frame_indices = head_step_frames(frame_indices, mass.numel())  # a head with a temporal stride: its steps
    frames = [int(frame_indices[i]) for i in positions]
    return {"top1": topk[0]["class"], "top1_prob": topk[0]["prob"], "topk": topk, "peak_frames": frames,
            "peak_seconds": [f / fps if fps > 0 else None for f in frames]}
