"""One strategy, timed and measured in a fresh process of its own.

Peak RSS is a high-water mark for the life of a process, so the only honest way to say how much
memory SFC or dense sampling needs is to give each its own fresh interpreter: nothing the other
strategy allocated (ONNX Runtime arenas, PyTorch caching allocators, pages never returned to the
OS) can be counted against it. :func:`run_in_fresh_process` starts ``python -m
sfc_deploy.bench.worker JOB.json RESULT.json``, relays the worker's progress events (JSON lines
on stdout) to a callback, and returns the result the worker wrote.

Protocol inside the worker, the same for both strategies:

1. open the export on the requested runtime, precision and threads, and activate the runners;
   the RSS now is the *base* (interpreter, libraries, weights: counted once per process);
2. run one video: dense with its 30 crops in ONE batch and SFC on the whole video (the paper's way
   of counting memory); the peak RSS after it, minus the base, is the memory one video needs;
3. more warm-up videos; dense then tries each candidate batch size on one video and keeps the
   fastest (never handicap the baseline);
4. ``repeats`` x ``videos`` timed videos, one at a time, each latency recorded;
5. real files only: the same videos end to end, decoding overlapped with the model by the one
   prefetcher (:class:`~sfc_deploy.data.prefetch.Prefetcher`, ``workers`` threads, ``prefetch``
   ahead), in the steady state of a long list (see :func:`_end_to_end`): ``e2e.videos_per_s``.

Real files are decoded and sampled (the one video-to-input function, dense its 10 clips, SFC its
strided frames) before the model's timer starts: each timed video records ``decode_s`` (decode and
preprocess, serial) apart from its model latency, so the model-only rate and the end-to-end rate
come from the same worker, side by side.

On a CUDA device (``job.device``, torch runtimes) the same protocol runs with: synthetic inputs
made on the device; CUDA-event timing (:class:`sfc_deploy.bench.gpu.PassTimer`); GPU memory from
torch's allocator (model share read once it is loaded, then ``reset_peak_memory_stats``, then the
memory video); a batch sweep for both strategies (SFC: ``sfc_batch`` videos stacked per forward pass;
dense: ``batch_sizes`` crops per forward, plus all crops of ``dense_videos`` videos per forward) whose
fastest setting is then timed, ``repeats`` x ``videos`` passes; optionally each pass captured in a
CUDA graph (``cuda_graphs``, pytorch runtime only). On the CPU, a job with the default
``sfc_batch``/``dense_videos`` of [1] runs exactly as before.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS, Prefetcher, check_prefetch
from sfc_deploy.errors import ConfigError, SfcError

STRATEGIES = ("sfc", "dense", "matmul")
INPUT_FILES = "video files (decode timed apart, then overlapped end to end)"
#: Every worker (both strategies alike) maps allocations over 1 MiB straight from the OS and gives
#: them back on free. glibc's default (a threshold that grows to 32 MiB, per-thread heaps) keeps
#: freed blocks mapped, so peak RSS measured the allocator's history rather than the live memory:
#: the same SFC video read 600 MB in one run and 1.8 GB in another.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
#: ... for the memory video only. That setting maps and zeroes fresh pages for every activation of every
#: pass, which eager PyTorch pays per op output: its SFC ran 1.31x slower under it, its 30-crop 1.05x, ONNX
#: Runtime (its own arena) 0.99x and 1.06x (slow8x8, 2-core CPU: benchmarks/speed/allocator_ab.md, the two
#: settings alternating in one process). After the memory reading every worker sets
#: glibc's thresholds to where its default dynamic ones settle in a process serving the same tensors over
#: and over (mmap from 32 MiB, the default's ceiling; trim beyond 64 MiB), so the timed passes reuse freed
#: memory as a serving process does.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
SERVING_MALLOPT = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}


@dataclass
class WorkerJob:
    """Everything a worker needs; JSON-serialisable so it crosses the process boundary as a file."""

    strategy: str
    export_dir: str = ""
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int = 1
    videos: int = 2
    warmup: int = 1
    repeats: int = 1
    batch_sizes: list[int] = field(default_factory=lambda: [30])
    peak_seconds: float = 2.0  # time budget of each matmul-peak measurement
    head_chunk: int | None = None
    ort_cpu_arena: bool = True  # onnxruntime: False runs every session without its CPU arena
    stream_sfc_from: int | None = None  # with head_chunk: SFC streams too from this many sampled frames (None: the runtime's)
    frames: int | None = None  # SFC sampled frames of a synthetic video (default: the export's)
    video_files: list[str] = field(default_factory=list)  # real input: decode included in the timing
    labels: list[int] = field(default_factory=list)  # class of each video file: top-1 over the timed videos
    memory_only: bool = False  # stop after the first (memory) video
    segments: list[int] | None = None  # SFC on video files: [S, F] segments of F sampled frames (paper section 6)
    fast_decode: bool = False  # video files: reference frames only, the nearest for each wanted frame
    seed: int = 0
    device: str = "cpu"  # "cpu" or "cuda:N", already resolved (sfc_deploy.common.device.resolve_device)
    sfc_batch: list[int] = field(default_factory=lambda: [1])  # SFC videos per forward pass to try
    dense_videos: list[int] = field(default_factory=lambda: [1])  # dense: videos whose crops share one forward
    cuda_graphs: bool = False  # capture each pass in a CUDA graph (pytorch runtime on CUDA)
    channels_last: bool = False  # the torch runners' memory_format="channels_last_3d"
    inference_rewrite: bool = True  # pytorch runtime: False serves the model as trained (sfc_deploy.models.inference)
    trial_passes: int = 3  # timed passes per batch setting of a sweep (after one untimed pass)
    workers: int = DEFAULT_WORKERS  # real files end to end: decoding workers of the prefetcher
    prefetch: int = DEFAULT_DEPTH  # ... and videos decoded ahead of the model
    prefetch_kind: str = "thread"  # ... on threads or processes (sfc_deploy.data.prefetch.KINDS)

    def check(self) -> None:
        if not self.ort_cpu_arena and self.runtime != "onnxruntime":
            raise ConfigError(f"ort_cpu_arena=False is an ONNX Runtime setting; the {self.runtime} runtime has no such arena")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.videos < 1 or self.repeats < 1 or self.warmup < 1 or self.threads < 1:
            raise ConfigError(
                f"videos, repeats, warm-up and threads must be >= 1 (got {self.videos}, {self.repeats}, "
                f"{self.warmup}, {self.threads}); the first warm-up video is the memory measurement"
            )
        if any(b < 1 for b in self.batch_sizes) or not self.batch_sizes:
            raise ConfigError(f"batch sizes must be positive integers, got {self.batch_sizes}; e.g. --batch-size 30,10,5")
        if self.segments is not None and (len(self.segments) != 2 or min(self.segments) < 1):
            raise ConfigError(f"segments must be [S, F] with both >= 1, got {self.segments}")
        if not self.sfc_batch or not self.dense_videos or min(self.sfc_batch + self.dense_videos) < 1:
            raise ConfigError(f"videos per pass must be positive integers, got SFC {self.sfc_batch} and dense "
                              f"{self.dense_videos}; e.g. --sfc-batch 1,4,16 --dense-videos 1,2")
        if self.video_files and max(self.sfc_batch + self.dense_videos) > 1:
            raise ConfigError("several videos per pass stack synthetic videos of one shape; drop --video/--labels "
                              "or use --sfc-batch 1 --dense-videos 1")
        if self.cuda_graphs and not (self.device.startswith("cuda") and self.runtime == "pytorch"):
            raise ConfigError(f"--cuda-graphs applies to the pytorch runtime on a CUDA device only, not {self.runtime} "
                              f"on {self.device}; drop --cuda-graphs or use --runtime pytorch --device cuda")
        if self.trial_passes < 1:
            raise ConfigError(f"trial passes must be >= 1, got {self.trial_passes}")
        check_prefetch(self.workers, self.prefetch, self.prefetch_kind)

    @property
    def sweeps(self) -> bool:
        """Whether this job sweeps videos per pass (always on CUDA; on the CPU only when asked)."""
        return self.device.startswith("cuda") or max(self.sfc_batch + self.dense_videos) > 1


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """Peak RSS of this process since start, or since :func:`_reset_peak` where Linux allows it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux: write 5 to /proc/self/clear_refs) once the model is loaded.

    Loading is not serving: parsing and optimising graphs can transiently use more memory than a
    video does (we saw a 2.6 GB load peak hide a 0.6 GB SFC video), so the peak is taken over
    the video alone, on top of the loaded model's RSS. Returns False where it cannot be reset.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def glibc():
    """The C library's handle where it is glibc (``mallopt``, ``malloc_trim``), else None."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def _serving_allocator() -> dict | None:
    """Set glibc's thresholds to :data:`SERVING_MALLOPT` (after the memory video); what was set, or
    None where there is no glibc."""
    libc = glibc()
    if libc is None or not all(libc.mallopt(param, value) == 1 for param, value in SERVING_MALLOPT.items()):
        return None
    return {"mmap_threshold": SERVING_MALLOPT[M_MMAP_THRESHOLD], "trim_threshold": SERVING_MALLOPT[M_TRIM_THRESHOLD]}


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them), so loading transients such as a
    parsed ONNX graph do not sit in the base RSS. A no-op where there is no glibc."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


class _Inputs:
    """Produces the model input of one pass: synthetic tensors made once per shape, or decoded files
    each time (files: one video per pass).

    Synthetic tensors of the CPU are made at once (as they always were, so they sit in the base RSS);
    on a CUDA device they are generated on the device when first asked for, after the peak-memory
    reset, so the input of the memory video is counted in what one video costs there.
    """

    def __init__(self, job: WorkerJob, deployment) -> None:
        self.job, self.dep = job, deployment
        inp = deployment.manifest.input
        self.size = tuple(inp.size)
        self.frames = job.frames or inp.frames
        self.dense = inp.dense
        self.per_video = self.dense.clips * self.dense.crops  # dense crops of one video
        self.dtype = deployment.dtype
        self.device = job.device
        self._tensor = None
        self._videos = 0
        self._next = 0
        self.label: int | None = None
        self.decode_s = 0.0  # decode + preprocess of the last file, serial
        if not job.video_files and self.device == "cpu":
            self.next(1)

    def _synthetic(self, videos: int):
        import torch

        if self.job.strategy == "sfc":
            shape = (videos, 3, self.frames, *self.size)
        else:  # what the dense sampler hands the model: the 30 crops of each video, already cropped
            shape = (videos * self.per_video, 3, self.dense.frames, self.dense.crop, self.dense.crop)
        if self.device == "cpu":
            g = torch.Generator().manual_seed(self.job.seed)
            return torch.randn(shape, generator=g).to(self.dtype)
        g = torch.Generator(device=self.device).manual_seed(self.job.seed)
        return torch.randn(shape, generator=g, device=self.device, dtype=self.dtype)

    def drop(self) -> None:
        """Free the synthetic tensor (before a memory reading that must not count it)."""
        self._tensor, self._videos = None, 0

    def next(self, videos: int = 1):
        """The input of the next pass of ``videos`` videos (a file is decoded and sampled here, its
        seconds kept in ``decode_s``), fitted to the export by the same function every command uses."""
        if not self.job.video_files:
            if self._videos != videos:
                self._tensor = None  # the previous shape is freed before the next is made
                self._tensor, self._videos = self._synthetic(videos), videos
            return self._tensor
        i = self._next % len(self.job.video_files)
        self.label = self.job.labels[i] if self.job.labels else None
        self._next += 1
        t0 = time.perf_counter()
        x = self.to_model(self.decoder()(self.job.video_files[i]))
        self.decode_s = time.perf_counter() - t0
        return x

    def decoder(self) -> Callable[[str], object]:
        """path -> this strategy's input tensor (picklable, so a process pool can run it too)."""
        strategy = "dense" if self.job.strategy == "dense" else "sfc"
        return functools.partial(file_input, strategy=strategy, config=self.dep.config, spec=self.dep.input_spec,
                                 segments=tuple(self.job.segments) if self.job.segments else None,
                                 reference_only=self.job.fast_decode)

    def to_model(self, x):
        """A decoded file's tensor in the model's dtype, on its device (one host-to-device copy)."""
        if self.job.strategy == "sfc":
            self.frames = int(x.shape[2])  # GMACs follow the decoded length
        if self.device != "cpu":
            return x.to(self.device, self.dtype)
        return x.to(self.dtype)


