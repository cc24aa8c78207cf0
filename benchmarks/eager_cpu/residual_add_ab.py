"""The residual add of ``resnet3d.Bottleneck`` in place or not: SFC and 30-crop side by side, one process.

Every bottleneck ends with ``relu(bn_c(conv_c(y)) + identity)``. Out of place, the sum is a fresh
activation-sized tensor; on the CPU a block that large comes from the OS (glibc's mmap), and its pages
are faulted in and zeroed on first write, every block, every pass. In place (``y.add_(identity)``,
what the model does now) the sum lands in the BatchNorm's output. This script times both on the
PyTorch runtime as served (the inference rewrite, fp32, channels-last): the SFC pipeline on one video
and the dense clip model on 15 crops, alternating the two forwards over ``--rounds`` rounds (the order
flips every round), checking that both give the same bits, and writes ``residual_add_ab.{json,md}``
beside itself.

    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/eager_cpu/residual_add_ab.py     # ~4 min on 2 cores

Random weights; synthetic input tensors; slow8x8 at the paper's settings (36 frames at 256x312, head
in chunks of 12).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    import torch

    import sfc_deploy.models.resnet3d as resnet3d
    from sfc_deploy.bench.machine import machine_info
    from sfc_deploy.common.atomic import atomic_write_text
    from sfc_deploy.models import create_model, get_config
    from sfc_deploy.runtime import Deployment

    in_place = resnet3d.Bottleneck.forward

    def out_of_place(self, x):  # the forward before the change: the same branches, a fresh sum
        y, identity = self.branches(x)
        return self.relu(y + identity)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dep = Deployment.from_model(create_model(get_config("slow8x8"), tau=2.0), threads=args.threads, head_chunk=12)
    sfc, clips = dep.sfc_pipeline(), dep.clip_pipeline()
    g = torch.Generator().manual_seed(0)
    video, crops = torch.randn(1, 3, 36, 256, 312, generator=g), torch.randn(15, 3, 8, 256, 256, generator=g)
    forwards = {"out of place": out_of_place, "in place": in_place}
    times: dict[str, dict[str, list[float]]] = {name: {"sfc": [], "dense": []} for name in forwards}
    load_before = os.getloadavg()
    try:
        with dep.runner("head"), dep.runner("sfc"), dep.runner("tail"), dep.runner("clip"), torch.inference_mode():
            resnet3d.Bottleneck.forward = out_of_place
            want = sfc(video)[0], clips(crops)  # also the warm-up
            for r in range(args.rounds):
                order = list(forwards) if r % 2 == 0 else list(reversed(forwards))
                for name in order:
                    resnet3d.Bottleneck.forward = forwards[name]
                    for strategy, run, ref in (("sfc", lambda: sfc(video)[0], want[0]), ("dense", lambda: clips(crops), want[1])):
                        start = time.perf_counter()
                        got = run()
                        times[name][strategy].append(time.perf_counter() - start)
                        if not torch.equal(got, ref):
                            raise RuntimeError(f"{name} {strategy}: the logits differ from the out-of-place forward's")
                print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        resnet3d.Bottleneck.forward = in_place
    medians = {name: {s: statistics.median(v) for s, v in t.items()} for name, t in times.items()}
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
        "runtime": f"pytorch {torch.__version__} eager, CPU, fp32, the inference rewrite, channels-last",
        "threads": args.threads, "rounds": args.rounds, "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "seconds": times, "median_s": medians,
        "in_place_speedup": {s: medians["out of place"][s] / medians["in place"][s] for s in ("sfc", "dense")},
    }
    m = result["machine"]
    lines = [
        "# Residual add in place or not (`benchmarks/eager_cpu/residual_add_ab.py`)", "",
        f"{result['runtime']}, {args.threads} threads, {m.get('cpu') or m.get('cpu_model') or 'CPU'}; created "
        f"{result['created']}; load average before/after {load_before[0]:.2f} / {result['load_average_after'][0]:.2f}. "
        f"slow8x8, random weights: SFC on one video of 36 frames at 256x312 (head in chunks of 12), dense: the clip "
        f"model on 15 crops of 8x256x256. {args.rounds} rounds alternating the two forwards (order flipped each "
        "round); identical logits checked every pass.", "",
        "| residual add | SFC pipeline s (median) | dense 15 crops s (median) | SFC runs | dense runs |", "|---|---|---|---|---|",
    ]
    for name in forwards:
        lines.append(f"| {name} | {medians[name]['sfc']:.3f} | {medians[name]['dense']:.3f} | "
                     f"{', '.join(f'{x:.2f}' for x in times[name]['sfc'])} | {', '.join(f'{x:.2f}' for x in times[name]['dense'])} |")
    sp = result["in_place_speedup"]
    lines += ["", f"In place / out of place: SFC {sp['sfc']:.2f}x, dense {sp['dense']:.2f}x faster (medians)."]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "residual_add_ab.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / "residual_add_ab.md", "\n".join(lines) + "\n")
    print("\n".join(lines[-len(forwards) - 3:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
