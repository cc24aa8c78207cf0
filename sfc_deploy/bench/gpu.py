"""What the bench needs on a CUDA device: event timing, allocator memory, CUDA graphs, capacity.

Everything here is importable without CUDA (torch is imported inside the functions that need it),
and the arithmetic the report prints (:func:`videos_per_budget`, :func:`gpu_memory_record`) is pure,
so the CPU test suite checks it.

* Timing: :class:`PassTimer` brackets one pass with two ``torch.cuda.Event(enable_timing=True)``
  on the current stream and waits for the second, so a latency is the GPU's time from the first
  event to the last kernel of the pass; host work inside the bracket (decoding a real video, launch
  gaps) keeps the stream idle and is therefore counted, as end-to-end latency should be.
* Memory: torch's caching allocator is the one that serves the torch runtimes (pytorch,
  torchscript, aoti), so ``max_memory_allocated`` after ``reset_peak_memory_stats`` (called once
  the model is on the device) is the peak of one video, and ``memory_allocated`` just before the
  reset is the loaded model's own share.
* CUDA graphs: :class:`GraphedPass` captures one fixed-shape pass (warm-up on a side stream, static
  input buffer, replay). Nothing inside may synchronise with the host; the SFC pipeline and the
  dense clip batch do not (shapes are Python ints, TopK is ``torch.sort``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

#: the paper's budgets, in MiB (16 GB: the V100 of the paper; 80 GB: an A100/H100 class GPU)
BUDGETS_MB = {"16gb": 16 * 1024, "80gb": 80 * 1024}
MIB = 2**20


def videos_per_budget(budget_mb: float, model_mb: float, per_video_mb: float) -> int:
    """How many videos' worth of activations fit beside ONE copy of the weights, the paper's way:
    ``floor((budget - model) / per_video)``; 0 where the model alone does not fit."""
    if per_video_mb <= 0:
        raise ValueError(f"per-video memory must be > 0 MB, got {per_video_mb}")
    return max(0, math.floor((budget_mb - model_mb) / per_video_mb))


def gpu_memory_record(*, model_allocated: int, model_reserved: int, peak_allocated: int, peak_reserved: int,
                      total: int | None = None) -> dict:
    """The GPU memory of one strategy from the allocator's byte counts (all reported in MiB).

    ``video_mb`` is the peak over the memory video minus what the loaded model held before it: what
    one more video costs, input tensor and workspaces included, weights counted once.
    """
    model_mb, peak_mb = model_allocated / MIB, peak_allocated / MIB
    video_mb = max(peak_mb - model_mb, 0.0)
    record = {
        "model_allocated_mb": model_mb,
        "model_reserved_mb": model_reserved / MIB,
        "peak_allocated_mb": peak_mb,
        "peak_reserved_mb": peak_reserved / MIB,
        "video_mb": video_mb,
        "device_total_mb": None if total is None else total / MIB,
    }
    for name, budget in BUDGETS_MB.items():
        record[f"videos_per_{name}"] = videos_per_budget(budget, model_mb, max(video_mb, 1e-6))
    return record


class PassTimer:
    """Seconds of one pass: CUDA events on a CUDA device, ``perf_counter`` on the CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self._t0 = 0.0
        self._start = self._end = None
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)  # nothing queued before the pass is counted in it
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3
        return time.perf_counter() - self._t0


def memory_snapshot(device: str) -> tuple[int, int]:
    """(allocated, reserved) bytes of torch's caching allocator on ``device``, after its queue drains."""
    import torch

    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)


def reset_peak(device: str) -> None:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def peak_snapshot(device: str) -> tuple[int, int]:
    """(max allocated, max reserved) bytes since the last :func:`reset_peak`."""
    import torch

    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def total_memory(device: str) -> int:
    import torch

    return torch.cuda.get_device_properties(device).total_memory


class GraphedPass:
    """``fn`` captured in a CUDA graph for inputs shaped like ``example``; call it like ``fn``.

    Warm-up runs (cuDNN autotuning, lazy initialisation, the allocator's first blocks) happen on a
    side stream, as torch's CUDA-graph notes require; the capture then records ``fn`` on a static
    input buffer. A call copies its input into that buffer and replays the graph: the returned
    tensor is the graph's static output, overwritten by the next call (read it before then).
    """

    def __init__(self, fn: Callable, example, *, warmup: int = 3) -> None:
        import torch

        self.static_input = example.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = fn(self.static_input)
        torch.cuda.synchronize()

    def __call__(self, x):
        if x.shape != self.static_input.shape or x.dtype != self.static_input.dtype:
            from sfc_deploy.errors import ConfigError

            raise ConfigError(f"a CUDA graph captured for {tuple(self.static_input.shape)} {self.static_input.dtype} "
                              f"was given {tuple(x.shape)} {x.dtype}; graphs replay fixed shapes only")
        self.static_input.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.static_output

    def release(self) -> None:
        """Free the graph and its memory pool (before capturing the next shape)."""
        self.graph.reset()
        del self.graph, self.static_input, self.static_output
