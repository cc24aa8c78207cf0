"""The recorded ``sfc-deploy serve`` load test: bounded concurrent clients posting real mp4 files.

Builds the test suite's tiny export itself (slow8x8_tiny SFC, 10 classes, TorchScript fp32, fixed at
8 sampled frames of 32x40: the model costs milliseconds, so the figures are the serving path's own
cost: HTTP, Ray Serve, the upload's temporary file, decoding, batching), writes real H.264 mp4
files, starts the server in this process on a local Ray, and posts the files from 1, 4 and 16
clients, each client sending its next request when its previous answer came back (a thread pool
of that many workers over a fixed list of requests), in two rounds per server start so the table
shows the spread between repeats. Four server settings: one replica with ``serve.batch`` up to 8
videos taking only what is already queued (``batch_wait_ms=0``, the default) or waiting up to
10 ms for a batch to fill, the same with batching off (``max_batch_size=1``), and two replicas.
The load generator shares the machine with the server.

    .venv/bin/python benchmarks/serve/run.py                 # 100 requests per level and round (~2 minutes on 2 cores)
    .venv/bin/python benchmarks/serve/run.py --requests 24 --rounds 1   # quicker

Results: ``results.json`` and ``results.md`` beside this file (machine, runtime, precision named).
Random weights: the classes mean nothing; every answer for one file must still be the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.common.environment import environment, usable_cores

HERE = Path(__file__).resolve().parent
CLIENTS = (1, 4, 16)
#: (frames, (height, width)) of the posted files, as the tests write them but larger frames
VIDEOS = ((64, (120, 160)), (96, (120, 160)), (128, (144, 192)), (48, (120, 160)))
SETTINGS = {
    "batch 8, no wait (default), 1 replica": {"replicas": 1, "max_batch_size": 8, "batch_wait_ms": 0.0},
    "batch 8, wait 10 ms, 1 replica": {"replicas": 1, "max_batch_size": 8, "batch_wait_ms": 10.0},
    "no batching, 1 replica": {"replicas": 1, "max_batch_size": 1, "batch_wait_ms": 0.0},
    "batch 8, no wait, 2 replicas": {"replicas": 2, "max_batch_size": 8, "batch_wait_ms": 0.0},
}


def tiny_export(out: Path) -> Path:
    """The tests' shared TorchScript export (``tests/conftest.py``: ``sfc_export_ts``), fp32 only."""
    import torch

    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.models import create_model, get_config

    config = get_config("slow8x8_tiny", num_classes=10)
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    model = create_model(config, tau=2.0)
    export_model(model, out, ExportOptions(formats=("torchscript",), parts=("head", "sfc", "tail"), frames=8,
                                           size=(32, 40), raw_frames=64))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load(url: str, paths: list[Path], clients: int, requests: int) -> tuple[float, list[float], list[dict], list[str]]:
    """``requests`` uploads from ``clients`` workers: wall seconds, latencies (ms), answers, files."""
    from sfc_deploy.scale.client import predict_file

    jobs = [paths[i % len(paths)] for i in range(requests)]

    def one(path: Path) -> tuple[float, dict]:
        t0 = time.perf_counter()
        answer = predict_file(url, path)
        return (time.perf_counter() - t0) * 1000, answer

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        done = list(pool.map(one, jobs))
    return time.perf_counter() - t0, [d[0] for d in done], [d[1] for d in done], [p.name for p in jobs]


