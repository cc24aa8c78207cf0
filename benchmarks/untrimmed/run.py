"""Untrimmed videos, Table 7 style (issue 14 item 4, a first step): whole-video SFC and the paper's
segment input against single, uniform and dense sampling, on the accuracy benchmark's harder set.

Reuses what ``benchmarks/accuracy/run.py --setting hard --work W`` built in W (the 384-frame test
videos where the action fills 10-20%, the slow8x8_tiny backbone, the SFC checkpoint of seed 0 with
the default recipe) and runs one ``sfc-deploy eval`` with the strategies
single, uniform (10 clips), dense (30 crops), sfc (the whole video) and segments (S x F sampled
frames), then writes ``results.json`` and ``README.md`` beside this file (input size, GMACs per
video, top-1, agreement with dense). Random-free: eval is deterministic.

    .venv/bin/python benchmarks/accuracy/run.py --setting hard --work /tmp/sfc-accuracy-hard   # once
    .venv/bin/python benchmarks/untrimmed/run.py --work /tmp/sfc-accuracy-hard

The paper's Table 7 uses minutes-long untrimmed videos and 8 x 32 / 8 x 128 frames; these videos are
384 frames (48 sampled at stride 8), so the segments here are 8 x 4 = 32 of 48 sampled frames.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("sfc-deploy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the accuracy benchmark's --work folder (hard setting)")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--segment-frames", type=int, default=4)
    parser.add_argument("--sfc", default="default_s0", help="SFC run under WORK/sfc to evaluate")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data, weights = args.work / "data" / "test.csv", args.work / "backbone" / "backbone.safetensors"
    sfc = args.work / "sfc" / args.sfc / "sfc.safetensors"
    for need in (data, weights, sfc):
        if not need.is_file():
            sys.exit(f"{need} is missing; run benchmarks/accuracy/run.py --setting hard --work {args.work} first")
    out = args.work / "untrimmed"
    if out.exists():
        shutil.rmtree(out)
    cmd = [CLI, "eval", str(data), "-o", str(out), "-b", "slow8x8_tiny", "--checkpoint", str(weights),
           "--sfc", f"{args.sfc}={sfc}", "--tau", "2", "--strategies", "single,uniform,dense,sfc,segments",
           "--segments", str(args.segments), "--segment-frames", str(args.segment_frames),
           "--threads", str(args.threads), "--name", "results"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    report = json.loads((out / "results.json").read_text())
    result = {"command": " ".join(cmd[1:]), "wall_s": round(seconds, 1), "machine": platform.platform(),
              "processor": platform.processor(), "eval": report}
    (HERE / "results.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(out / "results.md", HERE / "eval.md")
    if (out / "results.png").is_file():
        shutil.copyfile(out / "results.png", HERE / "results.png")
    lines = ["# Untrimmed videos, Table 7 style (regenerate: `benchmarks/untrimmed/run.py`, see its docstring)", "",
             f"`sfc-deploy eval` on the {report['results'][0]['videos']} test videos of the "
             f"accuracy benchmark's harder setting (384 frames, action in 10-20%), slow8x8_tiny, SFC `{args.sfc}` "
             f"(tau 2), PyTorch fp32, {args.threads} threads; {seconds:.0f} s on {platform.machine()} "
             "(2-core CPU, possibly shared). Full per-method table: `eval.md`.", "",
             "| method | strategy | GMACs/video | top-1 | top-1 equal to dense | where they differ: it is right / dense is right |",
             "|---|---|---|---|---|---|"]
    for row in report["results"]:
        agree = row.get("agreement")
        differ = (f"{row['right_when_disagreeing']:.0%} / {row['dense_right_when_disagreeing']:.0%} of {row['disagreements']}"
                  if row.get("disagreements") else "-")
        lines.append(f"| {row['method']} | {row['strategy']} | {row['gmacs']:.3f} | {row['top1']:.1%} | "
                     f"{'-' if agree is None else f'{agree:.1%}'} | {differ} |")
    (HERE / "README.md").write_text("\n".join(lines) + "\n")
    print((HERE / "README.md").read_text())


if __name__ == "__main__":
    main()
