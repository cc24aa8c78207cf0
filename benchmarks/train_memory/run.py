"""Peak memory of ``sfc-deploy train-backbone`` as the video list doubles: preloaded vs decoded on the fly.

Regenerates ``results.json`` and ``README.md`` beside this file in a few minutes on 2 CPU cores::

    .venv/bin/python benchmarks/train_memory/run.py                 # 16 and 32 videos, work files in /tmp
    .venv/bin/python benchmarks/train_memory/run.py --sizes 16,32,64

One synthetic dataset (``sfc-deploy synth``, 8 classes, 256 frames of 96x128, the frame size of the
issue's 3.6 GB figure) is written once; the N-video list is its first N/8 videos of each class, so
the larger list contains the smaller one. Each measurement is one fresh ``sfc-deploy train-backbone``
process (1 epoch, slow8x8_tiny, short side 64, one torch thread), and three numbers are taken:

* ``main_peak_rss_mb``: the kernel's high-water mark of resident memory of the training process
  (``ru_maxrss`` from ``wait4``; it covers the process and the workers it reaped, as a maximum).
* ``tree_peak_pss_mb``: the largest sum, over the process and its DataLoader workers, of the
  proportional set size sampled every 50 ms (shared pages divided among the processes sharing
  them, so forked workers are not counted twice). This is the memory the run really occupies.
* ``tree_peak_rss_mb``: the same sum of plain RSS (double-counts pages workers share with their parent).

Timing is recorded but is not the point: other jobs share the machine's cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from sfc_deploy.common.environment import environment

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("sfc-deploy"))
CLASSES = 8
SYNTH = ["--classes", str(CLASSES), "--test-per-class", "0", "--frames", "256", "--size", "96x128", "--seed", "0"]
TRAIN = ["--backbone", "slow8x8_tiny", "--short-side", "64", "--epochs", "1", "--batch-size", "8", "--threads", "1",
         "--device", "cpu", "--force"]
#: (name, loading options): what is compared at each list size.
MODES = (
    ("preload", ["--preload", "--workers", "0"]),
    ("on the fly, 0 workers", ["--workers", "0"]),
    ("on the fly, 2 workers", ["--workers", "2"]),
)
MB = 1024 * 1024


def subset_csv(src: Path, dst: Path, per_class: int) -> int:
    """The first ``per_class`` rows of each label of ``src``; returns the row count."""
    with src.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        if seen.get(row["label"], 0) < per_class:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            kept.append(row)
    with dst.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return len(kept)


def _tree_memory(proc: psutil.Process) -> tuple[float, float]:
    """Sum of (PSS, RSS) in bytes over ``proc`` and its descendants (processes that vanish are skipped)."""
    pss = rss = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return pss, rss


def measure(cmd: list[str], log: Path, interval: float = 0.05) -> dict[str, float]:
    """Run ``cmd`` in a fresh process; its peak memory (see the module doc) and wall time."""
    start = time.perf_counter()
    with log.open("w") as fh:
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        peak_pss = peak_rss = 0.0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            try:
                pss, rss = _tree_memory(proc)
            except psutil.NoSuchProcess:
                pss = rss = 0.0
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
            time.sleep(interval)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.exit(f"failed ({child.returncode}): {' '.join(cmd)}; see {log}")
    return {"main_peak_rss_mb": round(usage.ru_maxrss * 1024 / MB, 1),  # ru_maxrss is in KiB on Linux
            "tree_peak_pss_mb": round(peak_pss / MB, 1), "tree_peak_rss_mb": round(peak_rss / MB, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def markdown(report: dict) -> str:
    sizes = report["sizes"]
    env = report["environment"]["machine"]
    changes = ", ".join(
        f"{name}: {report['runs'][name][str(sizes[-1])]['tree_peak_pss_mb'] - report['runs'][name][str(sizes[0])]['tree_peak_pss_mb']:+.0f} MB"
        for name, _ in MODES if name != "preload")
    lines = [
        "# train-backbone peak memory: preloaded frames vs clips decoded on the fly",
        "",
        "Regenerate with `.venv/bin/python benchmarks/train_memory/run.py` (a few minutes on 2 cores).",
        f"Machine: {env['cpu']}, {env['logical_cores']} logical cores, {env['memory_gb']} GB, {env['os']}; "
        f"torch {report['environment']['torch']}, Python {report['environment']['python']}.",
        "",
        f"Data: `sfc-deploy synth DIR --train-per-class {sizes[-1] // CLASSES} {' '.join(SYNTH)}`; the N-video list is "
        f"the first N/{CLASSES} videos of each class "
        f"(256 frames of 96x128: {report['raw_mb_per_video']:.1f} MB of raw RGB per video).",
        f"Each cell is one fresh `sfc-deploy train-backbone LIST.csv -o RUN {' '.join(TRAIN)} <mode>` process.",
        "",
        "Peak PSS of the process and its workers (MB; shared pages counted once):",
        "",
        "| mode | " + " | ".join(f"{n} videos" for n in sizes) + " | growth per added video |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for name, _ in MODES:
        cells = [report["runs"][name][str(n)] for n in sizes]
        growth = (cells[-1]["tree_peak_pss_mb"] - cells[0]["tree_peak_pss_mb"]) / max(sizes[-1] - sizes[0], 1)
        lines.append(f"| {name} | " + " | ".join(f"{c['tree_peak_pss_mb']:.0f}" for c in cells)
                     + f" | {growth:+.1f} MB |")
    lines += [
        "",
        "Peak RSS of the training process itself (MB, kernel high-water mark `ru_maxrss`):",
        "",
        "| mode | " + " | ".join(f"{n} videos" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, _ in MODES:
        lines.append(f"| {name} | " + " | ".join(f"{report['runs'][name][str(n)]['main_peak_rss_mb']:.0f}"
                                                 for n in sizes) + " |")
    lines += [
        "",
        "Wall time is in `results.json` but is not the point here: other jobs shared the 2 cores. Memory is.",
        "Preloading decodes every frame of every video before training, so it grows by about the raw",
        "size of each added video; decoding on the fly holds only the clips of the batches in flight",
        "(workers x prefetch x batch), so it stays flat as the list grows. What the on-the-fly runs keep per",
        "video is its probe result (frame count and timestamps: kilobytes); their changes from the smallest to",
        f"the largest list ({changes}) are to be read against the {report['raw_mb_per_video']:.0f} MB per video",
        "that preloading adds. Each cell is one run; run-to-run spread was not measured.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,32", help="List sizes (multiples of 8), comma-separated.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sfc-train-memory"), help="Work files.")
    parser.add_argument("--readme-only", action="store_true", help="Rewrite README.md from results.json; run nothing.")
    args = parser.parse_args()
    if args.readme_only:
        (HERE / "README.md").write_text(markdown(json.loads((HERE / "results.json").read_text())))
        return
    sizes = sorted(int(v) for v in args.sizes.split(","))
    if any(n % CLASSES or n < CLASSES for n in sizes):
        sys.exit(f"--sizes must be multiples of {CLASSES}, got {args.sizes}")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"synth{sizes[-1]}"
    if not (data / "train.csv").is_file():
        done = subprocess.run([CLI, "synth", str(data), "--train-per-class", str(sizes[-1] // CLASSES), *SYNTH,
                               "--force"], check=False)
        if done.returncode:
            sys.exit("sfc-deploy synth failed")
    runs: dict[str, dict[str, dict[str, float]]] = {name: {} for name, _ in MODES}
    for n in sizes:
        listing = data / f"train{n}.csv"
        assert subset_csv(data / "train.csv", listing, n // CLASSES) == n
        for name, extra in MODES:
            slug = name.replace(" ", "").replace(",", "_")
            cmd = [CLI, "train-backbone", str(listing), "-o", str(work / f"run_{slug}_{n}"), *TRAIN, *extra]
            runs[name][str(n)] = measure(cmd, work / f"log_{slug}_{n}.txt")
            print(f"{n:4d} videos  {name:24s} {runs[name][str(n)]}", flush=True)
    report = {
        "what": "peak memory of sfc-deploy train-backbone, 1 epoch, preloaded vs decoded on the fly",
        "sizes": sizes,
        "synth": SYNTH,
        "train": TRAIN,
        "modes": {name: extra for name, extra in MODES},
        "raw_mb_per_video": 256 * 96 * 128 * 3 / MB,
        "runs": runs,
        "environment": environment(),
    }
    (HERE / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (HERE / "README.md").write_text(markdown(report))
    print(f"wrote {HERE / 'results.json'} and {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
