"""``sfc-deploy bench`` as a library: export (or reuse) the model, run each strategy in a fresh worker,
and assemble the report.

Order of work: machine matrix-multiply peak, dense 30-crop baseline, SFC for every tau, then the
optional memory-against-length sweep. Every worker is a fresh process (see
:mod:`sfc_deploy.bench.worker`) so one measurement cannot pollute the next.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sfc_deploy.bench.report import build_report
from sfc_deploy.bench.worker import WorkerJob, run_in_fresh_process
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS, check_prefetch
from sfc_deploy.errors import ConfigError

#: Raw-frame lengths of the memory-against-length sweep recorded in benchmarks/ (x0.5 .. x8 the paper's).
DEFAULT_LENGTHS = (144, 288, 576, 1152, 2304)
Progress = Callable[[str, dict], None]
#: runtimes whose GPU memory torch's caching allocator sees (and so the bench can measure on CUDA)
GPU_MEMORY_RUNTIMES = ("pytorch", "torchscript", "aoti")


@dataclass
class BenchOptions:
    """What ``sfc-deploy bench`` measures. Defaults fit the README's 10-minute budget on 2 CPU cores."""

    export_dir: Path | None = None
    backbone: str = "slow8x8"
    taus: tuple[float, ...] = (2.0,)
    raw_frames: int = 288
    size: tuple[int, int] = (256, 312)
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    videos: int = 2
    warmup: int = 1
    repeats: int = 1
    batch_sizes: tuple[int, ...] = (30, 10)
    head_chunk: int | None = 12
    head_chunk_given: bool = False  # --head-chunk was passed: refused for a head that cannot stream
    stream_sfc_from: int | None = None  # sampled frames from which SFC streams with the head chunks (None: the runtime's)
    video_files: tuple[Path, ...] = ()
    labels: tuple[int, ...] = ()  # class of each video file (from --labels): adds top-1 per strategy
    lengths: tuple[int, ...] = ()
    segments: tuple[int, int] | None = None  # SFC on --video files: S segments of F sampled frames (paper section 6)
    cache_dir: Path | None = None
    peak_seconds: float = 2.0
    verify_export: bool = False  # full-size parity takes minutes; `sfc-deploy verify DIR` runs it on demand
    seed: int = 0
    device: str = "cpu"  # resolved: "cpu" or "cuda:N"
    sfc_batch: tuple[int, ...] = (1,)  # SFC videos stacked per forward pass to try (CUDA: e.g. 1,4,16,32)
    dense_videos: tuple[int, ...] = (1,)  # dense: videos whose 30 crops share one forward, beyond --batch-size
    cuda_graphs: bool = False
    channels_last: bool = False
    inference_rewrite: bool = True  # pytorch runtime: False (--as-trained) serves the model as trained
    trial_passes: int = 3  # timed passes per setting of a batch sweep
    workers: int = DEFAULT_WORKERS  # real files end to end: decoding threads of the prefetcher
    prefetch: int = DEFAULT_DEPTH  # ... and videos decoded ahead of the model
    fast_decode: bool = False  # ... decoding reference frames only (both strategies alike)
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.export_dir is not None and len(self.taus) > 1:
            raise ConfigError(
                f"a tau sweep ({', '.join(f'{t:g}' for t in self.taus)}) needs one export per tau; drop DIR so bench "
                "exports each into its cache, or pass a single --tau"
            )
        bad = [t for t in self.taus if not t >= 1]
        if bad:
            raise ConfigError(f"--tau must be >= 1 (1, 4/3, 2, 4, ...), got {', '.join(f'{t:g}' for t in bad)}")
        for name, value in (("videos", self.videos), ("repeats", self.repeats), ("warmup", self.warmup)):
            if value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if not self.batch_sizes or any(b < 1 or b > 30 for b in self.batch_sizes):
            raise ConfigError(f"--batch-size values must be 1..30 crops, got {list(self.batch_sizes)}; e.g. 30,10,5")
        if self.head_chunk is not None and self.head_chunk < 2:
            raise ConfigError(f"--head-chunk must be >= 2 frames (or 0 to disable), got {self.head_chunk}")
        if self.stream_sfc_from is not None:
            from sfc_deploy.runtime.pipeline import check_stream_sfc_from

            check_stream_sfc_from(self.stream_sfc_from)
            if not self.head_chunk:
                raise ConfigError("--stream-sfc-from streams SFC with the head chunks, and --head-chunk 0 turns them off; drop one")
        for f in self.video_files:
            if not Path(f).is_file():
                raise ConfigError(f"--video {f} does not exist; pass existing video files or leave it out for synthetic input")
        if self.labels and len(self.labels) != len(self.video_files):
            raise ConfigError(f"{len(self.labels)} labels for {len(self.video_files)} videos; give one label per video")
        if self.fast_decode and not self.video_files:
            raise ConfigError("--fast-decode decodes real videos; add --video FILE (or --labels) or drop it")
        if self.segments is not None:
            if not self.video_files:
                raise ConfigError("--segments/--segment-frames sample real videos; add --video FILE (or --labels) or drop them")
            if len(self.segments) != 2 or min(self.segments) < 1:
                raise ConfigError(f"--segments and --segment-frames must be >= 1, got {self.segments}")
        if any(n < 1 for n in self.lengths):
            raise ConfigError(f"--lengths must be positive raw-frame counts, got {list(self.lengths)}")
        check_prefetch(self.workers, self.prefetch)
        if not self.sfc_batch or min(self.sfc_batch) < 1:
            raise ConfigError(f"--sfc-batch values must be >= 1 videos per pass, got {list(self.sfc_batch)}; e.g. 1,4,16,32")
        if not self.dense_videos or min(self.dense_videos) < 1:
            raise ConfigError(f"--dense-videos values must be >= 1 videos per pass, got {list(self.dense_videos)}; e.g. 1,2,4")
        if max(self.sfc_batch + self.dense_videos) > 1 and self.video_files:
            raise ConfigError("--sfc-batch/--dense-videos above 1 stack synthetic videos of one shape; drop --video/--labels "
                              "or leave them at 1")
        cuda = self.device.startswith("cuda")
        if self.cuda_graphs and not cuda:
            raise ConfigError(f"--cuda-graphs captures CUDA graphs, which do not apply on {self.device}; "
                              "use --device cuda (with --runtime pytorch) or drop --cuda-graphs")
        if self.cuda_graphs and self.runtime != "pytorch":
            raise ConfigError(f"--cuda-graphs applies to the pytorch runtime only, not {self.runtime}; "
                              "use --runtime pytorch or drop --cuda-graphs")
        if self.cuda_graphs and self.video_files:
            raise ConfigError("--cuda-graphs replays one fixed input shape; time synthetic videos (drop --video/--labels)")
        if self.channels_last:
            from sfc_deploy.export.formats import FORMATS, format_of_runtime

            if "memory_format" not in format_of_runtime(self.runtime).runner_options:
                able = [f.runtime for f in FORMATS.values() if "memory_format" in f.runner_options]
                raise ConfigError(f"--channels-last needs the runner option memory_format, which runtime {self.runtime} "
                                  f"does not take; " + (f"use --runtime {' or '.join(able)}" if able else
                                                        "no runtime of this build takes it, so drop --channels-last"))
        if not self.inference_rewrite:
            from sfc_deploy.export.formats import format_of_runtime
            from sfc_deploy.models.inference import OPTION

            if OPTION not in format_of_runtime(self.runtime).runner_options:
                raise ConfigError(f"--as-trained turns off the pytorch runtime's inference rewrite; runtime {self.runtime} "
                                  "serves its exported file as it is, so drop --as-trained or use --runtime pytorch")
        if cuda and self.runtime not in GPU_MEMORY_RUNTIMES:
            raise ConfigError(f"bench on {self.device} measures with torch's CUDA allocator, which serves the "
                              f"{', '.join(GPU_MEMORY_RUNTIMES)} runtimes, not {self.runtime}; pick one of those")


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where default exports live: --cache, else $SFC_DEPLOY_CACHE, else ./cache."""
    return Path(cache_dir or os.environ.get("SFC_DEPLOY_CACHE") or "cache")


def _format_for(runtime: str) -> str | None:
    from sfc_deploy.export.formats import RUNTIME_FORMAT, check_runtime

    fmt = RUNTIME_FORMAT[check_runtime(runtime)]
    # PyTorch serves the weights but takes each part's I/O record from an artifact: share the ONNX export
    return "onnx" if fmt == "pytorch" else fmt


def ensure_export(opts: BenchOptions, tau: float, say: Callable[[str], None] = lambda m: None) -> Path:
    """The cached export for ``tau`` at the bench settings: reused when its manifest matches, else built."""
    from sfc_deploy.common.precision import EXPORT_PRECISIONS
    from sfc_deploy.errors import ArtifactError
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.export.manifest import load_manifest
    from sfc_deploy.models import create_model, get_config
    from sfc_deploy.verify import verify

    config = get_config(opts.backbone)
    frames = math.ceil(opts.raw_frames / config.stride)
    fmt = _format_for(opts.runtime)
    h, w = opts.size
    # the pytorch runtime serves the reference weights converted at load; bf16, which no format writes,
    # shares the fp32 export (its files give the pytorch runtime nothing but the weights)
    precision = opts.precision if opts.precision in EXPORT_PRECISIONS else "fp32"
    name = f"{opts.backbone}-tau{tau:.4g}-{opts.raw_frames}f-{h}x{w}-{fmt or 'weights'}-{precision}"
    out = cache_root(opts.cache_dir) / name
    if (out / "manifest.json").is_file():
        try:
            m = load_manifest(out)
            ok = (
                m.backbone.name == opts.backbone
                and abs(m.tau - tau) < 1e-6
                and m.input.frames == frames
                and tuple(m.input.size) == (h, w)
                and (fmt is None or (fmt in m.formats and precision in m.precisions))
                and (m.parity or {"passed": True})["passed"]
                and (not opts.verify_export or m.parity is not None)
            )
            if ok:
                say(f"reusing the export in {out}")
                return out
        except ArtifactError:
            pass
    import torch

    say(f"exporting {opts.backbone} tau={tau:g} ({fmt or 'weights'}, {precision}) to {out}")
    torch.manual_seed(opts.seed)  # every tau of a sweep gets the same backbone weights
    model = create_model(config, tau=tau, split="res3")
    manifest = export_model(
        model,
        out,
        ExportOptions(formats=(fmt,) if fmt else (), precisions=(precision,), frames=frames, size=(h, w),
                      raw_frames=opts.raw_frames),
        force=True,
        progress=say,
    )
    if opts.verify_export:
        say("verifying every artifact against PyTorch")
        manifest.with_parity(verify(manifest, progress=say).to_dict()).save()
    return out


def run_bench(opts: BenchOptions, progress: Progress = lambda kind, data: None) -> dict:
    """Measure dense 30-crop sampling and SFC (for each tau) and return the report dict.

    ``progress(kind, data)`` is called with ``("message", {"text"})`` for phases and with
    ``("event", worker_event)`` for every video a worker finishes, so a CLI can drive a bar.
    """
    from sfc_deploy.bench.machine import default_threads

    opts.check()
    _format_for(opts.runtime)
    threads = opts.threads or default_threads()
    say = lambda text: progress("message", {"text": text})  # noqa: E731
    if opts.export_dir is not None:
        exports = {opts.taus[0]: Path(opts.export_dir)}
    else:
        exports = {tau: ensure_export(opts, tau, say) for tau in opts.taus}
    from sfc_deploy.runtime.pipeline import check_export

    for path in exports.values():  # a damaged or incomplete export fails now, not inside a worker minutes later
        check_export(path, opts.runtime, opts.precision, parts=("head", "sfc", "tail", "clip"))
    first = exports[opts.taus[0]]
    from sfc_deploy.export.manifest import load_manifest

    # Chunked streaming only where it is exact: a head that mixes time steps (R(2+1)D's) runs whole,
    # and an explicit --head-chunk for it is refused.
    manifest = load_manifest(first)
    if opts.head_chunk_given:
        manifest.backbone.check_head_chunk(manifest.split, opts.head_chunk)
    head_chunk = opts.head_chunk if manifest.input.head_streamable else None
    files = [str(f) for f in opts.video_files]
    common = dict(runtime=opts.runtime, precision=opts.precision, threads=threads, seed=opts.seed, video_files=files,
                  labels=list(opts.labels), segments=list(opts.segments) if opts.segments else None,
                  fast_decode=opts.fast_decode,
                  device=opts.device, channels_last=opts.channels_last, cuda_graphs=opts.cuda_graphs,
                  inference_rewrite=opts.inference_rewrite, trial_passes=opts.trial_passes, workers=opts.workers,
                  prefetch=opts.prefetch)

    def work(label: str, job: WorkerJob) -> dict:
        say(label)
        return run_in_fresh_process(job, lambda e: progress("event", {**e, "label": label}))

    matmul = work("matrix-multiply peak", WorkerJob(strategy="matmul", threads=threads, precision=opts.precision,
                                                         peak_seconds=opts.peak_seconds, device=opts.device))
    dense = work(
        "dense 30-crop",
        WorkerJob(strategy="dense", export_dir=str(first), videos=opts.videos, warmup=opts.warmup,
                  repeats=opts.repeats, batch_sizes=list(opts.batch_sizes), dense_videos=list(opts.dense_videos),
                  **common),
    )
    sfc_runs = {
        tau: work(
            f"SFC tau={tau:g}",
            WorkerJob(strategy="sfc", export_dir=str(path), videos=opts.videos, warmup=opts.warmup,
                      repeats=opts.repeats, head_chunk=head_chunk, stream_sfc_from=opts.stream_sfc_from,
                      sfc_batch=list(opts.sfc_batch), **common),
        )
        for tau, path in exports.items()
    }
    lengths = []
    if opts.lengths:
        from sfc_deploy.export.manifest import load_manifest

        stride = load_manifest(first).input.stride
        chunks = [head_chunk, None] if head_chunk else [None]
        for raw in opts.lengths:
            row = {"raw_frames": raw, "frames": math.ceil(raw / stride), "dense_peak_mb": dense["peak_rss_mb"],
                   "dense_video_mem_mb": dense["video_mem_mb"]}
            if "gpu_memory" in dense:
                row["dense_gpu_peak_mb"] = dense["gpu_memory"]["peak_allocated_mb"]
            for chunk in chunks:
                key = "sfc_streamed" if chunk else "sfc_whole"
                r = work(
                    f"memory at {raw} raw frames ({'streamed' if chunk else 'whole head'})",
                    WorkerJob(strategy="sfc", export_dir=str(first), memory_only=True, frames=row["frames"],
                              head_chunk=chunk, stream_sfc_from=opts.stream_sfc_from,
                              **{**common, "video_files": [], "labels": [], "cuda_graphs": False}),
                )
                row[f"{key}_peak_mb"], row[f"{key}_video_mem_mb"] = r["peak_rss_mb"], r["video_mem_mb"]
                if "gpu_memory" in r:  # on CUDA the memory that matters is the GPU's
                    row[f"{key}_gpu_peak_mb"] = r["gpu_memory"]["peak_allocated_mb"]
                    row[f"{key}_gpu_video_mb"] = r["gpu_memory"]["video_mb"]
            lengths.append(row)
    return build_report(
        exports={tau: str(p) for tau, p in exports.items()}, matmul=matmul, dense=dense, sfc_runs=sfc_runs,
        lengths=lengths, options=opts, threads=threads,
    )
