"""Gather what ``benchmarks/gpu/run.sh`` wrote into one ``results.json`` and a Markdown summary.

    python benchmarks/gpu/collect.py --work WORK --out OUT      (run.sh calls it after every step)
    python benchmarks/gpu/collect.py --record OUT_OR_TARBALL    (writes benchmarks/gpu/results.{json,md})

The summary names the GPU, driver, CUDA and torch versions, every step's exit status and seconds,
the gpu tests' counts, and per bench run: videos/s of SFC and 30-crop, the speed-up, peak GPU memory
of each and its ratio, and the share of the measured matmul peak; end to end on real files, and
classify one video per call against --batch N, and the stage profile (ms per video and % of the
matmul peak per stage, the share in layout copies). Nothing here measures anything:
it only reads the files the steps wrote, so a missing file shows as a missing row, never a number.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from sfc_deploy.common.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(work: Path) -> list[dict]:
    rows = []
    path = work / "steps.tsv"
    for line in path.read_text().splitlines() if path.is_file() else ():
        name, rc, seconds = line.split("\t")
        status = {"0": "ok", "124": "time limit", "137": "time limit", "skipped": "skipped (budget spent)"}
        rows.append({"step": name, "exit": int(rc) if rc.isdigit() else None, "seconds": int(seconds),
                     "status": status.get(rc, "failed")})
    return rows


def _tests(work: Path) -> dict | None:
    path = work / "gpu_tests.xml"
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {**counts, "failed": failed}


def _bench_row(name: str, report: dict) -> dict:
    sfc, dense = report.get("sfc") or {}, report.get("dense") or {}
    gpu_sfc, gpu_dense = sfc.get("gpu_memory") or {}, dense.get("gpu_memory") or {}
    return {
        "run": name,
        "runtime": report.get("runtime"),
        "device": report.get("device"),
        "precision": report.get("precision"),
        "options": report.get("options"),
        # the pytorch runtime's serving rewrite (BN folded, unit-time 3D convs as 2D); False: bench --as-trained
        "inference_rewrite": (report.get("protocol") or {}).get("inference_rewrite"),
        "sfc_videos_per_s": sfc.get("videos_per_s"),
        "dense_videos_per_s": dense.get("videos_per_s"),
        "sfc_batch": sfc.get("batch_size"),
        "dense_batch": dense.get("batch_size"),
        "sfc_latency_ms": sfc.get("latency_ms"),
        "dense_latency_ms": dense.get("latency_ms"),
        "speedup": report.get("speedup"),
        "sfc_video_gpu_mb": gpu_sfc.get("video_mb"),
        "dense_video_gpu_mb": gpu_dense.get("video_mb"),
        "sfc_peak_gpu_mb": gpu_sfc.get("peak_allocated_mb"),
        "dense_peak_gpu_mb": gpu_dense.get("peak_allocated_mb"),
        "gpu_peak_ratio": report.get("gpu_peak_ratio"),
        "gpu_memory_ratio": report.get("gpu_memory_ratio", report.get("memory_ratio")),
        "sfc_peak_fraction": sfc.get("peak_fraction"),
        "sfc_topk": (sfc.get("topk_cuda") or {}).get("impl"),  # the SFC op's CUDA implementation (pytorch runtime)
        "dense_peak_fraction": dense.get("peak_fraction"),
        "matmul_peak_gflops": report.get("matmul_peak_gflops"),
        "sfc_videos_per_80gb": gpu_sfc.get("videos_per_80gb"),
        "dense_videos_per_80gb": gpu_dense.get("videos_per_80gb"),
        # real files end to end (bench --video): decoding threads overlapped with the model
        "e2e_speedup": report.get("e2e_speedup"),
        "sfc_e2e_videos_per_s": sfc.get("e2e_videos_per_s"),
        "dense_e2e_videos_per_s": dense.get("e2e_videos_per_s"),
        "sfc_overlap_efficiency": sfc.get("overlap_efficiency"),
        "dense_overlap_efficiency": dense.get("overlap_efficiency"),
        "sfc_decode_s_per_video": sfc.get("decode_s_per_video"),
        "dense_decode_s_per_video": dense.get("decode_s_per_video"),
        "decode_workers": (sfc.get("e2e") or {}).get("workers"),
    }


def gather(work: Path) -> dict:
    env = _json(work / "environment.json") or {}
    benches = {p.stem.removeprefix("bench-"): _json(p) for p in sorted(work.glob("bench-*.json"))}
    trains = {p.stem.removeprefix("train-"): _json(p) for p in sorted(work.glob("train-*.json"))}
    classify = _json(work / "classify.json")
    stages = _json(work / "profile-stages.json")
    return {
        "schema": "sfc-deploy-gpu-check/1",
        "environment": env,
        "steps": _steps(work),
        "gpu_tests": _tests(work),
        "bench": [_bench_row(k, v) for k, v in benches.items() if isinstance(v, dict)],
        "training": {k: v for k, v in trains.items() if v is not None},
        "classify": classify if isinstance(classify, dict) else None,
        "stages": _stages(stages) if isinstance(stages, dict) else None,
    }


def _stages(record: dict) -> dict:
    """profile_stages.py's record without its per-pass seconds and op lists (they stay in the archive)."""
    variants = {}
    for label, v in (record.get("variants") or {}).items():
        if "error" in v:
            variants[label] = {"error": v["error"]}
            continue
        variants[label] = {
            **{k: v.get(k) for k in ("sfc_ms_per_video", "dense_ms_per_video", "sfc_videos_per_s", "dense_videos_per_s",
                                     "speedup")},
            "stages": {name: {**{k: s.get(k) for k in ("input", "median_ms", "ms_per_video", "tflops", "peak_fraction")},
                              "shares": (s.get("profile") or {}).get("shares"),
                              "top_kernels": [k["name"][:120] for k in ((s.get("profile") or {}).get("top_kernels") or [])[:3]]}
                       for name, s in (v.get("stages") or {}).items()},
        }
    return {"device_name": record.get("device_name"), "precision": record.get("precision"),
            "sfc_batch": record.get("sfc_batch"), "crops": record.get("crops"), "peak_gflops": record.get("peak_gflops"),
            "variants": variants}


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "/".join(_fmt(value.get(k), ".1f") for k in ("p50", "p99"))
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def markdown(results: dict) -> str:
    env = results["environment"]
    libs = {**(env.get("libraries") or {}), **(env.get("gpu") or {})}
    lines = ["# GPU check (benchmarks/gpu/run.sh)", "",
             f"Device: {env.get('device', '?')}; driver {libs.get('driver', '?')}; "
             f"CUDA {libs.get('cuda', '?')}; torch {env.get('torch', '?')}; Python {env.get('python', '?')}.", "",
             "| step | status | seconds |", "| --- | --- | --- |"]
    for s in results["steps"]:
        code = "" if s["exit"] is None else f" (exit {s['exit']})"
        lines.append(f"| {s['step']} | {s['status']}{code} | {s['seconds']} |")
    tests = results["gpu_tests"]
    if tests:
        lines += ["", f"gpu tests: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
                      f"{tests['skipped']} skipped" + (f" (failed: {', '.join(tests['failed'])})" if tests["failed"] else "")]
    if results["bench"]:
        lines += ["", "| run | runtime | precision | SFC videos/s (batch) | 30-crop videos/s (batch) | speed-up | "
                      "SFC / 30-crop GPU MB per video | memory ratio | SFC % of matmul peak | SFC p50/p99 ms | SFC TopK |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for b in results["bench"]:
            pct = _pct(b["sfc_peak_fraction"])
            lines.append(
                f"| {b['run']} | {b['runtime']} | {b['precision']} | {_fmt(b['sfc_videos_per_s'])} ({_fmt(b['sfc_batch'], 'd')}) "
                f"| {_fmt(b['dense_videos_per_s'])} ({_fmt(b['dense_batch'], 'd')}) | {_fmt(b['speedup'], '.2f')}x "
                f"| {_fmt(b['sfc_video_gpu_mb'], '.0f')} / {_fmt(b['dense_video_gpu_mb'], '.0f')} "
                f"| {_fmt(b['gpu_memory_ratio'], '.2f')}x | {_fmt(pct)}% | {_fmt(b['sfc_latency_ms'])} | {_fmt(b.get('sfc_topk'))} |")
    e2e = [b for b in results["bench"] if b.get("e2e_speedup") is not None]
    if e2e:
        lines += ["", "| run (real mp4 files) | SFC videos/s end to end (model only) | 30-crop videos/s end to end (model only) | "
                      "speed-up end to end | overlap efficiency SFC / 30-crop | decode s per video SFC / 30-crop | decoding threads |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for b in e2e:
            lines.append(
                f"| {b['run']} | {_fmt(b['sfc_e2e_videos_per_s'])} ({_fmt(b['sfc_videos_per_s'])}) "
                f"| {_fmt(b['dense_e2e_videos_per_s'])} ({_fmt(b['dense_videos_per_s'])}) | {_fmt(b['e2e_speedup'], '.2f')}x "
                f"| {_fmt(_pct(b['sfc_overlap_efficiency']), '.0f')}% / {_fmt(_pct(b['dense_overlap_efficiency']), '.0f')}% "
                f"| {_fmt(b['sfc_decode_s_per_video'], '.3f')} / {_fmt(b['dense_decode_s_per_video'], '.3f')} "
                f"| {_fmt(b['decode_workers'], 'd')} |")
    c = results.get("classify")
    if c:
        one, many = c["runs"]["1"], c["runs"][str(c["batch"])]
        lines += ["", f"classify end to end ({c['videos']} mp4 files, {c['workers']} decoding threads, {c['runtime']} "
                      f"{c['precision']} on {c['device']}): {_fmt(one['videos_per_s'])} videos/s one video per call, "
                      f"{_fmt(many['videos_per_s'])} with --batch {c['batch']} ({_fmt(c['batch_speedup'], '.2f')}x); "
                      f"model {_fmt(one['model_s'], '.2f')} / {_fmt(many['model_s'], '.2f')} s, decode "
                      f"{_fmt(one['decode_s'], '.2f')} / {_fmt(many['decode_s'], '.2f')} s in all; top-1 agreement "
                      f"{_fmt(_pct(c['top1_agreement']), '.0f')}%, largest top-1 probability difference "
                      f"{_fmt(c['max_top1_prob_diff'], '.2g')}"]
    st = results.get("stages")
    if st:
        lines += ["", f"stages ({st['precision']}, SFC {st['sfc_batch']} videos per pass, 30-crop {st['crops']} crops per pass; "
                      "sums of the stages' medians, without the streaming driver: compare within this table): ms per video, "
                      "% of the matmul peak, share of layout copies in one profiled pass", "",
                  "| variant | head | sfc | tail | 30-crop clip | SFC / 30-crop videos/s | speed-up |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for label, v in st["variants"].items():
            if "error" in v:
                lines.append(f"| {label} | failed: {v['error']} | | | | | |")
                continue
            cells = []
            for name in ("head", "sfc", "tail", "clip"):
                s = v["stages"].get(name) or {}
                copies = (s.get("shares") or {}).get("layout copies")
                cells.append(f"{_fmt(s.get('ms_per_video'), '.2f')} ms, {_fmt(_pct(s.get('peak_fraction')))}%, "
                             f"copies {_fmt(_pct(copies), '.0f')}%")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(v['sfc_videos_per_s'])} / "
                         f"{_fmt(v['dense_videos_per_s'])} | {_fmt(v['speedup'], '.2f')}x |")
    for name, record in results["training"].items():
        lines += ["", f"training {name}: " + json.dumps(record, sort_keys=True)[:600]]
    return "\n".join(lines) + "\n"


def write(results: dict, json_path: Path, markdown_path: Path) -> None:
    """Each file whole or not at all: steps that run side by side each call the collector (the
    package's atomic write; importing it does not import torch)."""
    atomic_write_text(json_path, json.dumps(results, indent=2, sort_keys=True) + "\n")
    atomic_write_text(markdown_path, markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="run.sh's working folder")
    parser.add_argument("--out", type=Path, help="where results.json and summary.md go")
    parser.add_argument("--record", type=Path, help="a run's OUT folder or run.tar.gz: record it in benchmarks/gpu/")
    args = parser.parse_args(argv)
    if args.record is not None:
        source = args.record
        with tempfile.TemporaryDirectory() as tmp:
            tarball = source / "run.tar.gz" if source.is_dir() else source
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
            results = gather(Path(tmp))
        write(results, HERE / "results.json", HERE / "results.md")
        print(f"recorded {HERE / 'results.json'} and {HERE / 'results.md'}")
        return 0
    if args.work is None or args.out is None:
        parser.error("pass --work and --out, or --record")
    write(gather(args.work), args.out / "results.json", args.out / "summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
