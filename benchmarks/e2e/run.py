"""End to end on real files: decoding, the model, and the two overlapped (issue 15, items 1 and 2).

For 640x360 and 1280x720 (10 s at 30 fps, 300 frames, H.264 with a long GOP of 250, written by the
project's ``write_video``; the textured panning scene with moving objects of ``benchmarks/decode``),
``sfc-deploy bench`` is run on the files (slow8x8 at the paper's settings, tau 2, ONNX Runtime fp32,
all cores) and reports per strategy, dense 30-crop and SFC:

* decode s/video: decoding and preprocessing one video into the strategy's input, alone (dense: the
  frames of its 10 clips, cropped 3 ways; SFC: every 8th frame of the whole video), with the same
  decoder and frame-selection rules (:func:`sfc_deploy.data.inputs.model_input`);
* model s/video and the model-only videos/s (the paper's way, decoding excluded);
* e2e videos/s: the same videos again, decoded ahead by the prefetcher while the model serves the
  current one (steady state: one untimed lead video fills the queue);
* the overlap efficiency: e2e / model-only videos/s, and the e2e speed-up of SFC over 30-crop beside
  the model-only one.

Then SFC alone at 720p, once per prefetch setting (threads or spawned processes, 1 or 2 decoding
workers), in fresh workers one after the other, to choose between threads and processes.

    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/e2e/run.py            # ~10 min on 2 cores
    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/e2e/run.py --videos 4 # steadier, longer
    .venv/bin/python benchmarks/e2e/run.py --markdown-only   # README.md again from results.json

Writes ``results.json`` (the full bench reports, the machine, load averages) and ``README.md`` here.
Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

from sfc_deploy.bench.report import E2E_TARGET
from sfc_deploy.bench.suite import BenchOptions, ensure_export, run_bench
from sfc_deploy.bench.worker import WorkerJob, run_in_fresh_process
from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS
from sfc_deploy.data.video import probe_video, write_video
from sfc_deploy.models.parts import SFC_PIECES
from sfc_deploy.runtime.pipeline import STREAM_SFC_FROM

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FPS, SECONDS, GOP = 30, 10, 250
SIZES = {"360p": (360, 640), "720p": (720, 1280)}
FILES_PER_SIZE = 2
#: prefetch settings compared on SFC at 720p: (kind, decoding workers, --fast-decode)
SETTINGS = (("thread", 1, False), ("thread", 2, False), ("process", 1, False), ("process", 2, False),
            ("thread", 2, True), ("process", 2, True))


def _decode_bench():
    """benchmarks/decode/run.py as a module: its scene renderer, so both benchmarks decode the same content."""
    spec = importlib.util.spec_from_file_location("decode_bench", HERE.parent / "decode" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def make_files(work: Path) -> dict[str, list[str]]:
    render = _decode_bench().render
    files: dict[str, list[str]] = {}
    for res, (h, w) in SIZES.items():
        for seed in range(FILES_PER_SIZE):
            path = work / f"{res}_gop{GOP}_seed{seed}.mp4"
            if not path.exists():
                tmp = path.with_suffix(".tmp.mp4")
                write_video(tmp, render(h, w, FPS * SECONDS, seed=seed), FPS, gop=GOP)
                tmp.rename(path)
                print(f"wrote {path}", flush=True)
            files.setdefault(res, []).append(str(path))
    return files


def _progress(kind: str, data: dict) -> None:
    if kind == "message":
        print(f"  {data['text']}", flush=True)
    elif data.get("event") == "video":
        print(f"    {data['label']}: {data['kind']} video {data['seconds']:.2f} s", flush=True)


def bench_files(files: list[str], videos: int) -> dict:
    opts = BenchOptions(video_files=tuple(Path(f) for f in files), videos=videos, cache_dir=REPO / "cache")
    return run_bench(opts, _progress)


def compare_prefetch(files: list[str], export: Path, videos: int, threads: int) -> list[dict]:
    rows = []
    for kind, workers, fast in SETTINGS:
        print(f"  SFC, prefetch on {workers} {kind}(s){', --fast-decode' if fast else ''}", flush=True)
        job = WorkerJob(strategy="sfc", export_dir=str(export), threads=threads, videos=videos, head_chunk=12,
                        video_files=files, workers=workers, prefetch=DEFAULT_DEPTH, prefetch_kind=kind, fast_decode=fast)
        r = run_in_fresh_process(job)
        model_vps = len(r["latencies_s"]) / sum(r["latencies_s"])
        rows.append({"kind": kind, "workers": workers, "fast_decode": fast, "prefetch": DEFAULT_DEPTH,
                     "model_only_videos_per_s": model_vps,
                     "e2e_videos_per_s": r["e2e"]["videos_per_s"],
                     "overlap_efficiency": r["e2e"]["videos_per_s"] / model_vps,
                     "overlap_efficiency_best": least_contended(r),
                     "decode_s_per_video": sum(r["decode_s"]) / len(r["decode_s"]),
                     "e2e_decode_s_per_video": sum(r["e2e"]["decode_s"]) / len(r["e2e"]["decode_s"]),
                     "e2e_wait_s": r["e2e"]["wait_s"], "e2e_model_s": r["e2e"]["model_s"]})
    return rows


def least_contended(run: dict) -> float:
    """The overlap efficiency of the least-contended videos: fastest model-only pass / fastest end-to-end
    cycle (each cycle holds one model pass and, running beside it, one decode)."""
    return min(run["latencies_s"]) / min(run["e2e"]["cycle_s"])


def _slowdown(row: dict) -> float:
    """Mean model seconds of the end-to-end passes / mean of the serial ones (same videos, same worker)."""
    e2e = row["e2e"]["model_s"]
    return (sum(e2e) / len(e2e)) / row["model_s_per_video"]


def _workers(n: int, kind: str) -> str:
    return f"{n} {kind}" + ("" if n == 1 else "es" if kind == "process" else "s")


def _row(res: str, name: str, r: dict) -> str:
    return (f"| {res} | {name} | {r['decode_s_per_video']:.3f} | {r['model_s_per_video']:.2f} | "
            f"{100 * r['decode_share']:.0f}% | {r['e2e_videos_per_s']:.3f} | {r['videos_per_s']:.3f} | "
            f"**{100 * r['overlap_efficiency']:.0f}%** | {100 * least_contended(r):.0f}% |")


def to_markdown(doc: dict) -> str:
    first = next(iter(doc["runs"].values()))
    m, lib = first["machine"], first["libraries"]
    e2e = first["sfc"]["e2e"]
    lines = [
        "# End to end on real files: decoding measured and overlapped with the model (issue 15, items 1-2)",
        "",
        "Regenerate: `flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/e2e/run.py` (writes `results.json` and this "
        f"file; {doc['wall_min']:.0f} min this time).",
        "",
        f"**Machine:** {m['cpu']}, {m.get('usable_cores', m.get('logical_cores'))} cores, {m['memory_gb']} GB; "
        f"Python {lib.get('python')}, torch {lib.get('torch')}, ONNX Runtime {lib.get('onnxruntime')}, PyAV {lib.get('av')}. "
        f"**Load:** load average {doc['load'][0][0]:.1f} at the start, {doc['load'][1][0]:.1f} at the end (this run's own "
        "work included); no other benchmark ran beside it (a lock serialises them), light jobs may have, so figures "
        "carry noise; ratios are taken inside one worker, side by side.",
        "",
        f"**Model:** slow8x8 at the paper's settings (export for 288 raw frames, 256x312, tau 2, split res3; random "
        f"weights), ONNX Runtime {first['precision']} on {first['threads']} threads, SFC head streamed in chunks of 12 "
        + _sfc_mode(doc)
        + "**Files:** per size, 2 files of 10 s at 30 fps (300 frames), H.264 (libx264 crf 17 veryfast, yuv420p, "
        f"GOP {GOP}) written by `write_video`, a panning textured scene with moving objects and noise (the renderer of "
        "`benchmarks/decode`). SFC reads every 8th frame of the whole video (38 frames, short side 256, centre crop "
        "256x312); dense reads the (up to) 80 frames of its 10 clips (30 crops of 8x256x256). Same decoder (PyAV, "
        "`read_frames`), same input function (`model_input`).",
        "",
        f"**Protocol** (`sfc-deploy bench --video ...`, a fresh worker per strategy): after the memory and warm-up videos, "
        f"{e2e['videos']} timed videos one at a time, each decoded alone (decode s/video) and then run (model s/video); "
        f"then the same {e2e['videos']} videos end to end, decoded ahead by the prefetcher ({_workers(e2e['workers'], e2e['kind'])} "
        f"decoding, {e2e['prefetch']} videos ahead) while the model serves the current one, in the steady state of "
        f"a long list: one untimed lead video fills the queue and {e2e['prefetch']} more follow the timed ones (decoded, "
        "not run), so every timed model pass overlaps one decode. Overlap efficiency = e2e videos/s / model-only "
        "videos/s (means, the bench's definition); least-contended efficiency = fastest model-only pass / fastest "
        "end-to-end cycle, less sensitive to the other jobs on the machine.",
        "",
        "| size | strategy | decode s/video | model s/video | decode share | e2e videos/s | model-only videos/s | overlap efficiency | least-contended efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res, rep in doc["runs"].items():
        lines.append(_row(res, "dense 30-crop", rep["dense"]))
        lines.append(_row(res, "SFC tau=2", rep["sfc"]))
    lines += ["", "| size | SFC vs 30-crop, end to end | SFC vs 30-crop, model only |", "|---|---|---|"]
    for res, rep in doc["runs"].items():
        lines.append(f"| {res} | **{rep['e2e_speedup']:.2f}x** | {rep['speedup']:.2f}x |")
    lines += ["", f"**Goal (SFC end to end >= {100 * E2E_TARGET:.0f}% of its model-only throughput on the CPU):** "
              + "; ".join(f"{res} {100 * rep['sfc']['overlap_efficiency']:.0f}% "
                          f"({'met' if rep['sfc']['overlap_efficiency'] >= E2E_TARGET else 'NOT met'})"
                          for res, rep in doc["runs"].items()) + "."]
    cmp_rows = doc["prefetch_settings"]
    lines += ["", f"## Threads or processes, exact or reference-frame decoding (SFC, {doc['compare_size']}, fresh worker per "
              f"setting, {DEFAULT_DEPTH} ahead)", "",
              "`--fast-decode`: reference frames only, each wanted frame the nearest decoded one (its top-1 cost: "
              "`benchmarks/decode/fast_decode_accuracy.md`).", "",
              "| decoding workers | decode s/video (alone) | decode s/video (overlapped) | e2e videos/s | model-only videos/s | overlap efficiency | least-contended efficiency |",
              "|---|---|---|---|---|---|---|"]
    for r in cmp_rows:
        fast = ", --fast-decode" if r.get("fast_decode") else ""
        lines.append(f"| {_workers(r['workers'], r['kind'])}{fast} | {r['decode_s_per_video']:.3f} | "
                     f"{r['e2e_decode_s_per_video']:.3f} | {r['e2e_videos_per_s']:.3f} | {r['model_only_videos_per_s']:.3f} | "
                     f"{100 * r['overlap_efficiency']:.0f}% | {100 * r['overlap_efficiency_best']:.0f}% |")
    lines += ["", *reading(doc), ""]
    return "\n".join(lines) + "\n"


def reading(doc: dict) -> list[str]:
    """What the numbers say, computed from them (so a rerun rewrites it)."""
    lines = ["## Reading", ""]
    for res, rep in doc["runs"].items():
        sfc, dense, cores = rep["sfc"], rep["dense"], rep["threads"]
        model, decode = sfc["model_s_per_video"], sfc["decode_s_per_video"]
        bound = model / (model + decode / cores)
        lines.append(
            f"- {res}: SFC decodes a video in {decode:.2f} s and runs it in {model:.2f} s ({100 * sfc['decode_share']:.0f}% "
            f"of a serial run is decoding; dense: {100 * dense['decode_share']:.0f}%). The model already uses the "
            f"{cores} cores, so a decode beside it takes cycles from it: overlap hides the waiting, not the work. If a "
            f"decode costs its own time spread over the {cores} cores, the best overlap is about "
            f"model / (model + decode / {cores}) = {100 * bound:.0f}%; measured {100 * sfc['overlap_efficiency']:.0f}% "
            f"(least-contended {100 * least_contended(sfc):.0f}%). End to end, SFC is {rep['e2e_speedup']:.2f}x "
            f"30-crop against {rep['speedup']:.2f}x on the model alone. While a decode ran beside it, the model pass "
            f"itself took {_slowdown(sfc):.2f}x its serial time (dense: {_slowdown(dense):.2f}x), while the decode "
            f"alone took {100 * decode / model:.0f}% of SFC's model time.")
    rows = [r for r in doc["prefetch_settings"] if not r.get("fast_decode")]
    best = {kind: max((r for r in rows if r["kind"] == kind), key=lambda r: r["e2e_videos_per_s"]) for kind in ("thread", "process")}
    faster = max(best, key=lambda k: best[k]["e2e_videos_per_s"])
    contended = [r for r in rows if r["model_only_videos_per_s"] < 0.8 * doc["runs"][doc["compare_size"]]["sfc"]["videos_per_s"]]
    lines.append(
        f"- Threads or processes ({doc['compare_size']}, SFC): best end to end {best['thread']['e2e_videos_per_s']:.3f} videos/s "
        f"on threads ({_workers(best['thread']['workers'], 'thread')}), {best['process']['e2e_videos_per_s']:.3f} on "
        f"processes ({_workers(best['process']['workers'], 'process')}): {_workers(2, faster)[2:]} were faster here."
        + (f" Caution: {', '.join(_workers(r['workers'], r['kind']) for r in contended)} ran under other load (model-only "
           f"rate under 80% of the main table's), so efficiencies there are not comparable (over 100% where the end-to-end "
           "phase happened to be the less contended one)." if contended else ""))
    for r in (r for r in doc["prefetch_settings"] if r.get("fast_decode")):
        exact = next(e for e in rows if (e["kind"], e["workers"]) == (r["kind"], r["workers"]))
        lines.append(
            f"- `--fast-decode` ({_workers(r['workers'], r['kind'])}): decode alone {exact['decode_s_per_video']:.2f} -> "
            f"{r['decode_s_per_video']:.2f} s/video, end to end {exact['e2e_videos_per_s']:.3f} -> "
            f"{r['e2e_videos_per_s']:.3f} videos/s (overlap efficiency {100 * exact['overlap_efficiency']:.0f}% -> "
            f"{100 * r['overlap_efficiency']:.0f}%).")
    lines.append("- " + CHOICE)
    return lines


def _sfc_mode(doc: dict) -> str:
    """How SFC ran: streamed with the head (the export's pieces, long enough videos) or the whole-video graph."""
    if "stream_sfc_from" in doc:
        if not doc.get("sfc_streamed"):
            return "frames, SFC on the whole-video graph (the cached export predates SFC's streaming pieces). "
        return (f"frames; SFC on the whole-video graph, since SFC itself streams only from {doc['stream_sfc_from']} "
                "sampled frames and these videos have 38 (the export has the streaming pieces). ")
    if doc.get("sfc_streamed"):
        return "frames, SFC streamed with it (the export's SFC pieces). "
    return ("frames, SFC on the whole-video graph (the cached export predates SFC's streaming pieces"
            + (")" if "sfc_streamed" in doc else "; not recorded in this run)") + ". ")


#: The decision, written from the recorded run (results.json) and kept with the script.
CHOICE = ("**Chosen: threads** (the default of `--workers` 2 / `--prefetch` 4 in bench, predict, eval and "
          "classify). Across the runs on a machine with no other benchmark beside them, decoding processes and threads "
          "came within a few percent of each other, either one ahead, so the simpler threads stay. Since decoded "
          "frames are resized in uint8 (`benchmarks/decode/resize.md`: the float resize rounded to whole grey levels), "
          "preprocessing a decoded video costs a fraction of what it did, and since exact decoding no longer sends the "
          "decoder the H.264 frames no other frame refers to and nothing asked for (most B-frames; `read_frames`, "
          "bit-identical frames), SFC's every-8th-frame read decodes about half the frames: a decode beside the model "
          "takes less of the model's CPU on 2 cores (the bound model / (model + decode / 2) per size is above). "
          "Decode times alone swing by a quarter between runs on this shared machine, and the overlap by several "
          "points, so one run's margin over the 85% goal is within that noise. `--fast-decode` moved the overlap "
          "by -5 to +9 points across runs (noise of the same size) and costs SFC about a point of top-1, so it stays "
          "opt-in. One FFmpeg thread "
          "per decode, ONNX Runtime's intra-op threads without spinning, and decoding threads at nice 10 were tried "
          "only in side runs before the resize change and are not recorded here. Resizing in swscale while "
          "converting each frame was not adopted: it is another filter than the one the models were trained with, "
          "where the uint8 torch resize is the same filter, rounded.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2, help="timed videos per strategy (serial, then end to end); "
                        "the threads-or-processes comparison (SFC only) times 2 more")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sfc_e2e_bench",
                        help="where the test videos are written (kept between runs)")
    parser.add_argument("--markdown-only", action="store_true", help="re-render README.md from results.json")
    args = parser.parse_args()
    if args.markdown_only:
        atomic_write_text(HERE / "README.md", to_markdown(json.loads((HERE / "results.json").read_text())))
        return 0
    t0, load0 = time.perf_counter(), os.getloadavg()
    args.work.mkdir(parents=True, exist_ok=True)
    files = make_files(args.work)
    runs = {}
    for res, paths in files.items():
        print(f"{res}: {', '.join(Path(p).name for p in paths)} ({probe_video(paths[0]).num_frames} frames)", flush=True)
        runs[res] = bench_files(paths, args.videos)
    compare_size = "720p"
    export = ensure_export(BenchOptions(cache_dir=REPO / "cache"), 2.0)
    print(f"prefetch settings on SFC, {compare_size}", flush=True)
    settings = compare_prefetch(files[compare_size], export, args.videos + 2, next(iter(runs.values()))["threads"])
    doc = {"schema": "sfc-deploy-e2e/1", "runs": runs, "prefetch_settings": settings, "compare_size": compare_size,
           "files": {res: [{"path": Path(p).name, "bytes": Path(p).stat().st_size} for p in ps] for res, ps in files.items()},
           "load": [load0, os.getloadavg()], "wall_min": (time.perf_counter() - t0) / 60,
           "defaults": {"workers": DEFAULT_WORKERS, "prefetch": DEFAULT_DEPTH},
           "sfc_streamed": all((export / f"{p}.fp32.onnx").exists() for p in SFC_PIECES if p != "sfc_abs"),
           "stream_sfc_from": STREAM_SFC_FROM}
    atomic_write_text(HERE / "results.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(HERE / "README.md", to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
