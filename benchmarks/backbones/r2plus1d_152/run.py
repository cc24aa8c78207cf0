"""R(2+1)D-152 (IG-65M, paper Table 2 row 5): SFC against its own 30-crop dense sampling on this CPU.

``sfc-deploy bench`` runs, ONNX Runtime fp32 on 2 threads, written beside this file as
``results-onnxruntime-fp32-<run>.{json,md,png}``::

    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/backbones/r2plus1d_152/run.py            # both runs
    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/backbones/r2plus1d_152/run.py --runs native

Both runs time the same dense baseline: 30 crops of the released clip (32 frames at stride 2,
112x112 crops of a short side of 128), all 30, the best of 30 and 10 crops per forward (never
handicapped). SFC reads 288 raw frames at stride 2 (144 frames), tau 2, split after res3, at

* ``paper``:  256x312, the paper's SFC input size (its 1403 GMACs are reproduced at this size);
* ``native``: 128x171, the frame size the released model's own crops come from (short side 128).

Random weights (speed and memory do not depend on them). Each strategy runs in a fresh process: one
warm-up video (its peak memory is the memory figure), then one timed video (a dense video is ~1.9
TMACs, ~20 s on 2 cores). R(2+1)D's head mixes time steps, so SFC's head runs on the whole video.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("sfc-deploy"))
RUNS = {"paper": ["--size", "256x312"], "native": ["--size", "128x171"]}


def bench(run: str) -> dict:
    stem = f"results-onnxruntime-fp32-{run}"
    cmd = [CLI, "bench", "--backbone", "r2plus1d_152", "--runtime", "onnxruntime", "--precision", "fp32",
           "--threads", "2", "--videos", "1", "--warmup", "1", "--batch-size", "30,10", "--head-chunk", "0",
           "--frames", "288", *RUNS[run], "--cache", "cache", "--json", str(HERE / f"{stem}.json"),
           "--markdown", str(HERE / f"{stem}.md"), "--plot", str(HERE / f"{stem}.png")]
    print("$", " ".join(["sfc-deploy", *cmd[1:]]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    report = json.loads((HERE / f"{stem}.json").read_text())
    report["script_wall_s"] = round(time.perf_counter() - t0, 1)
    from sfc_deploy.common.atomic import atomic_write_text

    atomic_write_text(HERE / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {HERE / stem}.json/.md/.png in {report['script_wall_s']:.0f} s")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, some of {', '.join(RUNS)}")
    args = parser.parse_args()
    for run in args.runs.split(","):
        if run not in RUNS:
            parser.error(f"unknown run {run!r}; expected some of {', '.join(RUNS)}")
        bench(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
