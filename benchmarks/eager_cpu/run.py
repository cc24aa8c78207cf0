"""PyTorch eager on the CPU before and after the inference rewrite (issue 15 item 5), and in bf16 (issue 12).

The recorded eager SFC ran at 11% of the measured matmul peak where ONNX Runtime reached 55-83%.
This script measures, in one run on this machine, the PyTorch runtime serving the model as trained
(``inference_rewrite=False``), as rewritten for inference (the default;
:mod:`sfc_deploy.models.inference`), and rewritten in bf16 (``bench --precision bf16``: the weights
converted at load; oneDNN's bf16 kernels where the CPU has avx512_bf16 or AMX), and writes
``results.json`` and ``README.md`` beside itself:

* the matmul peak of this machine at the same thread count, in fp32 and bf16 (bench's ``matmul`` worker);
* parity first (``sfc-deploy verify -r pytorch -p fp32,bf16``): the runtime as served, in fp32 and bf16,
  against the model as trained, per part and end to end, with the shared tolerances;
* SFC (slow8x8, 288 raw frames -> 36 at 256x312, tau 2, head streamed in chunks of 12 as ``bench``
  does) and dense 30-crop (30 x 8x256x256, 15 crops per forward) through the bench worker, each
  strategy in a fresh process: videos/s and % of the matmul peak;
* a profile of each variant (a fresh process per variant): torch.profiler per stage (head on one
  12-frame chunk, SFC on 36 frames, tail on 18, clip model on ``--profile-crops`` crops), the top
  ops by self time, the convolutions grouped by input shape, and the oneDNN primitives that ran
  (``torch.backends.mkldnn.verbose``: implementation name and milliseconds).

    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/eager_cpu/run.py            # ~8 min on 2 cores (the parity check included)
    .venv/bin/python benchmarks/eager_cpu/run.py --quick --out /tmp/eager             # slow8x8_tiny smoke run

Random weights (speed does not depend on them); synthetic input tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: label -> (inference_rewrite, precision); bf16 converts the weights at load (oneDNN's bf16 kernels where
#: the CPU has them: avx512_bf16 or AMX)
VARIANTS = {"as trained": (False, "fp32"), "rewritten": (True, "fp32"), "rewritten, bf16": (True, "bf16")}
TOP = 8


# --- the profile of one variant, in a process of its own -------------------------------------------
def profile_worker(args) -> int:
    """``run.py --profile-worker VARIANT OUT.json``: profile the PyTorch runtime's served model, stage by
    stage (:mod:`sfc_deploy.bench.stages`: one warm-up pass, one timed, one profiled)."""
    import torch

    from sfc_deploy.bench.stages import profile_stage, served_stages, time_stage
    from sfc_deploy.runtime import Deployment
    from sfc_deploy.runtime.pipeline import load

    torch.set_num_threads(args.threads)
    rewrite, precision = VARIANTS[args.profile_worker]
    options = {"precision": precision, "inference_rewrite": rewrite}
    dep = load(args.export, "pytorch", threads=args.threads, **options) if args.export else None
    if dep is None:  # --quick: the tiny model in memory
        from sfc_deploy.models import create_model, get_config

        torch.manual_seed(0)
        dep = Deployment.from_model(create_model(get_config(args.backbone), tau=2.0), threads=args.threads, **options)
    stages = served_stages(dep, frames=args.frames, size=args.size, chunk=args.chunk, crops=args.profile_crops)
    labels = {"head": "head (one chunk)"}
    result = {"variant": args.profile_worker, "stages": {
        labels.get(name, name): {"wall_s": time_stage(stage, "cpu", warmup=1, repeats=1)[0],
                                 **profile_stage(stage, "cpu", top=TOP)}
        for name, stage in stages.items()}}
    # which oneDNN implementation each convolution runs (printed by oneDNN on this process's stdout)
    sys.stdout.flush()
    with torch.inference_mode(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        for name, stage in stages.items():
            print(f"@@stage {labels.get(name, name)}", flush=True)
            stage.fn(stage.example)
            sys.stdout.flush()
    Path(args.profile_out).write_text(json.dumps(result))
    return 0


def _onednn_summary(stdout: str) -> dict:
    """Per stage: oneDNN primitives by (kind, implementation): calls and milliseconds."""
    stages: dict[str, dict] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("@@stage "):
            current = stages.setdefault(line[8:].strip(), defaultdict(lambda: {"calls": 0, "ms": 0.0}))
            continue
        if current is None or not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        fields = line.split(",")
        i = fields.index("exec")
        kind, impl = fields[i + 2], fields[i + 3]
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        entry = current[f"{kind} {impl}"]
        entry["calls"] += 1
        entry["ms"] += ms
    return {s: dict(sorted(v.items(), key=lambda kv: -kv[1]["ms"])) for s, v in stages.items()}


def run_profile(variant: str, args, export: Path | None, out_dir: Path) -> dict:
    out = out_dir / f"profile-{variant.replace(' ', '_')}.json"
    cmd = [sys.executable, str(Path(__file__)), "--profile-worker", variant, "--profile-out", str(out),
           "--threads", str(args.threads), "--frames", str(args.frames), "--size", f"{args.size[0]}x{args.size[1]}",
           "--chunk", str(args.chunk), "--profile-crops", str(args.profile_crops),
           "--backbone", args.backbone]
    if export is not None:
        cmd += ["--export", str(export)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"profile of {variant} failed: {proc.stderr.strip().splitlines()[-3:]}")
    result = json.loads(out.read_text())
    out.unlink()
    result["onednn"] = _onednn_summary(proc.stdout)
    return result


# --- the measurement -----------------------------------------------------------------------------
def measure(args) -> dict:
    from sfc_deploy.bench.flops import dense_cost, sfc_cost
    from sfc_deploy.bench.machine import machine_info
    from sfc_deploy.bench.suite import BenchOptions, ensure_export
    from sfc_deploy.bench.worker import WorkerJob, run_in_fresh_process
    from sfc_deploy.export.weights import model_from_manifest
    from sfc_deploy.export.manifest import load_manifest

    say = lambda m: print(m, flush=True)  # noqa: E731
    load_before = os.getloadavg()
    export = ensure_export(BenchOptions(backbone=args.backbone, runtime="pytorch", raw_frames=args.frames * 8,
                                        size=tuple(args.size), cache_dir=args.cache), 2.0, say)
    model = model_from_manifest(load_manifest(export))
    sfc_gmacs = sfc_cost(model, frames=args.frames, size=tuple(args.size)).gmacs
    dense_gmacs = dense_cost(model).gmacs
    del model
    peaks = {}
    for precision in sorted({p for _, p in VARIANTS.values()}):
        say(f"matmul peak, {precision}")
        peaks[precision] = run_in_fresh_process(WorkerJob(strategy="matmul", threads=args.threads, precision=precision,
                                                          peak_seconds=2.0))
    say("parity: the pytorch runtime in fp32 and bf16 against the model as trained (sfc-deploy verify)")
    from sfc_deploy.verify import verify

    started = time.perf_counter()
    report = verify(load_manifest(export), runtimes=["pytorch"], precisions=["fp32", "bf16"], dense_clips=1,
                    threads=args.threads).to_dict()
    parity = {"command": f"sfc-deploy verify {export} -r pytorch -p fp32,bf16 --dense-clips 1 --threads {args.threads}",
              "wall_s": time.perf_counter() - started, **report}
    rows, profiles = {}, {}
    for label, (rewrite, precision) in VARIANTS.items():
        peak = peaks[precision]
        common = dict(export_dir=str(export), runtime="pytorch", precision=precision, threads=args.threads,
                      warmup=1, inference_rewrite=rewrite)
        say(f"{label}: SFC")
        sfc = run_in_fresh_process(WorkerJob(strategy="sfc", videos=args.videos, head_chunk=args.chunk, **common))
        say(f"{label}: dense")
        dense = run_in_fresh_process(WorkerJob(strategy="dense", videos=1, batch_sizes=[args.dense_batch], **common))
        row = {}
        for name, res, gmacs in (("sfc", sfc, sfc_gmacs), ("dense", dense, dense_gmacs)):
            lat = res["latencies_s"]
            vps = len(lat) / sum(lat)
            row[name] = {"videos_per_s": vps, "latencies_s": lat, "first_video_s": res["first_video_s"],
                         "gmacs": gmacs, "achieved_gflops": 2 * gmacs * vps, "timing_allocator": res.get("timing_allocator"),
                         "peak_fraction": 2 * gmacs * vps / peak["gflops"], "video_mem_mb": res["video_mem_mb"],
                         "base_rss_mb": res["base_rss_mb"]}
        rows[label] = {**row, "precision": precision}
        say(f"{label}: profile")
        profiles[label] = run_profile(label, args, export, HERE if not args.out else args.out)
    import torch

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "runtime": f"pytorch {torch.__version__} eager, CPU",
        "precision": "fp32, and bf16 where a variant says so",
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {"backbone": args.backbone, "frames": args.frames, "size": list(args.size), "tau": 2,
                     "head_chunk": args.chunk, "dense_batch": args.dense_batch, "sfc_videos": args.videos,
                     "dense_videos": 1, "profile_crops": args.profile_crops},
        "matmul_peak": peaks["fp32"],
        "matmul_peaks": peaks,
        "results": rows,
        "parity": parity,
        "profiles": profiles,
    }


def _machine_line(r: dict) -> str:
    m = r["machine"]
    cpu = m.get("cpu") or m.get("cpu_model") or "CPU"
    cores = m.get("usable_cores") or m.get("cores") or "?"
    mem = m.get("memory_gb") or m.get("total_memory_gb")
    return f"{cpu} ({cores} cores{f', {mem:.1f} GB' if isinstance(mem, (int, float)) else ''})"


def markdown(r: dict) -> str:
    peaks = r.get("matmul_peaks") or {"fp32": r["matmul_peak"]}
    la, lb = r["load_average_before"], r["load_average_after"]
    lines = [
        "# PyTorch eager on the CPU: before and after the inference rewrite, and in bf16",
        "",
        f"Regenerate with `flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/eager_cpu/run.py` "
        f"(results in `results.json`). {r['runtime']}, {r['precision']}, {r['threads']} threads, "
        f"{_machine_line(r)}; created {r['created']}.",
        f"Load average before/after the run: {la[0]:.2f} / {lb[0]:.2f} (1 min, on {r['threads']} cores; the run's own "
        "threads count in the second, whatever ran just before it in the first).",
        "",
        "Matmul peak measured in this run: " + "; ".join(
            f"{name} {p['gflops']:.0f} GFLOP/s ({p['library']}; torch alone {p['by_library'].get('torch', float('nan')):.0f})"
            for name, p in peaks.items()) + ". Each variant's % of peak is of the peak in its precision.",
        "",
        "| variant | SFC videos/s | SFC % of matmul peak | dense 30-crop videos/s | dense % of peak | speed-up SFC/dense |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in r["results"].items():
        s, d = row["sfc"], row["dense"]
        lines.append(f"| {label} | {s['videos_per_s']:.4f} | {100 * s['peak_fraction']:.0f}% | {d['videos_per_s']:.4f} | "
                     f"{100 * d['peak_fraction']:.0f}% | {s['videos_per_s'] / d['videos_per_s']:.2f}x |")
    res = r["results"]
    pairs = [("rewritten", "as trained"), ("rewritten, bf16", "rewritten")]
    lines.append("")
    lines += [f"{a} / {b}: SFC {res[a]['sfc']['videos_per_s'] / res[b]['sfc']['videos_per_s']:.2f}x, "
              f"dense {res[a]['dense']['videos_per_s'] / res[b]['dense']['videos_per_s']:.2f}x videos/s." + "  "
              for a, b in pairs if a in res and b in res]
    parity = r.get("parity")
    if parity:
        passed = sum(c["passed"] for c in parity["checks"])
        lines += ["", f"## Parity: {passed} of {len(parity['checks'])} checks passed", "",
                  f"`{parity['command']}` ({parity['wall_s']:.0f} s): the runtime as served (the inference rewrite; "
                  "bf16: the weights converted at load) against the fp32 model as trained, per part and end to end, "
                  "with the tolerances of `sfc_deploy/verify/tolerances.py` (every element within "
                  "atol x max|ref| + rtol x |ref|): "
                  + ", ".join(f"{p} rtol {t['rtol']:g}, atol {t['atol_scaled']:g}" for p, t in parity["tolerances"].items()
                              if p in ("fp32", "bf16")) + ".", "",
                  "| precision | part | input | max abs | max abs / max\\|ref\\| | top-1 | result |", "|---|---|---|---|---|---|---|"]
        for c in parity["checks"]:
            top1 = "" if c["top1_agree"] is None else f"{100 * c['top1_agree']:.0f}%"
            scaled = c["max_abs"] / c["max_ref"] if c["max_ref"] else float("nan")
            lines.append(f"| {c['precision']} | {c['part']} | {c['input']} | {c['max_abs']:.2e} | {scaled:.2e} | {top1} | "
                         f"{'pass' if c['passed'] else 'FAIL ' + (c['error'] or '')} |")
    st = r["settings"]
    lines += ["", f"SFC: {st['backbone']}, {st['frames']} frames at {st['size'][0]}x{st['size'][1]}, tau 2, head streamed "
                  f"in chunks of {st['head_chunk']} (bench's default), {st['sfc_videos']} timed video(s) after one untimed; "
                  f"dense: 30 crops of 8x256x256, {st['dense_batch']} crops per forward, 1 timed video after one untimed. "
                  f"GMACs per video: SFC {next(iter(r['results'].values()))['sfc']['gmacs']:.0f}, dense "
                  f"{next(iter(r['results'].values()))['dense']['gmacs']:.0f}. Each strategy in a fresh process "
                  "(sfc_deploy.bench.worker): its first video reads the peak memory with glibc mapping every allocation "
                  "over 1 MiB from the OS; the timed videos after it run with glibc's thresholds where a serving "
                  "process's settle" + (" (mmap from 32 MiB, trim beyond 64 MiB)" if next(iter(r["results"].values()))["sfc"].get(
                      "timing_allocator") else " (runs before 2026-12-02: the 1 MiB setting throughout, which cost "
                                               "eager SFC about 1.3x)") + ".", ""]
    for label, prof in r["profiles"].items():
        lines += [f"## Profile: {label}", ""]
        for stage, p in prof["stages"].items():
            lines += [f"**{stage}** (input {tuple(p['input'])}, {p['wall_s']:.2f} s unprofiled)", "",
                      "| op | self ms | share | calls |", "|---|---|---|---|"]
            lines += [f"| {o.get('name', o.get('op'))} | {o['self_ms']:.1f} | {100 * o['share']:.1f}% | {o['calls']} |"
                      for o in p["top_ops"]]
            lines += ["", "| convolution (input shapes) | self ms | share | calls |", "|---|---|---|---|"]
            lines += [f"| {c.get('name', c.get('op'))} {c['input_shapes']} | {c['self_ms']:.1f} | {100 * c['share']:.1f}% | "
                      f"{c['calls']} |" for c in p["top_convolutions"][:5]]
            dnn = prof["onednn"].get(stage, {})
            if dnn:
                lines += ["", "oneDNN primitives: " + "; ".join(f"{k} x{v['calls']} ({v['ms']:.0f} ms)"
                                                               for k, v in list(dnn.items())[:6])]
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="slow8x8_tiny at 8 frames of 64x80: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="write results here instead of beside this script")
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--videos", type=int, default=2, help="timed SFC videos per variant")
    parser.add_argument("--dense-batch", type=int, default=15)
    parser.add_argument("--profile-crops", type=int, default=5)
    # internal: the profile worker
    parser.add_argument("--profile-worker", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.backbone = args.backbone or ("slow8x8_tiny" if quick else "slow8x8")
    args.frames = args.frames or (8 if quick else 36)
    args.size = tuple(int(v) for v in re.split("x", args.size)) if isinstance(args.size, str) else ((64, 80) if quick else (256, 312))
    args.chunk = args.chunk or (4 if quick else 12)
    if args.profile_worker:
        return profile_worker(args)
    if quick:
        args.videos, args.profile_crops = 1, 2
    out = args.out or HERE
    out.mkdir(parents=True, exist_ok=True)
    args.out = out
    result = measure(args)
    from sfc_deploy.common.atomic import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "README.md", markdown(result))
    print(f"wrote {out / 'results.json'} and {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