def file_input(path: str, *, strategy: str, config, spec, segments: tuple[int, int] | None = None,
               reference_only: bool = False):
    """One file's input for ``strategy`` (dense: its 10x3 crops; sfc: the strided whole video, or S x F
    segments), by the one video-to-input function: each strategy decodes only the frames it needs.
    ``reference_only``: ``--fast-decode`` (both strategies alike)."""
    from sfc_deploy.data.inputs import model_input, sfc_input

    if strategy == "sfc":
        return sfc_input(path, config, spec, segments=segments, reference_only=reference_only).tensor
    return model_input(path, strategy, config, spec, reference_only=reference_only).tensor


def _settings(job: WorkerJob, per_video: int) -> list[tuple[int, int]]:
    """The (crops per forward, videos per pass) settings a sweep tries. SFC: one forward per pass of
    ``sfc_batch`` stacked videos (crops unused: 1); dense: ``batch_sizes`` crops of one video per
    forward, then all the crops of ``dense_videos`` videos in one forward."""
    if job.strategy == "sfc":
        return [(1, v) for v in dict.fromkeys(job.sfc_batch)]
    one_video = [(b, 1) for b in dict.fromkeys(job.batch_sizes)]
    return one_video + [(per_video * v, v) for v in dict.fromkeys(job.dense_videos) if v > 1]


