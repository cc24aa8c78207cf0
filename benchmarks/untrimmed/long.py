"""Untrimmed videos at the paper's scale (issue 14 item 4, Table 7): minutes-long synthetic videos where
the action fills a few percent, SFC on S=8 segments of F=32 and F=128 sampled frames against single,
uniform, dense and whole-video SFC.

Reuses the backbone and an SFC checkpoint that ``benchmarks/accuracy/run.py --setting hard --work W``
trained in W (slow8x8_tiny at short side 64; SFC trained on 384-frame videos where the action fills
10-20%), and writes a test set of its own into W/long: ``sfc-deploy synth`` with the same 8 classes,
``--frames`` raw frames per video (default 9600: 6.4 minutes at 25 fps, 1200 sampled frames at stride
8) and the action in 2-5% of each video. Then two ``sfc-deploy eval`` runs on it:

* single, uniform and dense with ``--num-clips 60`` (as the paper's Table 7: uniform 60 clips; dense 60
  clips x 3 crops = 180), SFC on the whole video, and 8 x 32 segments, each SFC at tau 2, 4 and 8;
* 8 x 128 segments at tau 2, 4 and 8.

Writes ``long.json`` and ``long.md`` beside this file: per method the input (sampled frames), the
usage (the fraction of SFC's head features kept: 1/tau), GMACs per video and top-1, as Table 7.

    .venv/bin/python benchmarks/accuracy/run.py --setting hard --work /tmp/sfc-accuracy-hard   # once
    .venv/bin/python benchmarks/untrimmed/long.py --work /tmp/sfc-accuracy-hard
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from sfc_deploy.common.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("sfc-deploy"))
TAUS = "2,4,8"
SEGMENTS = ((8, 32), (8, 128))


def _run(cmd: list[str]) -> float:
    print("$ sfc-deploy " + " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def _input(row: dict, sampled: int) -> str:
    """Sampled frames a method reads: per clip x clips, or SFC's frames x 1 pass."""
    method = row["method"]
    if row["strategy"] in ("single", "uniform", "dense"):
        passes = 1 if row["strategy"] == "single" else int(method.split("-")[1].split(":")[0])
        return f"8x{passes}"
    if row["strategy"] == "segments":
        s, f = (int(v) for v in method.split("segments-")[1].split(":")[0].split("x"))
        return f"{s * f}x1"
    return f"{sampled}x1"


