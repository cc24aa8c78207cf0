"""``sfc-deploy classify``: an export over a collection of videos, one Parquet row per video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfc_deploy.cli.options import DeviceOpt, FastDecodeOpt, SegmentFramesOpt, SegmentsOpt, segments_pair
from sfc_deploy.cli.train import progress_bar
from sfc_deploy.common.device import resolve_device
from sfc_deploy.common.outputs import check_output_file
from sfc_deploy.errors import ConfigError


def classify_cmd(
    source: Annotated[str, typer.Argument(metavar="INPUT", help="A CSV (path column), a folder, a glob ('videos/**/*.mp4'), a list file (.txt) or one video.")],
    export: Annotated[Path, typer.Option("--export", help="The export folder to run (sfc-deploy export).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Predictions file (.parquet); a rerun with the same --out resumes.")],
    jsonl: Annotated[Path | None, typer.Option("--jsonl", help="Also write the rows as JSON lines to this file.")] = None,
    runtime: Annotated[str, typer.Option(help="onnxruntime, torchscript, aoti, tensorrt or pytorch.")] = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32 or fp16; bf16 with --runtime pytorch (the weights converted at load).")] = "fp32",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Intra-op threads of the runtime.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="local (decoding threads + this process) or ray (a Ray Data actor pool).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="--engine ray: an existing Ray cluster (default: start a local one).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="local: decoding threads working ahead of the model; ray: actors, each loading the export once.")] = 2,
    cpus_per_worker: Annotated[float, typer.Option("--cpus-per-worker", help="--engine ray: CPUs per actor (its runtime's threads).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="--engine ray: GPUs per actor.")] = 0.0,
    prefetch: Annotated[int, typer.Option("--prefetch", min=1, help="Most videos decoded ahead (the memory bound, with --batch).")] = 4,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Decoded videos handed to the model together; those of one input shape share one call (a GPU's throughput).")] = 1,
    device: DeviceOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes kept per video.")] = 5,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Most sampled frames per video (longer: segments).")] = None,
    segments: SegmentsOpt = None,
    segment_frames: SegmentFramesOpt = None,
    fast_decode: FastDecodeOpt = False,
) -> None:
    """Classify every video of INPUT with SFC; bad videos become rows with their error, the job carries on.

    Writes one row per video (path, top1, top1_prob, topk, the most-attended frames and their
    timestamps, decode and model seconds, error). Exit 0 when the job ran, even if some rows carry
    an error; the summary says how many.
    """
    from sfc_deploy.scale.classify import ENGINES, ClassifyOptions, RayOptions, check_engine_device, classify
    from sfc_deploy.scale.sources import resolve_inputs

    if engine not in ENGINES:
        raise ConfigError(f"unknown --engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "local" and (address or cpus_per_worker != 1.0 or gpus_per_worker):
        raise ConfigError("--address, --cpus-per-worker and --gpus-per-worker apply to --engine ray only; add --engine ray")
    check_engine_device(engine, device)  # before --device is resolved: its error is the one that applies
    seg = segments_pair(segments, segment_frames)
    check_output_file(out, option="--out", suffix=".parquet")
    if jsonl is not None:
        check_output_file(jsonl, option="--jsonl")
        if jsonl.resolve() == out.resolve():
            raise ConfigError("--jsonl must be another file than --out")
    if not (export / "manifest.json").is_file():
        raise ConfigError(f"--export {export} is not an export folder (no manifest.json); run sfc-deploy export first")
    paths = resolve_inputs(source)
    # none given: the runtime's own device (the CPU; CUDA for TensorRT)
    where = resolve_device(device, announce=lambda line: typer.echo(line, err=True)) if device is not None else None
    options = ClassifyOptions(runtime=runtime, precision=precision, threads=threads, workers=workers,
                              prefetch=prefetch, top=top, max_frames=max_frames, jsonl=jsonl,
                              segments=seg, fast_decode=fast_decode, device=where, batch=batch)
    ray = RayOptions(address=address, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    if engine == "ray":
        from sfc_deploy.scale.ray_engine import import_ray

        import_ray()  # without Ray: one line saying how to install it, before any work
    with progress_bar("classify") as report:
        summary = classify(paths, export, out, options, engine=engine, ray=ray,
                           progress=lambda done, total: report("videos", done, total))
    typer.echo(
        f"{summary['videos']} videos: {summary['succeeded']} classified, {summary['failed']} failed "
        f"(see the error column), {summary['skipped']} already done; {summary['classified']} run now at "
        f"{summary['videos_per_s']:.2f} videos/s (decode {summary['decode_s']:.1f} s, model {summary['model_s']:.1f} s, "
        f"overlapped); wrote {out}"
    )


def register(app: typer.Typer) -> None:
    """Add ``classify`` to the ``sfc-deploy`` app."""
    app.command("classify")(classify_cmd)
