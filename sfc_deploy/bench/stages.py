"""Where one pass of a PyTorch deployment spends its time, stage by stage.

``bench`` measures whole videos. To see why a strategy runs at some share of the machine's matmul
peak, this module times and profiles the stages separately: SFC's head (on one chunk, as ``bench``
streams it), SFC itself and the tail, and the dense baseline's clip model, each with an input of the
served dtype on the served device. Per stage it gives the MACs (counted on the model as trained,
which computes the same), the seconds of a pass (CUDA events after warm-up on a GPU, ``perf_counter``
on the CPU), what that makes per video, and one profiled pass: the top CPU ops, on a GPU the top
kernels, and the share of time in convolutions, in layout copies (``copy_``/transposes, cuDNN's
NCHW<->NHWC conversions) and in the rest.

Used by ``benchmarks/gpu/profile_stages.py`` (a step of the prepared GPU check) and
``benchmarks/eager_cpu/run.py``. Nothing here asserts a speed.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from sfc_deploy.bench.flops import count_macs, on_meta
from sfc_deploy.bench.gpu import PassTimer
from sfc_deploy.common.device import synchronize
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.parts import part_modules

#: kernel or op names by what they do, for the shares of a profiled pass (the first match wins)
CATEGORIES = (
    ("layout copies", re.compile(r"copy|nchwToNhwc|nhwcToNchw|transpose|contiguous|clone|reorder", re.I)),
    ("convolution", re.compile(r"conv|xmma|implicit_gemm|fprop|cutlass|gemm|sm\d\d_|cudnn|winograd", re.I)),
)
#: the names of a CPU profile's convolution ops (their shares are by input shape)
CPU_CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::slow_conv3d_forward", "aten::_slow_conv2d_forward",
                    "aten::convolution_overrideable", "aten::slow_conv_dilated3d", "aten::cudnn_convolution")


@dataclass
class Stage:
    """One stage of a strategy: ``fn(example)`` is one pass, ``passes_per_video`` of them make a video."""

    name: str
    fn: Callable[[torch.Tensor], object]
    example: torch.Tensor
    passes_per_video: float
    module: torch.nn.Module | None = None  # the same stage on the model as trained (MAC counting)


def served_stages(dep, *, frames: int, size: tuple[int, int], chunk: int, crops: int, videos: int = 1,
                  seed: int = 0) -> dict[str, Stage]:
    """The four stages of a PyTorch deployment ``dep`` with example inputs of its dtype and device.

    ``videos`` SFC videos of ``frames`` sampled frames at ``size`` per pass (the head on ``chunk`` of
    them, as ``bench --sfc-batch`` streams it), and ``crops`` dense crops per clip-model pass.
    """
    if dep.runtime != "pytorch":
        raise ConfigError(f"stages are profiled on the pytorch runtime, not {dep.runtime}; load the export with "
                          "runtime='pytorch'")
    chunk = min(chunk, frames)
    device = dep.device or "cpu"
    runners = {p: dep.runner(p).module for p in ("head", "sfc", "tail", "clip")}
    trained = part_modules(dep.model)
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(videos, 3, frames, *size, generator=g).to(device=device, dtype=dep.dtype)
    crop = dep.config.preprocess.crop
    clips = torch.randn(crops, 3, dep.config.frames, crop, crop, generator=g).to(device=device, dtype=dep.dtype)
    with torch.inference_mode():
        f_head = runners["head"](video)
        f_sfc = runners["sfc"](f_head)[0]
    per_video_crops = 30  # the dense baseline: 10 clips x 3 crops
    return {
        "head": Stage("head", runners["head"], video[:, :, :chunk].contiguous(), frames / chunk / videos, trained["head"]),
        "sfc": Stage("sfc", runners["sfc"], f_head, 1 / videos, trained["sfc"]),
        "tail": Stage("tail", runners["tail"], f_sfc, 1 / videos, trained["tail"]),
        "clip": Stage("clip", runners["clip"], clips, per_video_crops / crops, trained["clip"]),
    }


def stage_macs(stage: Stage) -> int:
    """MACs of one pass, counted on the stage as trained, on the meta device (nothing runs)."""
    with torch.no_grad():
        return count_macs(on_meta(stage.module), torch.empty(stage.example.shape, device="meta"))


def time_stage(stage: Stage, device: str, *, warmup: int = 2, repeats: int = 5) -> list[float]:
    """Seconds of ``repeats`` passes after ``warmup`` untimed ones (autotuning, first allocations)."""
    timer = PassTimer(device)
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            timer.start()
            stage.fn(stage.example)
            elapsed = timer.stop()
            if i >= warmup:
                seconds.append(elapsed)
    return seconds


def _category(name: str) -> str:
    return next((label for label, pattern in CATEGORIES if pattern.search(name)), "other")


def profile_stage(stage: Stage, device: str, *, top: int = 8) -> dict:
    """One profiled pass (after :func:`time_stage` warmed it up): the top CPU ops by self time (by
    input shape for convolutions), on CUDA the top kernels by device time, and the category shares
    of the device's time (of the CPU ops' self time on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), profile(activities=activities, record_shapes=True) as prof:
        stage.fn(stage.example)
        synchronize(device)
    events = prof.key_averages()
    cpu_total = sum(e.self_cpu_time_total for e in events) or 1.0

    def row(e, us: float, total: float) -> dict:
        return {"name": e.key, "self_ms": us / 1e3, "share": us / total, "calls": e.count}

    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    convolutions = sorted((e for e in prof.key_averages(group_by_input_shape=True) if e.key in CPU_CONVOLUTIONS),
                          key=lambda e: e.self_cpu_time_total, reverse=True)
    result = {
        "input": list(stage.example.shape),
        "top_ops": [row(e, e.self_cpu_time_total, cpu_total) for e in ops[:top]],
        "top_convolutions": [{**row(e, e.self_cpu_time_total, cpu_total), "input_shapes": str(e.input_shapes[:2])}
                             for e in convolutions[:top]],
    }
    if cuda:
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
        timed = [(e, e.self_device_time_total) for e in kernels]
        result["top_kernels"] = [row(e, us, sum(t for _, t in timed) or 1.0)
                                 for e, us in sorted(timed, key=lambda p: -p[1])[:top]]
    else:
        timed = [(e, e.self_cpu_time_total) for e in events]
    total = sum(t for _, t in timed) or 1.0
    shares: dict[str, float] = {"convolution": 0.0, "layout copies": 0.0, "other": 0.0}
    for e, us in timed:
        shares[_category(e.key)] += us / total
    result["shares"] = shares
    result["profiled_ms"] = total / 1e3
    return result


