"""The recorded int8 measurement: speed of int8 SFC against fp32 SFC and int8 dense, and top-1 agreement.

Two parts, regenerating ``results.json`` and ``README.md`` beside this file::

    .venv/bin/python benchmarks/int8/run.py                  # both parts, work files in /tmp/sfc-int8
    .venv/bin/python benchmarks/int8/run.py --part speed     # one part (the other is kept from results.json)
    .venv/bin/python benchmarks/int8/run.py --part agreement-hard --accuracy-work W   # after accuracy/run.py --setting hard --work W
    .venv/bin/python benchmarks/int8/run.py --part agreement-hard --accuracy-work W40 --hard-key agreement_hard_bb40

* **speed** (slow8x8 at the paper's settings: 288 raw frames -> 36 at 256x312, tau 2, split res3;
  dense 30 x 8x256x256; random weights, which do not change the speed): ``sfc-deploy export
  --precision fp32,int8 --calibrate DATA`` on a few synthetic videos rendered at 256x312, then fp32
  SFC, int8 SFC and int8 dense on ONNX Runtime, 2 threads, timed in turn in one process on the same
  decoded video (round-robin, so load on a shared machine hits all three alike).
* **agreement** (int8 vs fp32, video-level top-1, on a *trained* model: int8 agreement of random
  weights means nothing): a synthetic 8-class dataset, a slow8x8_tiny backbone trained on its clips and
  an SFC module trained on it (``sfc-deploy synth / train-backbone / train``, small sizes to fit the time
  budget), exported with ``--precision fp32,int8 --calibrate train.csv`` (verified, including verify's
  own int8 agreement check), then every test video through the int8 ONNX Runtime deployment and the fp32
  PyTorch one, SFC and 30-crop dense.

Every step goes through the ``sfc-deploy`` command line except the two measuring loops.
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
THREADS = 2


def run(cmd: list[str], log: Path, ok: tuple[int, ...] = (0,)) -> float:
    """One command, its output appended to ``log``; returns wall seconds; stops the script on failure
    (an exit code outside ``ok``: verify exits 1 when a check fails, recorded in the manifest)."""
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode not in ok:
        sys.exit(f"step failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    seconds = time.perf_counter() - t0
    print(f"{seconds:7.1f} s  {' '.join(cmd[1:4])} ...", flush=True)
    return seconds


def load_avg() -> list[float]:
    return [round(float(x), 2) for x in Path("/proc/loadavg").read_text().split()[:3]] if Path("/proc/loadavg").exists() else []


def export_stats(export: Path) -> dict:
    """Sizes of the fp32 and int8 files ONNX Runtime serves, and the int8 records' calibration."""
    manifest = json.loads((export / "manifest.json").read_text())
    arts = [a for a in manifest["artifacts"] if a["variant"] == "ort"]
    return {
        "bytes": {f"{a['part']}.{a['precision']}": a["bytes"] for a in arts},
        "int8_extra": {a["part"]: a["extra"] for a in arts if a["precision"] == "int8"},
        "parity": [{k: c.get(k) for k in ("precision", "variant", "part", "input", "max_abs", "max_ref", "max_rel", "mean_abs",
                                      "top1_agree", "passed")} for c in manifest.get("parity", {}).get("checks", [])
                   if c["precision"] == "int8"],
    }


