"""tpn50 (TPN, slow-only R50 8x8) on this CPU: SFC against its own 30-crop dense sampling (issue 14).

Paper settings: 288 raw frames -> 36 sampled at 256x312, tau 2, split res3 (SFC's default; the
tail is res4, res5, the pyramid neck and TPNHead); dense: 10 clips x 3 crops of 8x256x256. Random
weights (speed and memory do not depend on them). One ``sfc-deploy bench`` run, so both strategies
come from the same export, runtime, precision and thread count, each in its own fresh worker::

    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/backbones/tpn50/run.py            # 2 timed videos each
    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/backbones/tpn50/run.py --videos 1 # quicker

Writes ``results.json`` / ``results.md`` / ``results.png`` beside this file (the files name the
machine, runtime, precision, threads and library versions) and ``info.json`` (``sfc-deploy info``
at the paper's settings, both splits, against Table 2).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2, help="timed videos per strategy (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both strategies")
    parser.add_argument("--cache", type=Path, default=Path("cache"), help="where the default export is cached")
    args = parser.parse_args()
    from sfc_deploy.common.atomic import atomic_write_text

    info = {}
    for split in ("res3", "res4"):
        out = subprocess.run([CLI, "info", "-b", "tpn50", "--split", split, "--json"], check=True,
                             capture_output=True, text=True).stdout
        info[split] = json.loads(out)
    atomic_write_text(HERE / "info.json", json.dumps(info, indent=2) + "\n")

    cmd = [CLI, "bench", "-b", "tpn50", "--runtime", "onnxruntime", "--precision", "fp32",
           "--threads", str(args.threads), "--videos", str(args.videos), "--warmup", "1",
           "--batch-size", "30,6", "--cache", str(args.cache),
           "--json", str(HERE / "results.json"), "--markdown", str(HERE / "results.md"), "--plot", str(HERE / "results.png")]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    report = json.loads((HERE / "results.json").read_text())
    report["script_wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(HERE / "results.json", json.dumps(report, indent=2) + "\n")
    print(f"wrote {HERE / 'results.md'} ({report['script_wall_s']:.0f} s, export included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