def summary(clients: int, rounds: list[tuple[float, list[float], list[dict], list[str]]]) -> dict:
    """One concurrency level over its rounds: requests/s of each round; latencies and batches pooled."""
    latency = np.array([ms for r in rounds for ms in r[1]])
    answers = [a for r in rounds for a in r[2]]
    top1: dict[str, set] = {}
    for name, answer in zip([n for r in rounds for n in r[3]], answers):
        top1.setdefault(name, set()).add(answer["top1"])
    return {
        "clients": clients, "requests": len(answers), "requests_per_s": [len(r[1]) / r[0] for r in rounds],
        "p50_ms": float(np.percentile(latency, 50)), "p99_ms": float(np.percentile(latency, 99)),
        "mean_ms": float(latency.mean()),
        "mean_batch": float(np.mean([a["batch"] for a in answers])), "max_batch": max(a["batch"] for a in answers),
        "mean_decode_ms": float(np.mean([a["decode_s"] for a in answers]) * 1000),
        "mean_model_ms": float(np.mean([a["model_s"] for a in answers]) * 1000),
        "same_top1_per_file": all(len(v) == 1 for v in top1.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per concurrency level and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the levels per server (the spread)")
    args = parser.parse_args()

    from sfc_deploy.data.synth import write_counter_video
    from sfc_deploy.scale.serve import ServeOptions, start_server

    cores = usable_cores()
    results: dict = {"environment": environment(), "runtime": "torchscript", "precision": "fp32",
                     "export": "slow8x8_tiny SFC (tau 2, 10 classes), TorchScript fp32, fixed 8 sampled frames of 32x40, "
                               "random weights",
                     "videos": [f"{f} frames at {h}x{w}, 25 fps (H.264 mp4)" for f, (h, w) in VIDEOS],
                     "requests_per_level_and_round": args.requests, "rounds": args.rounds, "ray_cpus": cores,
                     "settings": {}}
    with tempfile.TemporaryDirectory(prefix="sfc-serve-bench-") as tmp:
        export = tiny_export(Path(tmp) / "export")
        paths = [write_counter_video(Path(tmp) / f"v{i}.mp4", f, size) for i, (f, size) in enumerate(VIDEOS)]
        for name, setting in SETTINGS.items():
            options = ServeOptions(runtime="torchscript", cpus_per_replica=1, **setting)
            server = start_server(export, port=free_port(), options=options, num_cpus=cores)
            try:
                load(server.url, paths, 16, 48)  # warm-up: every replica and thread has seen requests
                rounds = [[load(server.url, paths, c, args.requests) for c in CLIENTS] for _ in range(args.rounds)]
            finally:
                server.stop()
            runs = [summary(c, [r[i] for r in rounds]) for i, c in enumerate(CLIENTS)]
            results["settings"][name] = {"options": dataclasses.asdict(options), "startup_s": server.startup_s,
                                         "runs": runs}
            print(name, [(r["clients"], [round(x, 1) for x in r["requests_per_s"]], round(r["p50_ms"]),
                          round(r["p99_ms"])) for r in runs], flush=True)
    env = results["environment"]
    lines = [
        "# serve: load test", "",
        f"{results['export']}; {len(VIDEOS)} mp4 files ({', '.join(results['videos'])}) uploaded as multipart over "
        f"HTTP on localhost with `sfc_deploy.scale.client.predict_file`; {args.requests} requests per level, "
        f"{args.rounds} rounds over the levels per server start; {env['cpu']} "
        f"({env['machine']['usable_cores']} cores, {env['machine']['memory_gb']} GB), local Ray with {cores} CPUs, "
        f"each replica 1 CPU and 1 intra-op thread; the clients run on the same machine. Ray "
        f"{env['libraries'].get('ray')}, torch {env['torch']}.", "",
        "| server | clients | requests/s (each round) | p50 ms | p99 ms | mean batch | decode ms | model ms (per call) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, setting in results["settings"].items():
        for r in setting["runs"]:
            rates = ", ".join(f"{x:.1f}" for x in r["requests_per_s"])
            lines.append(f"| {name} | {r['clients']} | {rates} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                         f"{r['mean_batch']:.2f} | {r['mean_decode_ms']:.1f} | {r['mean_model_ms']:.1f} |")
    same = all(r["same_top1_per_file"] for s in results["settings"].values() for r in s["runs"])
    lines += ["", f"Every answer for one file had the same top-1: {same}. Latency is the client's, request to "
              "answer, pooled over the rounds. Decode ms is per request (on the replica's decoding threads, "
              "overlapping other requests); model ms is the model call a request was part of (a batched call "
              "serves several requests).", ""]
    atomic_write_text(HERE / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(HERE / "results.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
