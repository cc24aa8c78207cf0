"""``sfc-deploy predict``: classify video files with SFC and show where it looked.

Thin: options are checked here (what applies with and without ``--export``), the work is
:mod:`sfc_deploy.eval.predict` (and :mod:`sfc_deploy.eval.explain` for ``--explain``). Every video is
probed and every output checked before the model loads, so a missing or corrupt file or an existing
output fails at once; the ``--explain`` folder appears whole or not at all, and the JSON is written
only after every video was classified (and explained).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sfc_deploy.common.atomic import atomic_dir
from sfc_deploy.common.device import resolve_device
from sfc_deploy.common.outputs import check_output_dir, check_output_file
from sfc_deploy.cli.options import (CheckpointOpt, DeviceOpt, FastDecodeOpt, SegmentFramesOpt, SegmentsOpt, SfcCheckpointOpt, TrustOpt,
                                    segments_pair)
from sfc_deploy.cli.train import ThreadsOpt
from sfc_deploy.data.inputs import InputSpec, check_segments
from sfc_deploy.common.text import one_line
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS, Prefetcher
from sfc_deploy.data.video import VideoInfo, probe_video
from sfc_deploy.errors import ConfigError, SfcError
from sfc_deploy.eval.explain import explain_video, png_names, write_explain_index
from sfc_deploy.eval.predict import (Prediction, Predictor, from_checkpoints, from_export, predict_video, resolve_class_names,
                                     sample_for)
from sfc_deploy.models.sfc import parse_tau
from sfc_deploy.train.common import set_threads

SPARK = "▁▂▃▄▅▆▇█"
#: Widest attention sparkline, in characters; longer videos are binned.
SPARK_WIDTH = 60
#: Most attended timestamps listed under the sparkline.
PEAKS = 3


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """One character per value (binned by their mean past ``width``), scaled so the largest is a full block."""
    if len(values) > width:
        bins = [values[i * len(values) // width : (i + 1) * len(values) // width] for i in range(width)]
        values = [sum(b) / len(b) for b in bins]
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


def _seconds(t: float | None) -> str:
    return "?s" if t is None else f"{t:.2f}s"


def show(console: Console, pred: Prediction) -> None:
    """The terminal view of one prediction: a top-N table and the attention over time."""
    duration = f" ({pred.num_frames / pred.fps:.2f} s at {pred.fps:g} fps)" if pred.fps > 0 else ""
    cropped = f" (centre crop at top {pred.crop[0]}, left {pred.crop[1]}: the export's size)" if pred.crop else ""
    console.print(f"[bold]{escape(str(pred.path))}[/]: {pred.num_frames} frames{duration}; SFC read "
                  f"{pred.read} of {pred.size[0]}x{pred.size[1]}{cropped} -> k={pred.k}")
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("index", justify="right")
    table.add_column("prob", justify="right")
    table.add_column("")
    for rank, score in enumerate(pred.top, 1):
        table.add_row(str(rank), escape(score.name), str(score.index), f"{score.prob:6.1%}", "█" * round(score.prob * 20))
    console.print(table)
    stamps, mass = pred.timestamps, pred.mass.tolist()
    console.print(f"where SFC looked: {_seconds(stamps[0])} {sparkline(mass)} {_seconds(stamps[-1])}")
    peaks = ", ".join(f"{_seconds(stamps[i])} (frame {pred.frame_indices[i]}, {mass[i]:.2f})" for i in pred.peaks(PEAKS))
    console.print(f"most attended: {peaks} (attention mass; k={pred.k} in all, {pred.k / len(mass):.2f} per frame if uniform)")


def _check_options(*, export: Path | None, given: dict[str, bool], runtime: str | None, precision: str | None) -> None:
    """Refuse options that do not apply, naming the option and the fix."""
    if export is not None:
        extra = [name for name, on in given.items() if on]
        if extra:
            verb = "does" if len(extra) == 1 else "do"
            raise ConfigError(f"{', '.join(extra)} {verb} not apply with --export: the export folder holds its own "
                              f"weights, tau and backbone; drop {' '.join(extra)} or drop --export")
        return
    if runtime is not None and runtime != "pytorch":
        raise ConfigError(f"--runtime {runtime} runs exported artifacts; pass --export DIR (or drop --runtime)")
    if precision is not None:
        raise ConfigError(f"--precision {precision} applies to exported artifacts; pass --export DIR or drop --precision")


def predict_cmd(
    videos: Annotated[list[Path], typer.Argument(metavar="VIDEO", help="Video files (any container FFmpeg reads).", show_default=False)],
    backbone: Annotated[str | None, typer.Option("--backbone", "-b", help="Registered backbone (default: slow8x8).")] = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    sfc_checkpoint: SfcCheckpointOpt = None,
    tau: Annotated[str | None, typer.Option("--tau", help="Compression ratio (default: the SFC checkpoint's, else 2).")] = None,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Most sampled frames; longer videos become segments (default: all).")] = None,
    segments: SegmentsOpt = None,
    segment_frames: SegmentFramesOpt = None,
    export: Annotated[Path | None, typer.Option("--export", help="Run an export folder's artifacts instead of checkpoints.")] = None,
    runtime: Annotated[str | None, typer.Option(help="With --export: onnxruntime (default), torchscript, aoti, tensorrt, pytorch.")] = None,
    precision: Annotated[str | None, typer.Option(help="With --export: fp32 (default), fp16, or bf16 (--runtime pytorch).")] = None,
    classes: Annotated[Path | None, typer.Option("--classes", help="Class names, one per line (default: stored ones, else indices).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes to show per video.")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the predictions and attention to this JSON file.")] = None,
    matrix: Annotated[bool, typer.Option("--attention-matrix", help="With --json: include the full k x T attention map.")] = False,
    explain: Annotated[Path | None, typer.Option("--explain", help="Write a folder with a picture per video of where SFC "
                                                 "looked (attention map over the frames; index.html for several videos).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --explain folder.")] = False,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decoding threads working ahead of the model.")] = DEFAULT_WORKERS,
    prefetch: Annotated[int, typer.Option("--prefetch", min=1, help="Most videos decoded ahead (the memory bound).")] = DEFAULT_DEPTH,
    fast_decode: FastDecodeOpt = False,
) -> None:
    """Classify whole videos with SFC in one pass; show the top classes and where SFC looked.

    The next videos decode while the model serves the current one. A video that cannot be classified
    (e.g. frames smaller than a fixed-size export) is said so and the others go on; the command then
    exits 2 naming it, with no --json/--explain written."""
    given = {"--backbone": backbone is not None, "--checkpoint": checkpoint is not None,
             "--trust-checkpoint": trust_checkpoint, "--sfc-checkpoint": sfc_checkpoint is not None, "--tau": tau is not None}
    _check_options(export=export, given=given, runtime=runtime, precision=precision)
    seg = segments_pair(segments, segment_frames)
    if seg is not None and max_frames is not None:
        raise ConfigError("--max-frames applies to whole-video input; drop it with --segments/--segment-frames")
    if matrix and json_out is None:
        raise ConfigError("--attention-matrix goes into the JSON file; add --json FILE or drop --attention-matrix")
    if force and explain is None:
        raise ConfigError("--force replaces an existing --explain folder; add --explain DIR or drop --force")
    if json_out is not None:
        check_output_file(json_out, option="--json")
    if explain is not None:
        check_output_dir(explain, option="--explain", force=force)
    tau_value = parse_tau(tau) if tau is not None else None
    # none given: the runtime's own device (the CPU; CUDA for TensorRT)
    where = resolve_device(device, announce=lambda line: typer.echo(line, err=True)) if device is not None else None
    set_threads(threads)
    infos = [probe_video(v) for v in videos]  # missing or corrupt files fail before the model loads
    if export is not None:
        predictor: Predictor = from_export(export, runtime=runtime or "onnxruntime", precision=precision or "fp32",
                                           threads=threads, device=where)
    else:
        predictor = from_checkpoints(backbone or "slow8x8", checkpoint=checkpoint, sfc_checkpoint=sfc_checkpoint,
                                     tau=tau_value, trust_checkpoint=trust_checkpoint, device=where)
    console, notes = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)
    with predictor, contextlib.ExitStack() as outputs:
        if seg is not None:  # S*F against a fixed time axis: one line, before any video is decoded
            check_segments(InputSpec(predictor.frames, predictor.size), *seg)
        names, names_from = resolve_class_names(predictor, classes)
        for warning in predictor.warnings:
            notes.print(f"[yellow]note: {escape(warning)}[/]")
        folder = outputs.enter_context(_explain_folder(explain, force)) if explain is not None else None
        pngs = dict(zip(videos, png_names(videos)))
        predictions, explained, failed = [], [], []

        def decode(item: tuple[Path, VideoInfo]):
            return sample_for(predictor, item[0], info=item[1], max_frames=max_frames, segments=seg,
                              reference_only=fast_decode)

        # the next videos decode on --workers threads while the model serves this one
        stream = outputs.enter_context(Prefetcher(decode, list(zip(videos, infos)), depth=prefetch, workers=workers,
                                                  name="sfc-predict-decode"))
        for got in stream:
            (path, info), png = got.item, pngs[got.item[0]]
            if isinstance(got.error, SfcError):  # this video only (e.g. smaller than the export): say so, go on
                console.print(f"[bold]{escape(str(path))}[/]: [red]not classified[/]: {escape(one_line(got.error))}")
                failed.append(got.error)
                continue
            pred = predict_video(predictor, path, class_names=names, top=top, info=info, prepared=got.result())
            show(console, pred)
            predictions.append(pred)
            if folder is not None:
                note = "; ".join(f"note: {w}" for w in predictor.warnings) or None
                explained.append((pred, explain_video(pred, folder / png, top_frames=PEAKS, note=note)))
        if len(failed) == len(videos) == 1:
            raise failed[0]
        if failed:  # nothing is written: --json and --explain hold every video or none
            raise type(failed[0])(f"{len(failed)} of {len(videos)} videos could not be classified, so --json/--explain "
                                  f"were not written; the first: {one_line(failed[0])}")
        if folder is not None and len(explained) > 1:
            write_explain_index(explained, folder, subtitle=_model_line(predictor))
    if explain is not None:
        console.print(f"wrote {escape(str(explain))}/ ({len(explained)} PNG{'s' if len(explained) > 1 else ''}"
                      f"{' and index.html' if len(explained) > 1 else ''})")
    if json_out is not None:
        from sfc_deploy.common.atomic import atomic_write_text

        doc = {"model": predictor.source, "class_names_from": names_from, "top": top,
               "videos": [p.to_dict(matrix=matrix) for p in predictions]}
        atomic_write_text(json_out, json.dumps(doc, indent=1) + "\n")
        console.print(f"wrote {escape(str(json_out))}")


@contextlib.contextmanager
def _explain_folder(out: Path, force: bool):
    """The ``--explain`` folder being written (a temporary sibling, renamed into place on success)."""
    try:
        with atomic_dir(out, replace=force) as work:
            yield work
    except FileExistsError:
        raise ConfigError(f"{out} appeared while predicting (another run writing --explain {out}?); pass --force to "
                          "replace it or choose another --explain") from None


def _model_line(predictor: Predictor) -> str:
    """The model behind the pictures, for the top of ``index.html`` (with its warnings: random weights)."""
    src = predictor.source
    if src.get("kind") == "export":
        where = f"export {src['export']} on {src['runtime']} {src['precision']}"
        if src.get("device"):
            where += f" ({src['device']})"
    else:
        where = (f"checkpoint {src.get('checkpoint') or 'none (random weights)'}, "
                 f"SFC {src.get('sfc_checkpoint') or 'untrained'}")
    line = f"backbone {src.get('backbone')}, tau {src.get('tau')}, {where}"
    return "; ".join([line, *predictor.warnings])


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the ``sfc-deploy`` app."""
    app.command("predict")(predict_cmd)
