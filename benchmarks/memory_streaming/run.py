"""Peak memory of one SFC video on the PyTorch runtime as the video grows: whole-video SFC vs streamed.

Regenerates ``results.json`` and ``README.md`` beside this file (about 5 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/memory_streaming/run.py                       # 144,288,576,1152 raw frames
    .venv/bin/python benchmarks/memory_streaming/run.py --lengths 144,1152,4096 --modes streamed

The model is slow8x8 at the paper's settings (split res3, tau 2, 256x312 frames, fp32) with random
weights, exported weights-only (the PyTorch runtime serves ``model.safetensors``). Each cell is one
fresh bench worker process (:func:`sfc_deploy.bench.worker.run_in_fresh_process`, the same code
``sfc-deploy bench --lengths`` runs): it loads the model, resets the kernel's peak-RSS mark, runs one
synthetic video of ``ceil(raw / 8)`` sampled frames through head -> SFC -> tail, and reports the peak
RSS above the loaded model (``video_mem_mb``; the input tensor is made before the reset, so it is not
counted). Modes:

* ``whole``: ``head_chunk`` off: the head and SFC on the whole time axis (today's path of every runtime);
* ``streamed``: ``head_chunk`` 12: the head and SFC stream together (``SFC.forward_streamed``).

Growth per sampled frame is the least-squares slope of ``video_mem_mb`` over the sampled frames.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from sfc_deploy.common.environment import environment

HERE = Path(__file__).resolve().parent
BACKBONE, SIZE, TAU, STRIDE = "slow8x8", (256, 312), 2.0, 8
MODES = {"whole": None, "streamed": 12}


def export_weights(out: Path) -> Path:
    """A weights-only export of random slow8x8 (as benchmarks/gpu/run.sh step export_weights)."""
    import torch

    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.models import create_model, get_config

    torch.manual_seed(0)
    export_model(create_model(get_config(BACKBONE), tau=TAU, split="res3"), out,
                 ExportOptions(formats=(), precisions=("fp32",), frames=36, size=SIZE, raw_frames=288))
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="144,288,576,1152", help="raw frames per video, comma-separated")
    parser.add_argument("--modes", default="whole,streamed", help="whole, streamed or both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    from sfc_deploy.bench.worker import WorkerJob, run_in_fresh_process

    lengths = [int(x) for x in args.lengths.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfc-mem-") as tmp:
        export = export_weights(Path(tmp) / "weights")
        for raw in lengths:
            row = {"raw_frames": raw, "frames": math.ceil(raw / STRIDE)}
            for mode in modes:
                start = time.perf_counter()
                r = run_in_fresh_process(WorkerJob(
                    strategy="sfc", export_dir=str(export), runtime="pytorch", precision="fp32",
                    threads=args.threads, memory_only=True, frames=row["frames"], head_chunk=MODES[mode]))
                row[mode] = {"video_mem_mb": round(r["video_mem_mb"], 1), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                             "base_rss_mb": round(r["base_rss_mb"], 1), "seconds": round(time.perf_counter() - start, 1)}
                print(raw, mode, row[mode], flush=True)
            rows.append(row)
    per_frame = {m: round(slope([r["frames"] for r in rows], [r[m]["video_mem_mb"] for r in rows]), 2)
                 for m in modes} if len(rows) > 1 else {}
    result = {
        "what": "peak RSS of one SFC video above the loaded model, PyTorch runtime, CPU",
        "model": {"backbone": BACKBONE, "split": "res3", "tau": TAU, "size": list(SIZE), "weights": "random (seed 0)"},
        "runtime": "pytorch", "precision": "fp32", "device": "cpu", "threads": args.threads,
        "modes": {m: f"head_chunk={MODES[m]}" for m in modes},
        "rows": rows,
        "mb_per_sampled_frame": per_frame,
        "environment": environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(per_frame))


if __name__ == "__main__":
    main()
