"""Peak memory of one SFC video as the video grows: whole-video SFC vs streamed, on PyTorch and ONNX Runtime.

Regenerates ``results.json`` and ``README.md`` beside this file (run it under the shared lock on the 2-core
machine; about 25 minutes with the defaults, most of it the ONNX export and the whole-video cells)::

    flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/memory_streaming/run.py
    .venv/bin/python benchmarks/memory_streaming/run.py --runtimes pytorch --lengths 144,288    # a quick look

The model is slow8x8 at the paper's settings (split res3, tau 2, 256x312 frames, fp32) with random
weights, exported once (head, SFC and tail as ONNX, with SFC's streaming pieces, plus the weights the
PyTorch runtime serves). Each cell is one fresh bench worker process
(:func:`sfc_deploy.bench.worker.run_in_fresh_process`, the same code ``sfc-deploy bench --lengths``
runs): it loads the model, resets the kernel's peak-RSS mark, runs one synthetic video of
``ceil(raw / 8)`` sampled frames through head -> SFC -> tail, and reports the peak RSS above the loaded
model (``video_mem_mb``; the input tensor is made before the reset, so it is not counted). Modes:

* ``whole``: ``head_chunk`` off: the head and SFC on the whole time axis;
* ``streamed``: ``head_chunk`` 12 and ``stream_sfc_from`` 0: the head and SFC stream together at every
  length (``SFC.forward_streamed`` on PyTorch; the same driver on SFC's exported pieces on ONNX Runtime,
  :mod:`sfc_deploy.runtime.sfc_stream`). By default SFC streams from ``STREAM_SFC_FROM`` sampled frames
  only; below that the head still streams but its chunks are joined for the whole-video SFC graph.

``onnxruntime-no-arena`` is ONNX Runtime with every session's CPU memory arena off (the runner option
``cpu_arena=False``): buffers come from and go back to the system allocator run by run, where the default
(arena on, shrunk after every run, as ``sfc-deploy bench`` runs it) keeps what it has grown.

Speed (``--speed-lengths``): SFC seconds per video with the head in chunks of 12 and SFC on the whole-video
graph, against head and SFC streamed, per runtime, in fresh workers one after the other (1 warm-up and
``--speed-videos`` timed videos each, median); the ratio is what streaming costs or saves at that length,
the evidence for ``STREAM_SFC_FROM``.

``whole`` runs up to ``--whole-max`` raw frames only (its memory is what the streamed mode removes; past
that it costs minutes and gigabytes per cell). Growth per sampled frame is the least-squares slope of
``video_mem_mb`` over the sampled frames of the lengths both modes ran, so the two slopes compare.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from sfc_deploy.common.environment import environment
from sfc_deploy.runtime.pipeline import STREAM_SFC_FROM

HERE = Path(__file__).resolve().parent
BACKBONE, SIZE, TAU, STRIDE = "slow8x8", (256, 312), 2.0, 8
MODES = {"whole": None, "streamed": 12}
GOAL_MB = 5.0  # issue 15's bound on growth per sampled frame
ALWAYS, NEVER = 0, 1 << 30  # stream_sfc_from: SFC streams at every length / at none
RUNTIMES = {"pytorch": "PyTorch eager", "onnxruntime": "ONNX Runtime (CPU provider)",
            "onnxruntime-no-arena": "ONNX Runtime (CPU provider) without its CPU memory arena"}


def _job(runtime: str, **kw):
    """A bench worker job for a column of RUNTIMES (the no-arena one is ONNX Runtime with ort_cpu_arena off)."""
    from sfc_deploy.bench.worker import WorkerJob

    return WorkerJob(strategy="sfc", runtime=runtime.removesuffix("-no-arena"), precision="fp32",
                     ort_cpu_arena=not runtime.endswith("-no-arena"), **kw)


def export(out: Path, runtimes: list[str]) -> Path:
    """Random slow8x8 (seed 0): weights only for PyTorch, plus head, SFC (and its pieces) and tail as ONNX."""
    import torch

    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.models import create_model, get_config

    torch.manual_seed(0)
    formats = ("onnx",) if any(rt.startswith("onnxruntime") for rt in runtimes) else ()
    export_model(create_model(get_config(BACKBONE), tau=TAU, split="res3"), out,
                 ExportOptions(formats=formats, parts=("head", "sfc", "tail"), precisions=("fp32",), frames=36,
                               size=SIZE, raw_frames=288))
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="144,288,576,1152,4096", help="raw frames per video, comma-separated")
    parser.add_argument("--modes", default="whole,streamed", help="whole, streamed or both")
    parser.add_argument("--runtimes", default="pytorch,onnxruntime,onnxruntime-no-arena",
                        help="any of pytorch, onnxruntime, onnxruntime-no-arena (ONNX Runtime without its CPU arena)")
    parser.add_argument("--whole-max", type=int, default=1152, help="longest video (raw frames) the whole mode runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-lengths", default="288,1152", help="raw frames at which to time whole vs streamed SFC ('' skips)")
    parser.add_argument("--speed-videos", type=int, default=3, help="timed videos per speed cell")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--readme-only", action="store_true", help="rewrite README.md from --out's results.json")
    args = parser.parse_args()
    if args.readme_only:
        (args.out / "README.md").write_text(readme(json.loads((args.out / "results.json").read_text())))
        return
    from sfc_deploy.bench.worker import run_in_fresh_process

    lengths = [int(x) for x in _list(args.lengths)]
    modes, runtimes = _list(args.modes), _list(args.runtimes)
    for name, values, known in (("mode", modes, MODES), ("runtime", runtimes, RUNTIMES)):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise SystemExit(f"error: unknown or no {name} {unknown or values}; expected any of {', '.join(known)}")
    rows: list[dict] = []
    speed: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sfc-mem-") as tmp:
        t0 = time.perf_counter()
        folder = export(Path(tmp) / "export", runtimes)
        export_seconds = round(time.perf_counter() - t0, 1)
        print(f"exported in {export_seconds} s", flush=True)
        for raw in lengths:
            row = {"raw_frames": raw, "frames": math.ceil(raw / STRIDE)}
            for runtime in runtimes:
                cells = row.setdefault(runtime, {})
                for mode in modes:
                    if mode == "whole" and raw > args.whole_max:
                        continue
                    start = time.perf_counter()
                    r = run_in_fresh_process(_job(
                        runtime, export_dir=str(folder), threads=args.threads, memory_only=True, frames=row["frames"],
                        head_chunk=MODES[mode], stream_sfc_from=ALWAYS))
                    cells[mode] = {"video_mem_mb": round(r["video_mem_mb"], 1), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                                   "base_rss_mb": round(r["base_rss_mb"], 1),
                                   "seconds": round(time.perf_counter() - start, 1)}
                    print(raw, runtime, mode, cells[mode], flush=True)
                    write(args, rows + [row], runtimes, modes, export_seconds, started)  # an interrupted run keeps its cells
            rows.append(row)
        for raw in [int(x) for x in _list(args.speed_lengths)]:
            frames = math.ceil(raw / STRIDE)
            for runtime in runtimes:
                cell = {"raw_frames": raw, "frames": frames, "runtime": runtime}
                for name, stream_from in (("whole_sfc_s", NEVER), ("streamed_s", ALWAYS)):
                    r = run_in_fresh_process(_job(
                        runtime, export_dir=str(folder), threads=args.threads, videos=args.speed_videos, warmup=1,
                        frames=frames, head_chunk=12, stream_sfc_from=stream_from))
                    cell[name] = statistics.median(r["latencies_s"])
                cell["streamed_over_whole"] = cell["streamed_s"] / cell["whole_sfc_s"]
                print("speed", cell, flush=True)
                speed.append(cell)
                write(args, rows, runtimes, modes, export_seconds, started, speed)
    print(json.dumps(write(args, rows, runtimes, modes, export_seconds, started, speed)))


def write(args, rows: list[dict], runtimes: list[str], modes: list[str], export_seconds: float, started: float,
          speed: list[dict] | None = None) -> dict:
    """Write ``results.json`` and ``README.md`` for the cells measured so far; returns the slopes."""
    common = [r for r in rows if all(m in r.get(rt, {}) for rt in runtimes for m in modes)]
    per_frame = {rt: {m: round(slope([r["frames"] for r in common], [r[rt][m]["video_mem_mb"] for r in common]), 2)
                      for m in modes} for rt in runtimes} if len(common) > 1 else {}
    result = {
        "what": "peak RSS of one SFC video above the loaded model, CPU",
        "model": {"backbone": BACKBONE, "split": "res3", "tau": TAU, "size": list(SIZE), "weights": "random (seed 0)"},
        "runtimes": {rt: RUNTIMES[rt] for rt in runtimes}, "precision": "fp32", "device": "cpu",
        "threads": args.threads,
        "modes": {m: f"head_chunk={MODES[m]}" + (", stream_sfc_from=0" if MODES[m] else "") for m in modes},
        "stream_sfc_from_default": STREAM_SFC_FROM,
        "speed": speed or [],
        "speed_videos": args.speed_videos,
        "whole_max_raw_frames": args.whole_max,
        "rows": rows,
        "mb_per_sampled_frame": per_frame,
        "slope_over_raw_frames": [r["raw_frames"] for r in common],
        "export_seconds": export_seconds,
        "wall_seconds": round(time.perf_counter() - started),
        "environment": environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "README.md").write_text(readme(result))
    return per_frame


def arena_sentence(result: dict) -> str:
    per_frame = result["mb_per_sampled_frame"]
    on, off = per_frame.get("onnxruntime", {}), per_frame.get("onnxruntime-no-arena", {})
    if "streamed" not in on or "streamed" not in off:
        return "The arena's share was not measured in this run (run with `--runtimes ...,onnxruntime-no-arena`)."
    return (f"Most of it is ONNX Runtime's CPU memory arena, which grows in power-of-two steps: without it the same "
            f"sessions grow {off['streamed']:.1f} MB per sampled frame streamed (with it {on['streamed']:.1f}) and "
            f"{off['whole']:.1f} MB whole (with it {on['whole']:.1f}), at a speed within a few percent (table below). "
            "`sfc-deploy bench` keeps the arena for both strategies (shrunk after every run); what turning it off "
            "does to 30-crop's speed and memory is not measured here, so the bench's comparison stays as it was.")


def speed_section(result: dict) -> str:
    speed = result.get("speed") or []
    if not speed:
        return "\nSpeed was not measured in this run (`--speed-lengths`).\n"
    lines = ["", "## Speed: streamed SFC against the whole-video SFC graph (head in chunks of 12 in both)", "",
             f"Median SFC seconds per video over {result['speed_videos']} timed videos after 1 warm-up, one fresh worker "
             f"per cell, fp32, {result['threads']} threads, synthetic input; seconds include head and tail.", "",
             "| runtime | raw frames | sampled frames | whole SFC graph, s | streamed, s | streamed / whole |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in speed:
        lines.append(f"| {c['runtime']} | {c['raw_frames']} | {c['frames']} | {c['whole_sfc_s']:.2f} | {c['streamed_s']:.2f} "
                     f"| {c['streamed_over_whole']:.2f} |")
    lines += ["", f"By default (`STREAM_SFC_FROM` = {result['stream_sfc_from_default']} sampled frames, "
              "`sfc_deploy/runtime/pipeline.py`; `sfc-deploy bench --stream-sfc-from N`) SFC streams on videos of at least "
              "that many sampled frames only: a ratio above 1 is what streaming costs in time, the memory table what it "
              "saves, and the saving grows with the video while the cost stays a fraction. Below the threshold the "
              "whole-video graph's extra memory is bounded by the threshold's length."]
    return "\n".join(lines) + "\n"


def readme(result: dict) -> str:
    """The README of ``result`` (every number comes from it)."""
    env, rows, per_frame = result["environment"], result["rows"], result["mb_per_sampled_frame"]
    machine, libs = env["machine"], env["libraries"]
    runtimes, modes = list(result["runtimes"]), list(result["modes"])
    cols = [(rt, m) for rt in runtimes for m in modes]
    label = {"whole": "whole SFC", "streamed": "streamed"}
    head = "| raw frames | sampled frames | " + " | ".join(f"{rt} {label[m]} (MB)" for rt, m in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[rt][m]['video_mem_mb']:.0f}" if m in r.get(rt, {}) else "not run" for rt, m in cols]
        lines.append(f"| {r['raw_frames']} | {r['frames']} | " + " | ".join(cells) + " |")
    if per_frame:
        span = result["slope_over_raw_frames"]
        slopes = [f"**{per_frame[rt][m]:.1f} MB**" for rt, m in cols]
        lines.append(f"| **growth per sampled frame** ({span[0]}-{span[-1]} raw frames, least squares) | | "
                     + " | ".join(slopes) + " |")
    streamed = [rt for rt, m in cols if m == "streamed" and per_frame]
    met = [rt for rt in streamed if per_frame[rt]["streamed"] <= GOAL_MB]
    missed = [f"{rt} ({per_frame[rt]['streamed']:.2f} MB)" for rt in streamed if rt not in met]
    verdict = f"; streamed, met on {', '.join(met) or 'none'}, missed on {', '.join(missed) or 'none'}" if streamed else ""
    minutes, seconds = divmod(result["wall_seconds"], 60)
    versions = ", ".join(f"{k} {libs[k]}" for k in ("torch", "onnxruntime") if k in libs)
    return f"""# SFC memory vs video length: whole-video SFC vs head + SFC streamed (issue 15 item 6)

