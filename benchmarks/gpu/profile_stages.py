"""Stage by stage on a device: where SFC and 30-crop spend a pass (step ``profile-stages`` of ``run.sh``).

The 2026-12-01 H200 runs put both strategies at 13-16% of the fp16 matmul peak, SFC below dense, and
said no more: ``bench`` times whole videos. This step loads the weights-only export on the PyTorch
runtime once per variant (as served: the inference rewrite in the runtime's layout for the device;
the same in channels-last-3d; as trained) and, per stage (head on one chunk of ``--sfc-batch``
videos, SFC, tail, the clip model on ``--crops`` crops), gives the median seconds of a pass after
warm-up (CUDA events), its MACs, TFLOP/s and share of the matmul peak measured in the same process,
its milliseconds per video, and one profiled pass: the top kernels and the share of the GPU's time in
convolutions, in layout copies (cuDNN's NCHW<->NHWC conversions, ``copy_``) and in the rest
(:mod:`sfc_deploy.bench.stages`). The sums per video are the model's own cost without the streaming
driver or the input copies: compare them with ``bench``'s videos/s of the same run, not across runs.

    python benchmarks/gpu/profile_stages.py --export WEIGHTS --device cuda --precision fp16 --json F --markdown F
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sfc_deploy.bench.machine import matmul_peak_gflops
from sfc_deploy.bench.stages import measure_stages, served_stages
from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.common.device import resolve_device
from sfc_deploy.common.environment import device_name
from sfc_deploy.runtime.pipeline import load

#: label -> the pytorch runner's options
VARIANTS = {
    "served": {},
    "channels-last": {"memory_format": "channels_last_3d"},  # served, in channels-last-3d
    "as-trained": {"inference_rewrite": False},
}


def markdown(record: dict) -> str:
    lines = [f"# Stages on {record['device_name']} ({record['precision']}, torch {record['torch']})", "",
             f"slow8x8-style export `{record['export']}`: SFC {record['sfc_batch']} videos of {record['frames']} frames at "
             f"{record['size'][0]}x{record['size'][1]} per pass (head on chunks of {record['chunk']}), 30-crop "
             f"{record['crops']} crops per pass. Matmul peak in this process: {record['peak_gflops'] / 1e3:.1f} TFLOP/s. "
             "Medians of the timed passes; shares from one profiled pass.", "",
             "| variant | stage | input | ms per pass | ms per video | TFLOP/s | % of peak | convolution / layout copies / other |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, v in record["variants"].items():
        if "error" in v:
            lines.append(f"| {label} | failed: {v['error']} | | | | | | |")
            continue
        for name, s in v["stages"].items():
            sh = (s.get("profile") or {}).get("shares") or {}
            pct = "-" if s["peak_fraction"] is None else f"{100 * s['peak_fraction']:.1f}%"
            lines.append(f"| {label} | {name} | {'x'.join(map(str, s['input']))} | {s['median_ms']:.2f} | "
                         f"{s['ms_per_video']:.2f} | {s['tflops']:.3g} | {pct} | "
                         + " / ".join(f"{100 * sh.get(k, 0):.0f}%" for k in ("convolution", "layout copies", "other")) + " |")
        lines.append(f"| {label} | **per video** | | | SFC {v['sfc_ms_per_video']:.2f}, 30-crop {v['dense_ms_per_video']:.2f} | "
                     f"| | SFC {v['sfc_videos_per_s']:.1f} videos/s, 30-crop {v['dense_videos_per_s']:.1f}: "
                     f"{v['speedup']:.2f}x |")
    for label, v in record["variants"].items():
        for name, s in (v.get("stages") or {}).items():
            kernels = (s.get("profile") or {}).get("top_kernels") or (s.get("profile") or {}).get("top_ops") or []
            if kernels:
                lines += ["", f"**{label}, {name}**: " + "; ".join(
                    f"{k['name'][:90]} {100 * k['share']:.0f}% ({k['calls']})" for k in kernels[:5])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="an export folder (weights only is enough)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--frames", type=int, default=36, help="sampled frames per SFC video")
    parser.add_argument("--size", default="256x312", help="HxW of the SFC input")
    parser.add_argument("--chunk", type=int, default=12, help="head chunk, as bench streams it")
    parser.add_argument("--sfc-batch", type=int, default=32, help="SFC videos per pass")
    parser.add_argument("--crops", type=int, default=120, help="dense crops per clip-model pass")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per stage (cuDNN autotuning, first allocations)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--peak-seconds", type=float, default=1.0, help="time for the matmul peak measurement")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        torch.backends.cudnn.benchmark = True  # as bench runs both strategies
    h, w = (int(v) for v in args.size.lower().split("x"))
    peak = matmul_peak_gflops(threads=args.threads, precision=args.precision, seconds=args.peak_seconds, device=device)
    record = {"device": device, "device_name": device_name(device), "precision": args.precision,
              "torch": torch.__version__, "export": str(args.export), "frames": args.frames, "size": [h, w],
              "chunk": args.chunk, "sfc_batch": args.sfc_batch, "crops": args.crops, "peak_gflops": peak["gflops"],
              "variants": {}}
    failed = False
    for label in variants:
        started = time.perf_counter()
        dep = None
        try:
            dep = load(args.export, "pytorch", device=device, precision=args.precision, threads=args.threads,
                       **VARIANTS[label])
            stages = served_stages(dep, frames=args.frames, size=(h, w), chunk=args.chunk, crops=args.crops,
                                   videos=args.sfc_batch)
            result = measure_stages(stages, device, peak_gflops=peak["gflops"], warmup=args.warmup, repeats=args.repeats)
        except Exception as exc:  # noqa: BLE001 - one variant's failure is recorded, the others still run
            failed = True
            result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        result["wall_s"] = time.perf_counter() - started
        record["variants"][label] = result
        print(f"{label}: " + (result.get("error") or f"SFC {result['sfc_videos_per_s']:.1f} videos/s, "
                              f"30-crop {result['dense_videos_per_s']:.1f}, {result['wall_s']:.0f} s"), flush=True)
        del dep
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    if args.markdown is not None:
        atomic_write_text(args.markdown, markdown(record))
    print(markdown(record))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
