"""The recorded ``sfc-deploy classify`` comparison: the Ray engine against the local engine, same files.

Writes real mp4 files (synthetic motion videos, 288 frames at 256x320, long GOP), exports slow8x8 at
the paper's settings (or reuses ``sfc-deploy bench``'s cached export), then classifies the files
with ``--engine local`` (decoding threads + one ONNX Runtime session using every core) and with
``--engine ray`` (a local Ray, one actor per core, each with a one-thread session), in one run on
one machine, and records videos/s, the decode and model seconds, and Ray's start-up beside them::

    .venv/bin/python benchmarks/classify/run.py              # 8 videos
    .venv/bin/python benchmarks/classify/run.py --videos 4   # quicker

Results: ``results.json`` and ``results.md`` beside this file (machine, runtime, precision named).
Random weights: the classes mean nothing; speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.common.environment import environment
from sfc_deploy.data.synth import MOTIONS, VideoSpec, render_video
from sfc_deploy.data.video import write_video

HERE = Path(__file__).resolve().parent


def make_videos(folder: Path, n: int, frames: int = 288, size: tuple[int, int] = (256, 320)) -> list[str]:
    paths = []
    for i in range(n):
        start = frames // 4
        spec = VideoSpec(MOTIONS[i % len(MOTIONS)], frames, size, start, start + frames // 3, (i,))
        path = folder / f"video{i:02d}.mp4"
        write_video(path, np.ascontiguousarray(render_video(spec)), 30, gop=250)
        paths.append(str(path))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    args = parser.parse_args()

    from sfc_deploy.bench.machine import default_threads
    from sfc_deploy.bench.suite import BenchOptions, ensure_export
    from sfc_deploy.scale.classify import ClassifyOptions, RayOptions, classify, read_rows, top1_of

    cores = default_threads()
    export = ensure_export(BenchOptions(cache_dir=args.cache), 2.0, print)
    results: dict = {"environment": environment(), "export": str(export), "runtime": "onnxruntime", "precision": "fp32",
                     "videos": args.videos, "video": "288 frames at 256x320, 30 fps, GOP 250 (H.264)", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="sfc-classify-bench-") as tmp:
        paths = make_videos(Path(tmp), args.videos)
        local = ClassifyOptions(runtime="onnxruntime", threads=cores, workers=2, prefetch=4)
        summary = classify(paths, export, Path(tmp) / "local.parquet", local)
        results["runs"]["local"] = {**summary, "setting": f"1 session x {cores} threads, 2 decoding threads, prefetch 4"}
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - t0
        try:
            summary = classify(paths, export, Path(tmp) / "ray.parquet", ClassifyOptions(runtime="onnxruntime"),
                               engine="ray", ray=RayOptions(workers=cores, cpus_per_worker=1))
        finally:
            ray.shutdown()
        results["runs"]["ray"] = {**summary, "ray_start_s": startup,
                                  "setting": f"{cores} actors x 1 thread (one export load per actor)"}
        results["same_top1"] = top1_of(read_rows(Path(tmp) / "local.parquet")) == top1_of(read_rows(Path(tmp) / "ray.parquet"))
    loc, ray_run = results["runs"]["local"], results["runs"]["ray"]
    results["ray_over_local"] = ray_run["videos_per_s"] / loc["videos_per_s"]
    env = results["environment"]
    lines = [
        "# classify: Ray engine against the local engine", "",
        f"{args.videos} videos ({results['video']}), slow8x8 SFC tau 2 at 256x312 (random weights), ONNX Runtime "
        f"{env['libraries'].get('onnxruntime')} fp32 on {env['cpu']} ({env['machine']['usable_cores']} cores, "
        f"{env['machine']['memory_gb']} GB); Ray {env['libraries'].get('ray')}.", "",
        "| engine | setting | videos/s | decode s (sum) | model s (sum) | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {r['setting']} | {r['videos_per_s']:.3f} | {r['decode_s']:.1f} | {r['model_s']:.1f} | "
                     f"{r['seconds']:.1f} |")
    lines += ["", f"Ray / local videos/s: {results['ray_over_local']:.2f}x (Ray's start-up, "
              f"{ray_run['ray_start_s']:.1f} s, not included); same top-1 on every video: {results['same_top1']}.",
              "Decode and model seconds are summed over videos; they overlap in time (decoding threads or actors "
              "work while the model runs), so they add up to more than the wall time.", ""]
    atomic_write_text(HERE / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(HERE / "results.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