Regenerate with `flock /tmp/sfc-heavy.lock .venv/bin/python benchmarks/memory_streaming/run.py`
({minutes} min {seconds} s wall on {machine['logical_cores']} cores, {result['export_seconds']:.0f} s of it the export;
other work may have shared the machine). Numbers: `results.json`; this file is written by the script.

Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, {machine['memory_gb']} GB, {machine['os']};
{versions}, Python {env['python']}. **Runtimes: {'; '.join(result['runtimes'].values())}; precision
{result['precision']}, device {result['device']}, {result['threads']} threads.**
Model: {BACKBONE}, split res3, tau {TAU:g}, {SIZE[0]}x{SIZE[1]} frames, random weights (seed 0), one export
(ONNX head, SFC with its streaming pieces, tail; the PyTorch runtime serves its `model.safetensors`).
Each cell is one fresh bench worker (`sfc_deploy.bench.worker`, the code `sfc-deploy bench --lengths`
runs, `memory_only`): load, reset the peak-RSS mark, one synthetic video head -> SFC -> tail; the value is
the peak RSS above the loaded model (`video_mem_mb`; the input tensor is made before the reset and is not
counted). One run per cell; run-to-run spread was not measured.

{chr(10).join(lines)}

* `whole`: `head_chunk` off; head and SFC on the whole time axis. Run up to {result['whole_max_raw_frames']}
  raw frames only ("not run" beyond: that memory is what streaming removes).