def run_job(job: WorkerJob, emit: Callable[[dict], None] = lambda e: None) -> dict:
    """Run one strategy in THIS process (call it in a fresh one: see :func:`run_in_fresh_process`)."""
    job.check()
    if job.strategy == "matmul":
        from sfc_deploy.bench.machine import matmul_peak_gflops

        emit({"event": "phase", "name": "matmul peak"})
        result = {"strategy": "matmul", **matmul_peak_gflops(threads=job.threads, precision=job.precision,
                                                             seconds=job.peak_seconds, device=job.device),
                  "device": job.device}
        if job.device.startswith("cuda"):  # read here, so the parent process never opens a CUDA context
            from sfc_deploy.common.environment import gpu_info

            result["gpu_info"] = gpu_info(job.device)
        return result

    import torch

    from sfc_deploy.bench import gpu
    from sfc_deploy.export.formats import format_of_runtime
    from sfc_deploy.runtime.pipeline import ClipPipeline, load

    cuda = job.device.startswith("cuda")
    if job.cuda_graphs and job.video_files:
        raise ConfigError("--cuda-graphs replays one fixed input shape; time synthetic videos (drop --video/--labels)")
    torch.set_num_threads(job.threads)
    if cuda:
        torch.cuda.set_device(torch.device(job.device))
        torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN's fastest 3D convolutions, for both strategies
    emit({"event": "phase", "name": "loading"})
    # runtimes with an arena give it back after every run, for both strategies alike
    extra = {"shrink_arena": True} if "shrink_arena" in format_of_runtime(job.runtime).runner_options else {}
    options = dict(extra)
    if cuda:
        options["device"] = job.device
    if job.channels_last:
        options["memory_format"] = "channels_last_3d"
    if not job.inference_rewrite:
        options["inference_rewrite"] = False
    if not job.ort_cpu_arena:
        options["cpu_arena"] = False
    if job.stream_sfc_from is not None and job.strategy == "sfc":
        options["stream_sfc_from"] = job.stream_sfc_from
    dep = load(job.export_dir, job.runtime, precision=job.precision, threads=job.threads,
               head_chunk=job.head_chunk if job.strategy == "sfc" else None, **options)
    if job.strategy == "sfc":
        pipe = dep.sfc_pipeline()
        eager = lambda x, _b, _v: pipe(x)[0]  # noqa: E731
    else:  # the one dense path (eval and verify run it too), at the batch size being tried
        clip = dep.runner("clip")
        eager = lambda x, b, v: ClipPipeline(clip, batch_size=b)(x, v)  # noqa: E731

    graphs: dict[tuple[int, int], gpu.GraphedPass] = {}

    def release_graphs() -> None:
        for g in graphs.values():
            g.release()
        graphs.clear()

    def pass_fn(b: int, v: int) -> Callable:
        """The pass at (crops per forward, videos per pass): eager, or its CUDA graph (captured on first use)."""
        if not job.cuda_graphs:
            return lambda x: eager(x, b, v)
        if (b, v) not in graphs:
            release_graphs()  # one graph (and its memory pool) alive at a time
            graphs[(b, v)] = gpu.GraphedPass(lambda x: eager(x, b, v), inputs.next(v))
        return graphs[(b, v)]

    inputs = _Inputs(job, dep)
    timer = gpu.PassTimer(job.device)
    _release_free_heap()
    peak_reset = _reset_peak()
    base_mb = _rss_mb()
    if cuda:
        model_alloc, model_reserved = gpu.memory_snapshot(job.device)  # the loaded model's own share
        gpu.reset_peak(job.device)
    full_batch = inputs.per_video  # the paper's way: all 30 crops in one batch

    correct: list[bool] = []

    def timed(fn: Callable, x) -> tuple[float, "torch.Tensor"]:
        timer.start()
        logits = fn(x)
        elapsed = timer.stop()
        if not bool(torch.isfinite(logits).all()):
            raise SfcError(f"{job.runtime} {job.strategy} produced non-finite logits; check the export with sfc-deploy verify")
        return elapsed, logits

    def one(batch: int, videos: int = 1, *, score: bool = False) -> float:
        # a file is decoded and sampled before the model's timer starts (its seconds: inputs.decode_s)
        elapsed, logits = timed(pass_fn(batch, videos), inputs.next(videos))
        if score and inputs.label is not None:
            correct.append(int(logits.argmax(-1)[0]) == inputs.label)
        return elapsed

    emit({"event": "phase", "name": "memory video"})
    first_s = one(full_batch)
    memory_mb = _peak_rss_mb()
    timing_allocator = _serving_allocator()  # the memory is read: from here on, the heap of a serving process
    emit({"event": "video", "kind": "warmup", "seconds": first_s})
    result = {
        "strategy": job.strategy,
        "runtime": job.runtime,
        "precision": job.precision,
        "threads": job.threads,
        "input": INPUT_FILES if job.video_files else "synthetic tensors",
        "frames": inputs.frames if job.strategy == "sfc" else inputs.dense.frames,
        "segments": list(job.segments) if job.segments and job.video_files and job.strategy == "sfc" else None,
        "fast_decode": job.fast_decode,
        "base_rss_mb": base_mb,
        "peak_rss_mb": memory_mb,
        "video_mem_mb": max(memory_mb - base_mb, 0.0),
        "first_video_s": first_s,
        "head_chunk": job.head_chunk if job.strategy == "sfc" else None,
        # with head_chunk, SFC itself streams on videos of at least this many sampled frames
        "stream_sfc_from": dep.stream_sfc_from if job.strategy == "sfc" and job.head_chunk else None,
        "allocator": {k: os.environ.get(k) for k in ALLOCATOR_ENV},  # for the memory video
        "timing_allocator": timing_allocator,  # glibc thresholds of the passes after it (None: not glibc)
        "ort_arena_shrinkage": bool(extra) and job.ort_cpu_arena,
        "ort_cpu_arena": job.ort_cpu_arena if job.runtime == "onnxruntime" else None,
        "peak_reset_after_load": peak_reset,
        "device": job.device,
    }
    if cuda:
        peak_alloc, peak_reserved = gpu.peak_snapshot(job.device)
        result.update(
            gpu_memory=gpu.gpu_memory_record(model_allocated=model_alloc, model_reserved=model_reserved,
                                             peak_allocated=peak_alloc, peak_reserved=peak_reserved,
                                             total=gpu.total_memory(job.device)),
            timer="cuda events", cudnn_benchmark=True, cuda_graphs=job.cuda_graphs,
        )
        if job.strategy == "sfc" and job.runtime == "pytorch":  # the other runtimes' files hold aten TopK ops
            from sfc_deploy.ops import cuda_implementation_record

            result["topk_cuda"] = cuda_implementation_record(dep.dtype)  # bf16: aten, the kernel takes fp32/fp16
    if job.channels_last:
        result["memory_format"] = "channels_last_3d"
    if job.memory_only:
        release_graphs()
        return result
    for _ in range(job.warmup - 1):
        emit({"event": "video", "kind": "warmup", "seconds": one(full_batch)})
    best, best_videos = full_batch, 1
    trials: dict[int, float] = {}
    sweep: list[dict] = []
    if job.sweeps:  # every setting: one untimed pass (autotuning, capture), then trial_passes timed ones
        emit({"event": "phase", "name": "batch sweep"})
        for b, v in _settings(job, inputs.per_video):
            release_graphs()
            inputs.drop()
            if cuda:
                gpu.reset_peak(job.device)
            one(b, v)
            passes = []
            for _ in range(job.trial_passes):
                passes.append(one(b, v))
                emit({"event": "video", "kind": "batch", "batch": b, "videos": v, "seconds": passes[-1]})
            row = {"videos_per_pass": v, "crops_per_forward": b if job.strategy == "dense" else None,
                   "pass_s": passes, "videos_per_s": v * len(passes) / sum(passes)}
            if cuda:
                row["peak_allocated_mb"], row["peak_reserved_mb"] = (x / gpu.MIB for x in gpu.peak_snapshot(job.device))
            sweep.append(row)
        top = max(sweep, key=lambda r: r["videos_per_s"])
        best, best_videos = (top["crops_per_forward"] or 1), top["videos_per_pass"]
    elif job.strategy == "dense" and len(job.batch_sizes) > 1:
        emit({"event": "phase", "name": "batch search"})
        for b in job.batch_sizes:
            trials[b] = one(b)
            emit({"event": "video", "kind": "batch", "batch": b, "seconds": trials[b]})
        best = min(trials, key=trials.get)
    elif job.strategy == "dense":
        best = job.batch_sizes[0]
    emit({"event": "phase", "name": "timing"})
    inputs._next = 0  # timed videos walk the file list from its start, so each labelled file is scored
    latencies, decode_s = [], []
    for _ in range(job.repeats * job.videos):
        latencies.append(one(best, best_videos, score=True))
        decode_s.append(inputs.decode_s)
        emit({"event": "video", "kind": "timed", "seconds": latencies[-1]})
    if job.video_files:
        emit({"event": "phase", "name": "end to end"})
        result["decode_s"] = decode_s
        result["e2e"] = _end_to_end(job, inputs, lambda x: timed(pass_fn(best, best_videos), x)[0], emit)
    if job.cuda_graphs:  # the graph must compute what eager PyTorch computes on the same input
        x = inputs.next(best_videos)
        from sfc_deploy.verify.tolerances import compare

        graphed = pass_fn(best, best_videos)(x).float().clone()
        parity = compare(graphed, eager(x, best, best_videos), job.precision)
        result.update(cuda_graph_max_abs_diff=parity["max_abs"], cuda_graph_parity=parity)
    release_graphs()
    dep.close()
    result.update(
        batch_size=best if job.strategy == "dense" else best_videos,
        batch_trials_s={str(k): v for k, v in trials.items()},
        latencies_s=latencies,
        peak_rss_end_mb=_peak_rss_mb(),
        top1=100.0 * sum(correct) / len(correct) if correct else None,
    )
    if job.sweeps:
        result.update(videos_per_pass=best_videos, batch_sweep=sweep)
    return result


