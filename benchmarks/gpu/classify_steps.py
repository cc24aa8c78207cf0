"""``classify`` end to end on real mp4 files on a device, one video per model call against ``--batch N``
(a step of ``benchmarks/gpu/run.sh``).

Runs :func:`sfc_deploy.scale.classify.classify` (the local engine: decoding threads working ahead of
the model) over the same files twice, with ``batch=1`` and ``batch=N``, after one untimed job of each
(CUDA context, cuDNN's first calls), and writes each job's summary as JSON: videos/s of the whole job,
summed decode and model seconds. It also compares the two jobs' rows: top-1 agreement and the largest
top-1 probability difference (stacked calls may pick other kernels; fp16 rounds differently).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from sfc_deploy.common.device import resolve_device
from sfc_deploy.common.environment import device_name
from sfc_deploy.scale.classify import ClassifyOptions, classify, read_rows
from sfc_deploy.scale.sources import resolve_inputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="an export folder the pytorch runtime serves")
    parser.add_argument("--input", required=True, help="videos: a CSV, folder, glob or list file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--runtime", default="pytorch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    paths = resolve_inputs(args.input)
    runs, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, args.batch):
            options = ClassifyOptions(runtime=args.runtime, precision=args.precision, threads=args.threads,
                                      workers=args.workers, prefetch=args.prefetch, device=device, batch=batch)
            classify(paths[: max(batch, 2)], args.export, Path(tmp) / f"warm-{batch}.parquet", options)
            summary = classify(paths, args.export, Path(tmp) / f"batch-{batch}.parquet", options)
            runs[str(batch)] = {k: summary[k] for k in ("videos", "succeeded", "failed", "seconds", "videos_per_s",
                                                        "decode_s", "model_s")}
            rows[batch] = read_rows(Path(summary["out"]))
    one, many = rows[1], rows[args.batch]
    record = {
        "device": device_name(device), "runtime": args.runtime, "precision": args.precision, "videos": len(paths),
        "workers": args.workers, "prefetch": args.prefetch, "batch": args.batch, "runs": runs,
        "batch_speedup": runs[str(args.batch)]["videos_per_s"] / runs["1"]["videos_per_s"],
        "top1_agreement": sum(a["top1"] == b["top1"] for a, b in zip(one, many)) / len(one),
        "max_top1_prob_diff": max((abs(a["top1_prob"] - b["top1_prob"]) for a, b in zip(one, many)
                                   if a["top1_prob"] is not None and b["top1_prob"] is not None), default=None),
        "torch": torch.__version__,
    }
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return 0 if all(r["failed"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
