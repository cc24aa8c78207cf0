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
4. ``repeats`` x ``videos`` timed videos, one at a time, each latency recorded.
"""

from __future__ import annotations

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
from sfc_deploy.errors import ConfigError, SfcError

STRATEGIES = ("sfc", "dense", "matmul")
#: Every worker (both strategies alike) maps allocations over 1 MiB straight from the OS and gives
#: them back on free. glibc's default (a threshold that grows to 32 MiB, per-thread heaps) keeps
#: freed blocks mapped, so peak RSS measured the allocator's history rather than the live memory:
#: the same SFC video read 600 MB in one run and 1.8 GB in another.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


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
    frames: int | None = None  # SFC sampled frames of a synthetic video (default: the export's)
    video_files: list[str] = field(default_factory=list)  # real input: decode included in the timing
    labels: list[int] = field(default_factory=list)  # class of each video file: top-1 over the timed videos
    memory_only: bool = False  # stop after the first (memory) video
    segments: list[int] | None = None  # SFC on video files: [S, F] segments of F sampled frames (paper section 6)
    seed: int = 0

    def check(self) -> None:
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


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them), so loading transients such as a
    parsed ONNX graph do not sit in the base RSS. A no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Inputs:
    """Produces the model input of one video: synthetic tensors made once, or decoded files each time."""

    def __init__(self, job: WorkerJob, deployment) -> None:
        import torch

        self.job, self.dep = job, deployment
        inp = deployment.manifest.input
        self.size = tuple(inp.size)
        self.frames = job.frames or inp.frames
        self.dense = inp.dense
        self.dtype = deployment.dtype
        self._tensor = None
        self._next = 0
        self.label: int | None = None
        if not job.video_files:
            g = torch.Generator().manual_seed(job.seed)
            if job.strategy == "sfc":
                shape = (1, 3, self.frames, *self.size)
            else:  # what the dense sampler hands the model: the 30 crops, already cropped
                shape = (self.dense.clips * self.dense.crops, 3, self.dense.frames, self.dense.crop, self.dense.crop)
            self._tensor = torch.randn(shape, generator=g).to(self.dtype)

    def next(self):
        """The input of the next video (decoding and sampling happen here, inside the timing), fitted
        to the export by the same function every command uses."""
        if self._tensor is not None:
            return self._tensor
        from sfc_deploy.data.inputs import model_input

        i = self._next % len(self.job.video_files)
        path = self.job.video_files[i]
        self.label = self.job.labels[i] if self.job.labels else None
        self._next += 1
        strategy = "dense" if self.job.strategy == "dense" else "sfc"
        if strategy == "sfc" and self.job.segments:  # untrimmed videos: S segments of F sampled frames
            s, f = self.job.segments
            x = model_input(path, "segments", self.dep.config, self.dep.input_spec, segments=s,
                            frames_per_segment=f).tensor
        else:
            x = model_input(path, strategy, self.dep.config, self.dep.input_spec).tensor
        if strategy == "sfc":
            self.frames = int(x.shape[2])  # GMACs follow the decoded length
        return x.to(self.dtype)


def run_job(job: WorkerJob, emit: Callable[[dict], None] = lambda e: None) -> dict:
    """Run one strategy in THIS process (call it in a fresh one: see :func:`run_in_fresh_process`)."""
    job.check()
    if job.strategy == "matmul":
        from sfc_deploy.bench.machine import matmul_peak_gflops

        emit({"event": "phase", "name": "matmul peak"})
        return {"strategy": "matmul", **matmul_peak_gflops(threads=job.threads, precision=job.precision,
                                                           seconds=job.peak_seconds)}

    import torch

    from sfc_deploy.export.formats import format_of_runtime
    from sfc_deploy.runtime.pipeline import load

    torch.set_num_threads(job.threads)
    emit({"event": "phase", "name": "loading"})
    # runtimes with an arena give it back after every run, for both strategies alike
    extra = {"shrink_arena": True} if "shrink_arena" in format_of_runtime(job.runtime).runner_options else {}
    dep = load(job.export_dir, job.runtime, precision=job.precision, threads=job.threads,
               head_chunk=job.head_chunk if job.strategy == "sfc" else None, **extra)
    if job.strategy == "sfc":
        pipe = dep.sfc_pipeline()
        run = lambda x, _b: pipe(x)[0]  # noqa: E731
    else:  # the one dense path (eval and verify run it too), at the batch size being tried
        from sfc_deploy.runtime.pipeline import ClipPipeline

        clip = dep.runner("clip")
        run = lambda x, b: ClipPipeline(clip, batch_size=b)(x)  # noqa: E731
    inputs = _Inputs(job, dep)
    _release_free_heap()
    peak_reset = _reset_peak()
    base_mb = _rss_mb()
    full_batch = inputs.dense.clips * inputs.dense.crops  # the paper's way: all 30 crops in one batch

    correct: list[bool] = []

    def one(batch: int, *, score: bool = False) -> float:
        t0 = time.perf_counter()
        logits = run(inputs.next(), batch)
        elapsed = time.perf_counter() - t0
        if not bool(torch.isfinite(logits).all()):
            raise SfcError(f"{job.runtime} {job.strategy} produced non-finite logits; check the export with sfc-deploy verify")
        if score and inputs.label is not None:
            correct.append(int(logits.argmax(-1)[0]) == inputs.label)
        return elapsed

    emit({"event": "phase", "name": "memory video"})
    first_s = one(full_batch)
    memory_mb = _peak_rss_mb()
    emit({"event": "video", "kind": "warmup", "seconds": first_s})
    result = {
        "strategy": job.strategy,
        "runtime": job.runtime,
        "precision": job.precision,
        "threads": job.threads,
        "input": "video files (decode included)" if job.video_files else "synthetic tensors",
        "frames": inputs.frames if job.strategy == "sfc" else inputs.dense.frames,
        "segments": list(job.segments) if job.segments and job.video_files and job.strategy == "sfc" else None,
        "base_rss_mb": base_mb,
        "peak_rss_mb": memory_mb,
        "video_mem_mb": max(memory_mb - base_mb, 0.0),
        "first_video_s": first_s,
        "head_chunk": job.head_chunk if job.strategy == "sfc" else None,
        "allocator": {k: os.environ.get(k) for k in ALLOCATOR_ENV},
        "ort_arena_shrinkage": bool(extra),
        "peak_reset_after_load": peak_reset,
    }
    if job.memory_only:
        return result
    for _ in range(job.warmup - 1):
        emit({"event": "video", "kind": "warmup", "seconds": one(full_batch)})
    best = full_batch
    trials: dict[int, float] = {}
    if job.strategy == "dense" and len(job.batch_sizes) > 1:
        emit({"event": "phase", "name": "batch search"})
        for b in job.batch_sizes:
            trials[b] = one(b)
            emit({"event": "video", "kind": "batch", "batch": b, "seconds": trials[b]})
        best = min(trials, key=trials.get)
    elif job.strategy == "dense":
        best = job.batch_sizes[0]
    emit({"event": "phase", "name": "timing"})
    inputs._next = 0  # timed videos walk the file list from its start, so each labelled file is scored
    latencies = []
    for _ in range(job.repeats * job.videos):
        latencies.append(one(best, score=True))
        emit({"event": "video", "kind": "timed", "seconds": latencies[-1]})
    dep.close()
    result.update(
        batch_size=best if job.strategy == "dense" else 1,
        batch_trials_s={str(k): v for k, v in trials.items()},
        latencies_s=latencies,
        peak_rss_end_mb=_peak_rss_mb(),
        top1=100.0 * sum(correct) / len(correct) if correct else None,
    )
    return result


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