* `streamed`: `head_chunk=12`, SFC streamed at every length (`stream_sfc_from=0`; by default it streams
  from {result['stream_sfc_from_default']} sampled frames); the head chunks feed the streamed SFC as they come, so F_head is never
  one tensor and SFC's abstraction, theta, pool and output run chunk by chunk. PyTorch:
  `SFC.forward_streamed`; ONNX Runtime: the same driver (`sfc_deploy/models/sfc_stream.py`) on runners
  of SFC's exported pieces (`sfc_abs`, `sfc_theta_q`, `sfc_theta_k`, `sfc_normalise`;
  `sfc_deploy/runtime/sfc_stream.py`), the query's TopK pool and the matmuls in torch on the host.
* `onnxruntime-no-arena`: the same ONNX Runtime sessions with their CPU memory arena off (runner option
  `cpu_arena=False`; bench worker `ort_cpu_arena=False`): buffers come from the system allocator run by
  run instead of an arena that grows in power-of-two steps and is shrunk after each run (how `sfc-deploy
  bench` runs ONNX Runtime, for both strategies).

Goal of the issue: <= {GOAL_MB:g} MB per sampled frame{verdict}. What streaming must still hold per sampled
frame until the query and the attention map are known is F_head chunk 2.56 MB + F_abs chunk 0.66 MB
(32x39 / 16x20, C=512, fp32) = 3.2 MB; the tail then runs on the k = T/2 compressed frames at once, on
every runtime (res4/res5 have temporal kernels, so the tail does not stream).

Where ONNX Runtime's streamed growth exceeds PyTorch's, memory is held that the driver does not hold.
{arena_sentence(result)} Outputs of an ONNX Runtime session are views of its arena, so the streamed driver
copies the chunks it keeps (`StreamPieces.keep`): without the copy each kept chunk pinned an arena region
and growth was about twice as large.
{speed_section(result)}
Not measured here: TorchScript, AOTInductor and TensorRT keep the whole-video SFC graph (their head still
streams with `--head-chunk`, but the head chunks are joined before SFC). Seconds per memory cell are in
`results.json` but include model loading: they are not a speed comparison (the speed table is).
"""


if __name__ == "__main__":
    main()