# --- speed ----------------------------------------------------------------------------------------
def part_speed(work: Path, log: Path, *, rounds: int, calib_videos: int) -> dict:
    import torch

    from sfc_deploy.data.inputs import model_input
    from sfc_deploy.runtime import load

    data, export = work / "speed_data", work / "speed_export"
    times = {}
    if not (data / "train.csv").is_file():
        times["synth"] = run([CLI, "synth", str(data), "--classes", "4", "--train-per-class", str(max(1, calib_videos // 4)),
                              "--test-per-class", "1", "--frames", "288", "--size", "256x312", "--workers", "2",
                              "--force"], log)
    if not (export / "manifest.json").is_file():
        times["export"] = run([CLI, "export", "-o", str(export), "-b", "slow8x8", "--frames", "288", "--size", "256x312",
                               "--precision", "fp32,int8", "--calibrate", str(data / "train.csv"),
                               "--calibrate-videos", str(calib_videos), "--force", "--no-verify"], log)
        # int8 only (fp32 at these settings is verified by benchmarks/speed's exports): per-stage errors at
        # the paper's size and the agreement check on 8 synthetic videos (random weights: reported only)
        times["verify_int8"] = run([CLI, "verify", str(export), "--runtime", "onnxruntime", "--precision", "int8",
                                    "--graph", "portable", "--threads", str(THREADS)], log, ok=(0, 1))
    video = sorted((data / "videos").rglob("*.mp4"))[-1] if (data / "videos").is_dir() else sorted(data.rglob("*.mp4"))[-1]
    torch.set_num_threads(THREADS)
    deps = {
        "sfc_fp32": load(export, "onnxruntime", precision="fp32", threads=THREADS),
        "sfc_int8": load(export, "onnxruntime", precision="int8", threads=THREADS),
        "dense_int8": load(export, "onnxruntime", precision="int8", threads=THREADS),
    }
    cfg = deps["sfc_fp32"].config
    sfc_in = model_input(video, "sfc", cfg, deps["sfc_fp32"].input_spec).tensor
    dense_in = model_input(video, "dense", cfg).tensor
    call = {
        "sfc_fp32": lambda: deps["sfc_fp32"].predict(sfc_in),
        "sfc_int8": lambda: deps["sfc_int8"].predict(sfc_in),
        "dense_int8": lambda: deps["dense_int8"].predict_clips(dense_in),
    }
    logits = {name: fn() for name, fn in call.items()}  # warm-up (session creation, first run)
    seconds: dict[str, list[float]] = {name: [] for name in call}
    loads = [load_avg()]
    for _ in range(rounds):
        for name, fn in call.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
        loads.append(load_avg())
    for dep in deps.values():
        dep.close()
    med = {name: sorted(s)[len(s) // 2] for name, s in seconds.items()}
    vps = {name: 1.0 / m for name, m in med.items()}
    return {
        "setting": "slow8x8, 288 raw frames -> 36 sampled at 256x312, tau 2, split res3; dense 30 x 8x256x256; "
                   "random weights; ONNX Runtime CPU provider, 2 intra-op threads; one video at a time",
        "video": video.name, "sfc_input": list(sfc_in.shape), "dense_input": list(dense_in.shape),
        "rounds": rounds, "seconds": seconds, "median_s": med, "videos_per_s": vps,
        "int8_sfc_over_fp32_sfc": vps["sfc_int8"] / vps["sfc_fp32"],
        "int8_sfc_over_int8_dense": vps["sfc_int8"] / vps["dense_int8"],
        "sfc_int8_vs_fp32_logits_max_abs": float((logits["sfc_int8"] - logits["sfc_fp32"]).abs().max()),
        "load_avg_during": loads, "step_seconds": times, "export": export_stats(export),
    }


def part_stage_times(export: Path) -> dict:
    """Per-stage seconds (head, sfc, tail) of fp32 and int8 on the speed part's export, 2 threads, 2 runs each."""
    import torch

    from sfc_deploy.runtime import load

    out = {}
    inp = json.loads((export / "manifest.json").read_text())["input"]
    x = torch.randn(1, 3, inp["frames"], *inp["size"])
    for precision in ("fp32", "int8"):
        with load(export, "onnxruntime", precision=precision, threads=THREADS) as dep:
            feeds = {"head": {"video": x}}
            feeds["sfc"] = {"f_head": dep.runner("head").infer(feeds["head"])["f_head"]}
            feeds["tail"] = {"f_sfc": dep.runner("sfc").infer(feeds["sfc"])["f_sfc"]}
            for part, feed in feeds.items():
                runner = dep.runner(part)
                runner.infer(feed)
                t = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    runner.infer(feed)
                    t.append(time.perf_counter() - t0)
                out[f"{part}.{precision}"] = min(t)
    return out


def part_unfolded(export: Path, work: Path) -> dict:
    """The head quantised as exported (3D convolutions) against the folded graph ONNX Runtime serves
    (2D convolutions): why int8 is made from ``*.ort.fp32.onnx``. Calibrated on 2 random inputs
    (ranges do not change the speed); best of 2 runs at 2 threads."""
    import onnxruntime as ort
    import torch

    from sfc_deploy.export.quantize import quantize_graph

    inp = json.loads((export / "manifest.json").read_text())["input"]
    x = torch.randn(1, 3, inp["frames"], *inp["size"]).numpy()
    dst = work / "head.unfolded.int8.onnx"
    if not dst.is_file():
        half = x.shape[2] // 2
        quantize_graph(export / "head.fp32.onnx", dst, [{"video": x[:, :, :half]}, {"video": x[:, :, half:]}])
    out = {}
    for name, path in (("head.fp32 (3D convs)", export / "head.fp32.onnx"), ("head.int8 from 3D graph", dst),
                       ("head.ort.fp32 (folded)", export / "head.ort.fp32.onnx"),
                       ("head.ort.int8 (served)", export / "head.ort.int8.onnx")):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = THREADS, 1, 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sess.run(None, {"video": x})
        t = []
        for _ in range(2):
            t0 = time.perf_counter()
            sess.run(None, {"video": x})
            t.append(time.perf_counter() - t0)
        out[name] = min(t)
    return out


# --- agreement ------------------------------------------------------------------------------------
def part_agreement(work: Path, log: Path, *, quick: bool, backbone_epochs: int = 40) -> dict:
    data, bb, sfc, export = work / "data", work / "backbone", work / "sfc", work / "export"
    times = {}
    per_class = ("3", "2") if quick else ("20", "15")
    if not (data / "test.csv").is_file():
        times["synth"] = run([CLI, "synth", str(data), "--classes", "8", "--train-per-class", per_class[0],
                              "--test-per-class", per_class[1], "--workers", "2", "--seed", "0", "--force"], log)
    weights = bb / "backbone.safetensors"
    if not weights.is_file():
        times["train_backbone"] = run([
            CLI, "train-backbone", str(data / "train.csv"), "-o", str(bb), "-b", "slow8x8_tiny", "--short-side", "64",
            "--epochs", "2" if quick else str(backbone_epochs), "--clips-per-video", "2", "--batch-size", "16", "--lr", "0.05",
            "--no-flip", "--threads", str(THREADS), "--force"], log)
    if not (sfc / "sfc.safetensors").is_file():
        times["train_sfc"] = run([
            CLI, "train", str(data / "train.csv"), "-o", str(sfc), "-b", "slow8x8_tiny", "--checkpoint", str(weights),
            "--tau", "2", "--epochs", "1" if quick else "4", "--milestones", "3,4", "--lr", "0.01", "--batch-size", "4",
            "--clip-grad", "1.0", "--cache-views", "1", "--no-flip", "--threads", str(THREADS), "--force"], log)
    if not (export / "manifest.json").is_file():
        times["export"] = run([
            CLI, "export", "-o", str(export), "-b", "slow8x8_tiny", "--checkpoint", str(weights), "--sfc-checkpoint",
            str(sfc / "sfc.safetensors"), "--tau", "2", "--frames", "256", "--size", "64x80", "--precision", "fp32,int8",
            "--calibrate", str(data / "train.csv"), "--calibrate-videos", "16", "--force"], log, ok=(0, 1))
    summary = json.loads((bb / "summary.json").read_text()) if (bb / "summary.json").is_file() else {}
    return {
        "setting": "slow8x8_tiny trained on synthetic 8-class data (64x80, 256 frames); SFC tau 2; export 256 raw frames "
                   "-> 32 sampled at 64x80; int8 on ONNX Runtime vs fp32 on PyTorch eager, same export folder",
        "backbone_epochs": 2 if quick else backbone_epochs,
        "backbone_clip_accuracy": (summary.get("last") or {}).get("clip_acc"),
        **measure_agreement(export, data / "test.csv"), "step_seconds": times,
    }


def part_agreement_hard(work: Path, log: Path, accuracy_work: Path, *, calib_videos: int) -> dict:
    """Agreement on the accuracy benchmark's harder setting: its backbone (trained on clips of the standard
    set), its SFC of the default recipe (seed 0) and its 384-frame test videos; int8 calibrated on its
    training videos."""
    data, weights = accuracy_work / "data", accuracy_work / "backbone" / "backbone.safetensors"
    sfc = accuracy_work / "sfc" / "default_s0" / "sfc.safetensors"
    for need in (data / "test.csv", weights, sfc):
        if not need.is_file():
            sys.exit(f"{need} is missing: run benchmarks/accuracy/run.py --setting hard --work {accuracy_work} first")
    export = work / f"export_hard_{accuracy_work.name}"
    times = {"export": run([
        CLI, "export", "-o", str(export), "-b", "slow8x8_tiny", "--checkpoint", str(weights), "--sfc-checkpoint", str(sfc),
        "--frames", "384", "--size", "64x80", "--precision", "fp32,int8", "--calibrate", str(data / "train.csv"),
        "--calibrate-videos", str(calib_videos), "--force"], log, ok=(0, 1))}
    metrics = [json.loads(line) for line in (accuracy_work / "backbone" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "setting": "the accuracy benchmark's harder setting (benchmarks/accuracy/results_hard.md): slow8x8_tiny trained on "
                   "clips of 256-frame videos, SFC of the default recipe (seed 0, tau 2), its 80 test videos of 384 frames "
                   f"(action 10-20%); export 384 raw frames -> 48 sampled at 64x80; int8 calibrated on {calib_videos} of its "
                   "training videos; int8 on ONNX Runtime vs fp32 on PyTorch eager, same export folder",
        "backbone_clip_accuracy": metrics[-1].get("clip_acc") if metrics else None,
        "backbone_epochs": len(metrics), "calibration_videos": calib_videos,
        **measure_agreement(export, data / "test.csv"), "step_seconds": times,
    }


def measure_agreement(export: Path, test_csv: Path) -> dict:
    """Every test video through the fp32 PyTorch and the int8 ONNX Runtime deployment of ``export``, SFC and dense."""
    import torch

    from sfc_deploy.data.datasets import load_video_list
    from sfc_deploy.data.inputs import model_input
    from sfc_deploy.runtime import load

    torch.set_num_threads(THREADS)
    items = load_video_list(test_csv)
    rows = []
    with load(export, "pytorch", threads=THREADS) as ref, load(export, "onnxruntime", precision="int8", threads=THREADS) as q:
        cfg, spec = ref.config, q.input_spec
        for path, label in items:
            x = model_input(path, "sfc", cfg, spec).tensor
            crops = model_input(path, "dense", cfg).tensor
            with torch.no_grad():
                s32, d32 = ref.predict(x), ref.predict_clips(crops)
            s8, d8 = q.predict(x), q.predict_clips(crops)
            rows.append({"video": path.name, "label": label, "sfc_fp32": int(s32.argmax()), "sfc_int8": int(s8.argmax()),
                         "dense_fp32": int(d32.argmax()), "dense_int8": int(d8.argmax()),
                         "sfc_max_abs": float((s8 - s32).abs().max()), "dense_max_abs": float((d8 - d32).abs().max())})
    n = len(rows)
    frac = lambda f: sum(map(f, rows)) / n  # noqa: E731
    return {
        "test_videos": n,
        "sfc_top1_agreement": frac(lambda r: r["sfc_int8"] == r["sfc_fp32"]),
        "dense_top1_agreement": frac(lambda r: r["dense_int8"] == r["dense_fp32"]),
        "top1": {k: frac(lambda r, k=k: r[k] == r["label"]) for k in ("sfc_fp32", "sfc_int8", "dense_fp32", "dense_int8")},
        "max_abs_logit_diff": {"sfc": max(r["sfc_max_abs"] for r in rows), "dense": max(r["dense_max_abs"] for r in rows)},
        "rows": rows, "export": export_stats(export),
    }


# --- report ---------------------------------------------------------------------------------------
def write_report(out: Path, result: dict) -> None:
    from sfc_deploy.common.atomic import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    lines = ["# int8 on the CPU (regenerate: `.venv/bin/python benchmarks/int8/run.py`)", ""]
    env = result.get("environment", {})
    lines += [f"Machine: {env.get('cpu')} ({env.get('cores')} cores, shared with other jobs: load averages recorded "
              f"below), {env.get('platform')}; onnxruntime {env.get('onnxruntime')}, torch {env.get('torch')}. "
              f"Created {result.get('created')}.", ""]
    sp = result.get("speed")
    if sp:
        v = sp["videos_per_s"]
        lines += ["## Speed (ONNX Runtime, CPU provider, 2 threads)", "", sp["setting"] + ".", "",
                  "| strategy | precision | median s/video | videos/s |", "|---|---|---|---|"]
        for name, label in (("sfc_fp32", "SFC tau=2|fp32"), ("sfc_int8", "SFC tau=2|int8 (SFC module fp32)"),
                            ("dense_int8", "dense 30-crop|int8")):
            lines.append(f"| {label} | {sp['median_s'][name]:.3g} | {v[name]:.3g} |")
        target = sp["int8_sfc_over_fp32_sfc"] >= 1.8
        lines += ["", f"**int8 SFC / fp32 SFC: {sp['int8_sfc_over_fp32_sfc']:.2f}x videos/s** (target >= 1.8x: "
                  f"{'met' if target else 'NOT met'}); int8 SFC / int8 dense: {sp['int8_sfc_over_int8_dense']:.2f}x.",
                  f"Timed rounds: {sp['rounds']} (after one warm-up), round-robin over the three; load average during "
                  f"the run: {sp['load_avg_during']}.", ""]
        st = sp.get("stage_seconds")
        if st:
            lines += ["Per stage (random input, best of 2, same threads):", "", "| stage | fp32 s | int8 s | speed-up |",
                      "|---|---|---|---|"]
            for part in ("head", "sfc", "tail"):
                lines.append(f"| {part} | {st[f'{part}.fp32']:.3g} | {st[f'{part}.int8']:.3g} | "
                             f"{st[f'{part}.fp32'] / st[f'{part}.int8']:.2f}x |")
            lines.append("")
        hu = sp.get("head_unfolded_vs_folded_s")
        if hu and "error" not in hu:
            lines += ["Which graph to quantise (head, 36x256x312, best of 2):", "", "| graph | s |", "|---|---|",
                      *[f"| {k} | {v:.3g} |" for k, v in hu.items()], ""]
    hard = sorted(k for k in result if k.startswith("agreement_hard"))
    for key, title, videos in (("agreement", "Agreement with fp32 (trained tiny model)", 160),
                               *((k, "Agreement with fp32 on the accuracy benchmark's harder setting"
                                  + (f" ({result[k]['backbone_epochs']}-epoch backbone)" if k != "agreement_hard" else ""), 200)
                                 for k in hard)):
        ag = result.get(key)
        if not ag:
            continue
        lines += [f"## {title}", "", ag["setting"] + ".", "",
                  f"Backbone: {ag.get('backbone_epochs')} epochs on {videos} training videos, clip accuracy in its last "
                  f"training epoch {ag['backbone_clip_accuracy'] or 0:.1%}.", "",
                  "| strategy | top-1 agreement int8 vs fp32 | top-1 fp32 | top-1 int8 | max abs logit diff |",
                  "|---|---|---|---|---|",
                  f"| SFC tau=2 | {ag['sfc_top1_agreement']:.1%} | {ag['top1']['sfc_fp32']:.1%} | {ag['top1']['sfc_int8']:.1%} "
                  f"| {ag['max_abs_logit_diff']['sfc']:.3g} |",
                  f"| dense 30-crop | {ag['dense_top1_agreement']:.1%} | {ag['top1']['dense_fp32']:.1%} | "
                  f"{ag['top1']['dense_int8']:.1%} | {ag['max_abs_logit_diff']['dense']:.3g} |", "",
                  f"{ag['test_videos']} test videos (one video = {1 / ag['test_videos']:.1%}). Target >= 99% agreement: "
                  f"{'met' if min(ag['sfc_top1_agreement'], ag['dense_top1_agreement']) >= 0.99 else 'NOT met'}.", ""]
    if result.get("notes"):
        lines += ["## Notes", "", *result["notes"], ""]
    atomic_write_text(out / "README.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sfc-int8"), help="data, models, exports (not committed)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--part", choices=("all", "speed", "agreement", "agreement-hard"), default="all",
                        help="agreement-hard: agreement on the accuracy benchmark's harder setting (--accuracy-work)")
    parser.add_argument("--accuracy-work", type=Path, default=Path("/tmp/sfc-accuracy-hard"),
                        help="agreement-hard: the --work folder of benchmarks/accuracy/run.py --setting hard")
    parser.add_argument("--hard-calibrate-videos", type=int, default=32, help="agreement-hard: calibration videos")
    parser.add_argument("--hard-key", default="agreement_hard",
                        help="agreement-hard: the results.json key (another --accuracy-work keeps the earlier one)")
    parser.add_argument("--rounds", type=int, default=3, help="timed videos per strategy")
    parser.add_argument("--calibrate-videos", type=int, default=8, help="speed part: calibration videos")
    parser.add_argument("--backbone-epochs", type=int, default=40, help="agreement: backbone training epochs")
    parser.add_argument("--quick", action="store_true", help="agreement: tiny sizes, checks the recipe runs")
    parser.add_argument("--fresh", action="store_true", help="delete --work first (default: reuse what is there)")
    args = parser.parse_args()
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.work / "log.txt"
    old = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").is_file() else {}
    import onnxruntime
    import torch

    from sfc_deploy.common.environment import environment

    env = environment()
    result = {**old, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": env,
              "environment": {"cpu": env.get("cpu") or platform.processor(), "cores": env.get("machine", {}).get("logical_cores"),
                              "platform": platform.platform(), "onnxruntime": onnxruntime.__version__,
                              "torch": torch.__version__}}
    if args.part in ("all", "agreement"):
        result["agreement"] = part_agreement(args.work, log, quick=args.quick, backbone_epochs=args.backbone_epochs)
        write_report(args.out, result)  # each part's results as soon as they exist
    if args.part == "agreement-hard":
        if not args.hard_key.startswith("agreement_hard"):
            sys.exit("--hard-key must start with agreement_hard")
        result[args.hard_key] = part_agreement_hard(args.work, log, args.accuracy_work,
                                                       calib_videos=args.hard_calibrate_videos)
        write_report(args.out, result)
    if args.part in ("all", "speed"):
        result["speed"] = part_speed(args.work, log, rounds=args.rounds, calib_videos=args.calibrate_videos)
        result["speed"]["stage_seconds"] = part_stage_times(args.work / "speed_export")
        write_report(args.out, result)
        try:
            result["speed"]["head_unfolded_vs_folded_s"] = part_unfolded(args.work / "speed_export", args.work)
        except Exception as exc:  # a side measurement: record why it is missing, keep the rest
            result["speed"]["head_unfolded_vs_folded_s"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        write_report(args.out, result)
    print(f"wrote {args.out / 'results.json'} and README.md")


if __name__ == "__main__":
    main()