def to_markdown(doc: dict) -> str:
    rows, meta = doc["rows"], doc["meta"]
    lines = [
        "# Untrimmed videos at the paper's scale, Table 7 style (issue 14 item 4)",
        "",
        f"Regenerate: `.venv/bin/python benchmarks/untrimmed/long.py --work W {doc['args']}` (see its docstring); "
        f"{doc['wall_s'] / 60:.0f} min this time on {doc['machine']} (2 cores), PyTorch fp32 on the CPU.",
        "",
        f"**Data:** `sfc-deploy synth` ({meta['synth']}): {meta['videos']} test videos of {meta['frames']} raw frames "
        f"({meta['frames'] / meta['fps'] / 60:.1f} minutes at {meta['fps']} fps, 64x80; {meta['sampled']} sampled "
        f"frames at stride 8), 8 classes, the action in {100 * meta['window'][0]:.0f}-{100 * meta['window'][1]:.0f}% "
        "of each video, clutter and noise elsewhere. **Model:** the accuracy benchmark's harder-setting slow8x8_tiny "
        f"backbone and its SFC checkpoint `{meta['sfc']}` (trained at tau 2 on 384-frame videos), evaluated at every "
        "tau without retraining. Single reads one centre clip, uniform 60 clips, dense 60 clips x 3 crops (the "
        "paper's 30 / 180); SFC reads the whole video or S segments of F consecutive sampled frames, concatenated.",
        "",
        "Input is sampled frames x passes (8-frame clips for the clip strategies). Usage: the fraction of SFC's "
        "head features the tail sees (1/tau), as the paper's column.",
        "",
        "| method | input | usage | GMACs/video | top-1 | top-1 equal to dense |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        agree = "-" if r["agreement"] is None else f"{100 * r['agreement']:.1f}%"
        lines.append(f"| {r['method']} | {r['input']} | {r['usage']} | {r['gmacs']:.2f} | {100 * r['top1']:.1f}% | {agree} |")
    best = max(rows, key=lambda r: r["top1"])
    dense = next((r for r in rows if r["strategy"] == "dense"), None)
    lines += ["", f"{meta['videos']} videos: one video is {100 / meta['videos']:.1f} points; chance is 12.5% (8 classes). "
              f"Best: {best['method']} at {100 * best['top1']:.1f}%"
              + (f"; dense {100 * dense['top1']:.1f}% at {dense['gmacs']:.2f} GMACs." if dense else "."), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the accuracy benchmark's --work folder (hard setting)")
    parser.add_argument("--frames", type=int, default=9600, help="raw frames per long video")
    parser.add_argument("--per-class", type=int, default=5, help="test videos per class")
    parser.add_argument("--window", default="0.02,0.05", help="action window, min,max fraction of the video")
    parser.add_argument("--sfc", default="default_s0", help="SFC run under WORK/sfc to evaluate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="long", help="output file stem beside this script (and the data folder in WORK)")
    args = parser.parse_args()
    weights, sfc = args.work / "backbone" / "backbone.safetensors", args.work / "sfc" / args.sfc / "sfc.safetensors"
    for need in (weights, sfc):
        if not need.is_file():
            sys.exit(f"{need} is missing; run benchmarks/accuracy/run.py --setting hard --work {args.work} first")
    lo, hi = (float(v) for v in args.window.split(","))
    data, fps = args.work / args.name, 25
    synth = (f"--classes 8 --train-per-class 0 --test-per-class {args.per_class} --frames {args.frames} "
             f"--window-min {lo} --window-max {hi} --fps {fps} --seed 7")
    t0 = time.perf_counter()
    if not (data / "test.csv").is_file():
        _run([CLI, "synth", str(data), *synth.split(), "--force"])
    common = ["-b", "slow8x8_tiny", "--checkpoint", str(weights), "--sfc", f"{args.sfc}={sfc}", "--tau", TAUS,
              "--threads", str(args.threads)]
    reports = []
    for i, (s, f) in enumerate(SEGMENTS):
        strategies = "single,uniform,dense,sfc,segments" if i == 0 else "segments"
        out = data / f"eval_{s}x{f}"
        _run([CLI, "eval", str(data / "test.csv"), "-o", str(out), *common, "--strategies", strategies,
              "--num-clips", "60", "--segments", str(s), "--segment-frames", str(f), "--name", "results"])
        reports.append(json.loads((out / "results.json").read_text()))
    sampled = args.frames // 8
    rows = []
    for report in reports:
        for r in report["results"]:
            if any(x["method"] == r["method"] for x in rows):
                continue
            tau = r["method"].split("tau=")[1] if "tau=" in r["method"] else None
            rows.append({"method": r["method"], "strategy": r["strategy"], "input": _input(r, sampled),
                         "usage": f"{100 / float(tau):.1f}%" if tau else "100%", "gmacs": r["gmacs"], "top1": r["top1"],
                         "agreement": r.get("agreement")})
    given = f"--frames {args.frames} --per-class {args.per_class} --window {args.window} --sfc {args.sfc} --name {args.name}"
    doc = {"args": given, "wall_s": time.perf_counter() - t0, "machine": f"{platform.processor() or platform.machine()}",
           "meta": {"synth": synth, "videos": 8 * args.per_class, "frames": args.frames, "fps": fps, "sampled": sampled,
                    "window": [lo, hi], "sfc": args.sfc},
           "rows": rows, "evals": reports}
    atomic_write_text(HERE / f"{args.name}.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(HERE / f"{args.name}.md", to_markdown(doc))
    print(to_markdown(doc))


if __name__ == "__main__":
    main()
