"""``sfc-deploy eval``: top-1/top-5 and GMACs of single, uniform, dense 30-crop and SFC at several tau."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfc_deploy.cli.options import (BackboneOpt, CheckpointOpt, DeviceOpt, FastDecodeOpt, SegmentFramesOpt, SegmentsOpt, TrustOpt,
                                    segments_pair)
from sfc_deploy.cli.train import SkipMissingOpt, ThreadsOpt, progress_bar
from sfc_deploy.common.device import resolve_device
from sfc_deploy.common.outputs import check_output_dir, check_output_file
from sfc_deploy.common.parsing import split_list
from sfc_deploy.data.datasets import load_video_list
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS
from sfc_deploy.errors import ConfigError
from sfc_deploy.eval.evaluate import ALL_STRATEGIES, STRATEGIES, check_strategies, evaluate, evaluate_export, parse_sfc_entries
from sfc_deploy.eval.report import write_report
from sfc_deploy.models.sfc import parse_tau
from sfc_deploy.train.common import set_threads


def eval_cmd(
    data: Annotated[Path, typer.Argument(help="Labelled videos: a CSV, UCF101 split folder or class-folder tree.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for NAME.json, NAME.md and NAME.png.")],
    backbone: BackboneOpt = "slow8x8",
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    sfc: Annotated[list[str] | None, typer.Option("--sfc", help="SFC checkpoint as NAME=PATH (repeatable).")] = None,
    tau: Annotated[str, typer.Option("--tau", help="Comma-separated tau values SFC runs at, e.g. 2,4.")] = "2",
    strategies: Annotated[str, typer.Option(help=f"Comma-separated, some of {','.join(ALL_STRATEGIES)}.")] = ",".join(STRATEGIES),
    num_clips: Annotated[int, typer.Option(min=1, help="Temporal clips of uniform and dense sampling.")] = 10,
    max_frames: Annotated[int | None, typer.Option(min=1, help="SFC: most sampled frames (default: all).")] = None,
    segments: SegmentsOpt = None,
    segment_frames: SegmentFramesOpt = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N videos.")] = None,
    name: Annotated[str, typer.Option(help="Report file name stem.")] = "eval",
    runtime: Annotated[str, typer.Option(help="pytorch (the models), or with --export: onnxruntime, torchscript, aoti, tensorrt, pytorch.")] = "pytorch",
    export: Annotated[Path | None, typer.Option("--export", help="Evaluate an export folder's artifacts instead of checkpoints.")] = None,
    precision: Annotated[str, typer.Option(help="With --export: fp32, fp16, or bf16 (--runtime pytorch).")] = "fp32",
    threads: ThreadsOpt = None,
    skip_missing: SkipMissingOpt = False,
    device: DeviceOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decoding threads working ahead of the models.")] = DEFAULT_WORKERS,
    prefetch: Annotated[int, typer.Option("--prefetch", min=1, help="Most videos decoded ahead, every frame of each (the memory bound).")] = DEFAULT_DEPTH,
    fast_decode: FastDecodeOpt = False,
) -> None:
    """Evaluate inference strategies on a labelled dataset; write JSON + Markdown + a speed/accuracy plot."""
    if export is None and runtime != "pytorch":
        raise ConfigError(f"--runtime {runtime} runs exported artifacts; pass --export DIR (or use --runtime pytorch)")
    if export is not None and (checkpoint or sfc):
        raise ConfigError("--export evaluates the weights inside the export folder; drop --checkpoint/--sfc")
    check_output_dir(out, option="--out", existing_ok=True)  # before the evaluation, not after it
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name {name!r} must be a plain file name stem such as eval")
    for suffix in (".json", ".md", ".png"):
        check_output_file(out / f"{name}{suffix}", option="--out")
    # none given: the runtime's own device (the CPU; CUDA for TensorRT)
    where = resolve_device(device, announce=lambda line: typer.echo(line, err=True)) if device is not None else None
    set_threads(threads)
    taus = [parse_tau(t) for t in split_list(tau)]
    if not taus or any(t < 1 for t in taus):
        raise ConfigError(f"--tau must list values >= 1 such as 2,4, got {tau!r}")
    chosen = check_strategies(split_list(strategies))  # before the videos are listed and the model is built
    seg = segments_pair(segments, segment_frames)
    if seg is not None and "segments" not in chosen:
        raise ConfigError("--segments/--segment-frames apply to strategy segments; add it to --strategies or drop them")
    videos = load_video_list(data, subset="test", missing="skip" if skip_missing else "error")
    if limit is not None:
        videos = type(videos)(items=videos.items[:limit], class_names=videos.class_names)
    with progress_bar("eval") as report:
        if export is not None:
            result = evaluate_export(videos, export, runtime=runtime, precision=precision, strategies=chosen,
                                     num_clips=num_clips, max_frames=max_frames, segments=seg, progress=report,
                                     device=where, workers=workers, prefetch=prefetch, fast_decode=fast_decode)
        else:
            result = evaluate(videos, backbone=backbone, checkpoint=checkpoint, sfc_checkpoints=parse_sfc_entries(sfc or []),
                              taus=taus, strategies=chosen, num_clips=num_clips, max_frames=max_frames, segments=seg,
                              trust_checkpoint=trust_checkpoint, progress=report, device=where, workers=workers,
                              prefetch=prefetch, fast_decode=fast_decode)
    paths = write_report(result, out, name=name)
    for r in result["results"]:
        agree = f"  agrees with dense {r['agreement']:6.1%}" if r.get("agreement") is not None else ""
        typer.echo(f"{r['method']:<36} top-1 {r['top1']:6.1%}  top-5 {r['top5']:6.1%}  {r['gmacs']:9.3f} GMACs/video{agree}")
    typer.echo(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``sfc-deploy`` app."""
    app.command("eval")(eval_cmd)
