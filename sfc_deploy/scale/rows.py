"""One video's row of ``sfc-deploy classify``, made the same way by every engine.

The options of a job, the row's columns, and the per-video work: probe and decode with the one
video-to-input function (:func:`~sfc_deploy.data.inputs.model_input`), run the SFC pipeline, keep the
top classes and the most-attended frames. A failure of either step becomes the row's ``error``.
The local engine (:mod:`sfc_deploy.scale.classify`) and the Ray actors
(:mod:`sfc_deploy.scale.ray_engine`) both call :func:`make_rows`: ``batch`` decoded videos at a time,
those of one input shape stacked into one model call (:func:`run_batch`, which serve batches with too).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.common.text import one_line
from sfc_deploy.data.inputs import InputSpec, ModelInput, check_segments, sfc_input
from sfc_deploy.data.prefetch import Prefetched
from sfc_deploy.data.video import probe_video
from sfc_deploy.errors import ConfigError, SfcError
from sfc_deploy.export.formats import format_of_runtime
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
        device: where the local engine's model runs ("cpu", "cuda:N"); None: the runtime's own.
            Ray actors run on the GPU they reserve (:func:`gpu_device`), not here.
        batch: decoded videos handed to the model together; those of one input shape (every video,
            where the export fixes the time axis) share one call. Memory: ``prefetch + batch`` videos.
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
    device: str | None = None
    batch: int = 1

    def check(self) -> None:
        for name in ("workers", "prefetch", "top", "peaks", "batch"):
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


def check_engine_device(engine: str, device: str | None) -> None:
    """``--device`` places the local engine's model; a Ray actor runs where Ray places it."""
    if engine == "ray" and device is not None:
        raise ConfigError("--device places the local engine's model; Ray actors run on the GPU they reserve: "
                          "give --gpus-per-worker instead")


def gpu_device(runtime: str, gpus: float) -> str | None:
    """The device of a Ray actor or replica that reserves ``gpus``: "cuda" (Ray makes its GPU the only
    one visible) when it reserves one and ``runtime`` takes a device; None (the runtime's own) otherwise."""
    return "cuda" if gpus > 0 and "device" in format_of_runtime(runtime).runner_options else None


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


def decoded(path: str, dep: Deployment, options: ClassifyOptions, spec: InputSpec | None = None) -> Future:
    """One video decoded on this thread (what each Ray actor does per video), as the future a row takes."""
    future: Future = Future()
    try:
        future.set_result(decode(path, dep.config, spec or dep.input_spec, options.max_frames,
                                 options.segments, reference_only=options.fast_decode))
    except Exception as exc:  # noqa: BLE001 - becomes the row's error
        future.set_exception(exc)
    return future


def classify_one(path: str, dep: Deployment, names: tuple[str, ...], options: ClassifyOptions,
                 spec: InputSpec | None = None) -> dict[str, Any]:
    """One video's row, decoded and inferred on this thread."""
    return make_rows([(path, decoded(path, dep, options, spec))], dep, names, options)[0]


def make_rows(items: Sequence[tuple[str, Future | Prefetched]], dep: Deployment, names: tuple[str, ...],
              options: ClassifyOptions) -> list[dict[str, Any]]:
    """The rows of decoded videos (path, its decoding's future), in order. Videos of one input shape run
    as one model call, whose seconds are shared out among them (``model_s``); a video that did not decode,
    or whose call failed, is a row with the error."""
    rows: list[dict[str, Any]] = []
    ready: list[tuple[int, ModelInput, Any]] = []  # (row, its input, its video info)
    for path, future in items:
        row: dict[str, Any] = {c: None for c in COLUMNS}
        row.update(path=path, topk=[], peak_frames=[], peak_seconds=[], error="")
        rows.append(row)
        try:
            fitted, info, decode_s = future.result()
        except SfcError as exc:
            row["error"] = one_line(exc, 500)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file must not end the job
            row["error"] = f"{type(exc).__name__}: {one_line(exc, 500)}"
            continue
        row.update(num_frames=info.num_frames, fps=info.fps, decode_s=decode_s)
        ready.append((len(rows) - 1, fitted, info))
    results = run_batch(dep, [fitted.tensor for _, fitted, _ in ready])
    for (i, fitted, info), result in zip(ready, results):
        if isinstance(result, BaseException):  # e.g. a video too long for memory: its row says so
            rows[i]["error"] = f"model: {type(result).__name__}: {one_line(result, 500)}"
            continue
        logits, attention, seconds, videos = result
        rows[i]["model_s"] = seconds / videos
        rows[i].update(summarize(logits, attention, fitted.sampled.frame_indices[0], info.fps, names,
                                 top=options.top, peaks=options.peaks))
    return rows


def run_batch(dep: Deployment, tensors: Sequence[torch.Tensor]) -> list[Any]:
    """Each input's (logits, attention, model seconds, videos in its call), or the exception of its call.

    Inputs of one shape are stacked into one call; a call that fails fails only its own inputs.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    results: list[Any] = [None] * len(tensors)
    for members in groups.values():
        t0 = time.perf_counter()
        try:
            x = tensors[members[0]] if len(members) == 1 else torch.cat([tensors[i] for i in members])
            logits, attention = dep.predict_with_attention(x)
        except Exception as exc:  # noqa: BLE001 - becomes the error of these inputs only
            for i in members:
                results[i] = exc
            continue
        seconds = time.perf_counter() - t0
        for row, i in enumerate(members):
            results[i] = (logits[row], attention[row], seconds, len(members))
    return results


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