def _end_to_end(job: WorkerJob, inputs: _Inputs, run: Callable[[object], float], emit: Callable[[dict], None]) -> dict:
    """The timed files again, decoded ahead by the prefetcher while the model serves the current one.

    Steady state, as in a long collection: one untimed lead video fills the queue (the clock starts
    when its model pass ends), and ``prefetch`` more videos follow the timed ones in the list (decoded,
    never run), so every timed model pass overlaps the decoding of the video ``prefetch`` places on,
    exactly as it would in the middle of a long list; with few videos and no such tail, everything
    would be decoded during the lead pass and the timed passes would look free of decoding.
    ``wait_s``: how long the model waited for each video (decode time not hidden); ``cycle_s``: wall
    seconds from the previous video's end to this one's (they add up to ``wall_s``).
    """
    files, n = job.video_files, job.repeats * job.videos
    order = [files[i % len(files)] for i in range(-1, n + job.prefetch)]
    waits, decodes, models, cycles = [], [], [], []
    with Prefetcher(inputs.decoder(), order, depth=job.prefetch, workers=job.workers, kind=job.prefetch_kind,
                    name="sfc-bench-decode") as stream:
        asked = time.perf_counter()
        for i, got in enumerate(stream):
            waited = time.perf_counter() - asked
            seconds = run(inputs.to_model(got.result()))  # a file that does not decode ends the bench, naming it
            done = time.perf_counter()
            if i > 0:
                waits.append(waited)
                decodes.append(got.seconds)
                models.append(seconds)
                cycles.append(done - last)
                emit({"event": "video", "kind": "e2e", "seconds": seconds})
            if i == n:
                break  # the tail was only there to be decoded
            last = asked = done
    wall = sum(cycles)
    return {"videos": n, "wall_s": wall, "videos_per_s": n / wall, "wait_s": waits, "decode_s": decodes,
            "model_s": models, "cycle_s": cycles, "workers": job.workers, "prefetch": job.prefetch,
            "kind": job.prefetch_kind}


