"""What the bench worker's memory-reading allocator setting costs the timed passes, side by side.

``bench`` reads each strategy's peak memory with glibc mapping every allocation over 1 MiB straight
from the OS (``sfc_deploy.bench.worker.ALLOCATOR_ENV``): RSS then follows live memory, but every
allocation of that size is a fresh mapping whose pages the kernel faults in and zeroes. Until
2026-12-02 the timed passes ran under it too; now the worker sets glibc's thresholds where a serving
process's settle (``SERVING_MALLOPT``) once the memory is read. This script measures both settings in
one process per runtime, alternating them (order flipped every round), on the slow8x8 default export:
SFC (head in chunks of 12, as bench) and 30-crop (bench's best crops per forward), one untimed and one
timed pass per setting and round, and writes ``allocator_ab.json`` and ``allocator_ab.md`` beside itself.

    MALLOC_MMAP_THRESHOLD_=1048576 flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/speed/allocator_ab.py   # ~13 min on 2 cores (4 rounds)

Run it with the environment variable above (the worker's setting; the script refuses to run without it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", default="pytorch,onnxruntime")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    import torch

    from sfc_deploy.bench.machine import machine_info
    from sfc_deploy.bench.suite import BenchOptions, ensure_export
    from sfc_deploy.bench.worker import ALLOCATOR_ENV, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, SERVING_MALLOPT, glibc
    from sfc_deploy.common.atomic import atomic_write_text
    from sfc_deploy.runtime.pipeline import ClipPipeline, load

    if any(os.environ.get(k) != v for k, v in ALLOCATOR_ENV.items()):
        parser.error("run with " + " ".join(f"{k}={v}" for k, v in ALLOCATOR_ENV.items()) + " (bench's worker setting)")
    libc = glibc()
    if libc is None:
        parser.error("mallopt is glibc's; this C library is not glibc")
    settings = {
        "memory setting (1 MiB)": {M_MMAP_THRESHOLD: int(ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"]), M_TRIM_THRESHOLD: 128 << 10},
        "serving setting": dict(SERVING_MALLOPT),
    }
    torch.set_num_threads(args.threads)
    say = lambda m: print(m, flush=True)  # noqa: E731
    results: dict[str, dict] = {}
    for runtime in args.runtimes.split(","):
        export = ensure_export(BenchOptions(runtime=runtime, cache_dir=args.cache), 2.0, say)
        dep = load(export, runtime, threads=args.threads, head_chunk=12)
        inp = dep.manifest.input
        g = torch.Generator().manual_seed(0)
        video = torch.randn(1, 3, inp.frames, *inp.size, generator=g)
        crops = torch.randn(30, 3, inp.dense.frames, inp.dense.crop, inp.dense.crop, generator=g)
        sfc = dep.sfc_pipeline()
        clip = dep.runner("clip")
        dense_batch = 30 if runtime == "onnxruntime" else 15  # what bench's batch search picked on this machine
        passes = {"sfc": lambda: sfc(video)[0], "dense": lambda: ClipPipeline(clip, batch_size=dense_batch)(crops, 1)}
        times = {s: {k: [] for k in passes} for s in settings}
        for r in range(args.rounds):
            order = list(settings) if r % 2 == 0 else list(reversed(settings))
            for name in order:
                for param, value in settings[name].items():
                    if libc.mallopt(param, value) != 1:
                        raise RuntimeError(f"mallopt({param}, {value}) failed")
                for strategy, fn in passes.items():
                    with torch.inference_mode():
                        fn()  # untimed: the heap settles into this setting
                        t0 = time.perf_counter()
                        fn()
                        times[name][strategy].append(time.perf_counter() - t0)
                    say(f"{runtime} round {r + 1} {name} {strategy}: {times[name][strategy][-1]:.2f} s")
        dep.close()
        med = {s: {k: statistics.median(v) for k, v in t.items()} for s, t in times.items()}
        mem, serve = med["memory setting (1 MiB)"], med["serving setting"]
        results[runtime] = {"seconds": times, "median_s": med, "dense_batch": dense_batch,
                            "sfc_gain": mem["sfc"] / serve["sfc"], "dense_gain": mem["dense"] / serve["dense"],
                            "speedup_memory_setting": mem["dense"] / mem["sfc"],
                            "speedup_serving_setting": serve["dense"] / serve["sfc"]}
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), "torch": torch.__version__,
              "threads": args.threads, "precision": "fp32", "rounds": args.rounds, "results": results,
              "settings": {k: {str(p): v for p, v in s.items()} for k, s in settings.items()}}
    lines = ["# The bench worker's allocator settings, side by side", "",
             f"Regenerate with `MALLOC_MMAP_THRESHOLD_=1048576 flock /tmp/sfc-heavy.lock .venv/bin/python "
             f"benchmarks/speed/allocator_ab.py`. Created {record['created']}; {record['machine'].get('cpu', 'CPU')}, "
             f"{args.threads} threads, torch {torch.__version__}, fp32, slow8x8 default export (SFC: 36 frames at 256x312, "
             f"head in chunks of 12; 30-crop: 30 x 8x256x256). Median of {args.rounds} timed passes per setting, each "
             "after an untimed one, the settings alternating in one process per runtime.", "",
             "| runtime | SFC s, memory setting / serving setting | 30-crop s, memory / serving | SFC faster by | "
             "30-crop faster by | speed-up SFC/30-crop, memory setting | speed-up, serving setting |",
             "|---|---|---|---|---|---|---|"]
    for runtime, r in results.items():
        m, s = r["median_s"]["memory setting (1 MiB)"], r["median_s"]["serving setting"]
        lines.append(f"| {runtime} | {m['sfc']:.2f} / {s['sfc']:.2f} | {m['dense']:.1f} / {s['dense']:.1f} | "
                     f"{r['sfc_gain']:.2f}x | {r['dense_gain']:.2f}x | {r['speedup_memory_setting']:.2f}x | "
                     f"{r['speedup_serving_setting']:.2f}x |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "allocator_ab.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(args.out / "allocator_ab.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
