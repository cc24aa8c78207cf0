"""The recorded speed/memory comparison: SFC against 30-crop dense sampling, slow8x8 at the paper's
settings (288 raw frames -> 36 at 256x312, tau 2, split res3; dense 30 x 8x256x256), on this CPU.

Regenerates, beside this file, one JSON + Markdown + PNG per runtime (the file names carry the
runtime and precision; the files carry the machine and library versions) and ``results.md``
that gathers them::

    .venv/bin/python benchmarks/speed/run.py            # ONNX Runtime (+ tau sweep, memory vs length), PyTorch eager
    .venv/bin/python benchmarks/speed/run.py --quick    # fewer videos, no sweeps: a smoke run

Every measurement goes through ``sfc-deploy bench`` (so this is also the worked example of the
command), with the default exports cached in ``--cache``. Run it on a quiet machine: the two
strategies are timed one after the other, so other load skews the speed-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sfc_deploy.common.parsing import split_list

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).with_name("sfc-deploy"))
LENGTHS = "144,288,576,1152"
TAUS = "2,1,4/3,4"
RUNTIMES = ("onnxruntime", "pytorch")


def bench(runtime: str, args: list[str], *, cache: Path, stem: str) -> dict:
    """One ``sfc-deploy bench`` run writing ``stem``.json/.md/.png here; returns the report."""
    cmd = [CLI, "bench", "--runtime", runtime, "--cache", str(cache), "--json", str(HERE / f"{stem}.json"),
           "--markdown", str(HERE / f"{stem}.md"), "--plot", str(HERE / f"{stem}.png"), *args]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    report = json.loads((HERE / f"{stem}.json").read_text())
    report["script_wall_s"] = round(time.perf_counter() - t0, 1)
    from sfc_deploy.common.atomic import atomic_write_text

    atomic_write_text(HERE / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed videos, no tau or length sweep")
    parser.add_argument("--cache", type=Path, default=Path("cache"), help="where the exports are cached")
    parser.add_argument("--videos", type=int, default=None, help="timed videos per strategy (default 3, quick 1)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help="comma-separated runtimes to (re)record; results.md gathers all recorded ones")
    args = parser.parse_args()
    videos = str(args.videos or (1 if args.quick else 3))
    common = ["--videos", videos, "--warmup", "1", "--batch-size", "30,10" if args.quick else "30,15,10,6"]
    for runtime in split_list(args.runtimes):
        extra = list(common)
        if runtime == "onnxruntime" and not args.quick:
            extra += ["--tau", TAUS, "--lengths", LENGTHS]
        bench(runtime, extra, cache=args.cache, stem=f"results-{runtime}-fp32")
    # gather every recorded runtime, also those not rerun this time (--runtimes picks what to rerun)
    runs = [json.loads((HERE / f"results-{rt}-fp32.json").read_text()) for rt in RUNTIMES
            if (HERE / f"results-{rt}-fp32.json").exists()]
    lines = ["# Recorded results: SFC against 30-crop dense sampling", "",
             "Regenerate with `.venv/bin/python benchmarks/speed/run.py` "
             "(each section below came from the `sfc-deploy bench` command it names).", ""]
    for r in runs:
        stem = f"results-{r['runtime']}-{r['precision']}"
        lines += [(HERE / f"{stem}.md").read_text(), f"![{stem}]({stem}.png)", ""]
        if "script_wall_s" in r:
            lines += [f"Wall time of this run, export included: {r['script_wall_s']:.0f} s.", ""]
    from sfc_deploy.common.atomic import atomic_write_text

    atomic_write_text(HERE / "results.md", "\n".join(lines))
    print(f"wrote {HERE / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