# ---------------------------------------------------------------------------------------------
# the parent side


def run_in_fresh_process(job: WorkerJob, on_event: Callable[[dict], None] = lambda e: None,
                         *, timeout: float | None = None) -> dict:
    """Run ``job`` in a new Python interpreter and return its result dict.

    Raises:
        SfcError: the worker's own typed error, re-raised with its one-line message.
        RuntimeError: the worker crashed (killed for memory, segfault): its last stderr lines.
    """
    job.check()
    with tempfile.TemporaryDirectory(prefix="sfc-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(asdict(job)))
        env = {**ALLOCATOR_ENV, **os.environ, "OMP_NUM_THREADS": str(job.threads), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "sfc_deploy.bench.worker", str(job_path), str(out_path)]
        err_path = Path(tmp) / "stderr.txt"
        with open(err_path, "w") as err:  # a file, not a pipe: a chatty stderr cannot block the worker
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            for line in proc.stdout or ():
                line = line.strip()
                if line.startswith("{"):
                    on_event(json.loads(line))
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        stderr = err_path.read_text(errors="replace")
        if out_path.is_file():
            result = json.loads(out_path.read_text())
            if "error" in result:
                raise _ERRORS.get(result["error_type"], SfcError)(result["error"])
            return result
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"bench worker for {job.strategy} exited with code {proc.returncode} and no result: {tail}")


def _error_types() -> dict[str, type[SfcError]]:
    import sfc_deploy.errors as errors

    return {name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, SfcError)}


_ERRORS = _error_types()


def main(argv: list[str] | None = None) -> int:
    """``python -m sfc_deploy.bench.worker JOB.json RESULT.json``."""
    job_path, out_path = (argv or sys.argv[1:])[:2]
    job = WorkerJob(**json.loads(Path(job_path).read_text()))

    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)

    try:
        result = run_job(job, emit)
    except SfcError as exc:
        result = {"error": str(exc), "error_type": type(exc).__name__}
    result["pid"] = os.getpid()  # lets the caller (and the tests) see it really was a fresh process
    atomic_write_text(out_path, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