def measure_stages(stages: dict[str, Stage], device: str, *, peak_gflops: float | None = None, warmup: int = 2,
                   repeats: int = 5, profile: bool = True, top: int = 8) -> dict:
    """Every stage timed (median of ``repeats``), its MACs and share of the matmul peak, per video, and
    (``profile``) one profiled pass; then SFC (head x chunks + sfc + tail) and dense per video."""
    out: dict[str, dict] = {}
    for name, stage in stages.items():
        seconds = time_stage(stage, device, warmup=warmup, repeats=repeats)
        median = statistics.median(seconds)
        macs = stage_macs(stage)
        tflops = 2 * macs / median / 1e12 if median > 0 else None
        out[name] = {
            "input": list(stage.example.shape),
            "seconds": seconds,
            "median_ms": median * 1e3,
            "passes_per_video": stage.passes_per_video,
            "ms_per_video": median * 1e3 * stage.passes_per_video,
            "gmacs_per_pass": macs / 1e9,
            "tflops": tflops,
            "peak_fraction": tflops * 1e3 / peak_gflops if peak_gflops and tflops is not None else None,
        }
        if profile:
            started = time.perf_counter()
            out[name]["profile"] = profile_stage(stage, device, top=top)
            out[name]["profile"]["wall_s"] = time.perf_counter() - started
    sfc_ms = sum(out[s]["ms_per_video"] for s in ("head", "sfc", "tail"))
    dense_ms = out["clip"]["ms_per_video"]
    return {"stages": out, "sfc_ms_per_video": sfc_ms, "dense_ms_per_video": dense_ms,
            "sfc_videos_per_s": 1e3 / sfc_ms, "dense_videos_per_s": 1e3 / dense_ms, "speedup": dense_ms / sfc_ms}
