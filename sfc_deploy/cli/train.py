"""Training commands: ``sfc-deploy train-backbone`` (clip-level) and ``sfc-deploy train`` (SFC only)."""

from __future__ import annotations

from collections.abc import Iterator
import json
import sys
from contextlib import contextmanager
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sfc_deploy.cli.options import BackboneOpt, CheckpointOpt, SplitOpt, TauOpt, TrustOpt, tau_value
from sfc_deploy.cli.options import DeviceOpt
from sfc_deploy.common.device import Amp, resolve_device
from sfc_deploy.common.outputs import check_output_dir
from sfc_deploy.data.datasets import VideoList, load_video_list
from sfc_deploy.scale.sources import resolve_inputs
from sfc_deploy.train.distill import LABELLED_WEIGHT, SOFT_TEMPERATURE, STANDARDIZED_TEMPERATURE, UNLABELLED
from sfc_deploy.errors import ConfigError, SfcError
from sfc_deploy.train.backbone import BackboneTrainOptions, train_backbone
from sfc_deploy.train.common import parse_milestones
from sfc_deploy.train.sfc import SFCTrainOptions, train_sfc
from sfc_deploy.train.distributed import env_world, launch_local, process_group, rank_device, strip_nproc
from sfc_deploy.train.views import Augment, parse_range

DataArg = Annotated[Path, typer.Argument(help="Training list: a CSV (path,label,...), UCF101 split folder or class-folder tree.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory: weights, train_state.pt, metrics.jsonl.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out (same settings).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Start over in an --out that already holds a run.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seeds initialisation and every random draw.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's).")]
ScaleOpt = Annotated[str, typer.Option("--scale", help="Outward scaling range MIN,MAX of the short side.")]
CropOpt = Annotated[float, typer.Option("--crop-fraction", min=0.1, max=1.0, help="Training crop / test frame size, per side.")]
FlipOpt = Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips (off for mirror-pair classes).")]
SkipMissingOpt = Annotated[bool, typer.Option("--skip-missing", help="Drop listed videos whose file does not exist (default: refuse the list).")]


@contextmanager
def progress_bar(title: str) -> Iterator:
    """A rich progress bar; the library reports ``(description, done, total)``."""
    columns = (TextColumn(f"[bold]{title}"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        tasks: dict[str, int] = {}

        def report(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        yield report


def _range(text: str) -> tuple[float, float]:
    return parse_range(text, "--scale")


def train_backbone_cmd(
    data: DataArg,
    out: OutOpt,
    backbone: BackboneOpt = "slow8x8_tiny",
    short_side: Annotated[int | None, typer.Option(min=16, help="Resize frames' short side to this (default: the backbone's).")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    clips_per_video: Annotated[int, typer.Option(min=1, help="Random clips per video per epoch.")] = 1,
    lr: Annotated[float, typer.Option(min=0.0)] = 0.1,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    warmup: Annotated[float, typer.Option(min=0.0, help="Linear warm-up epochs.")] = 1.0,
    scale: ScaleOpt = "1.0,1.25",
    crop_fraction: CropOpt = 0.875,
    flip: FlipOpt = False,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    skip_missing: SkipMissingOpt = False,
    device: DeviceOpt = "auto",
    amp: Annotated[str, typer.Option("--amp", help="Mixed precision: off, bf16 or fp16 (fp16: CUDA only, with a gradient scaler).")] = "off",
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes decoding clips while the model trains (0: decode in the main process). Results do not depend on it.")] = 2,
    preload: Annotated[bool, typer.Option("--preload", help="Decode every frame of every video up front (small sets only: memory grows with the list).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels-last-3d memory format for the model and its input (may help on GPUs).")] = False,
) -> None:
    """Train a whole backbone on random clips (for data without pretrained weights, e.g. `sfc-deploy synth`).

    Writes OUT/backbone.safetensors (loadable with --checkpoint), metrics.jsonl and train_state.pt.
    Clips are decoded on the fly by --workers processes (only the frames each clip needs), so memory
    does not grow with the video list; --preload decodes everything first instead.
    """
    options = BackboneTrainOptions(
        backbone=backbone, short_side=short_side, epochs=epochs, batch_size=batch_size,
        clips_per_video=clips_per_video, lr=lr, weight_decay=weight_decay, warmup=warmup, seed=seed,
        augment=Augment(scale=_range(scale), crop_fraction=crop_fraction, flip=flip, jitter=False),
    )
    precision = Amp(amp)  # checked before the list is read: --amp fp16 on a CPU is refused at once
    where = resolve_device(device, announce=lambda line: typer.echo(line, err=True))
    precision.check(where)
    check_output_dir(out, option="--out", existing_ok=True)
    videos = load_video_list(data, subset="train", missing="skip" if skip_missing else "error")
    with progress_bar("train-backbone") as report:
        summary = train_backbone(videos, out, options, resume=resume, force=force, threads=threads, progress=report,
                                 device=where, amp=amp, workers=workers, preload=preload, channels_last=channels_last)
    last = summary["last"]
    shown = f"; last epoch loss {last['loss']:.3f}, clip accuracy {last['clip_acc']:.1%}" if last else ""
    typer.echo(f"wrote {summary['weights']} ({summary['epochs']} epochs on {summary['device']}, {summary['seconds']:.0f} s{shown})")


def train_cmd(
    data: DataArg,
    out: OutOpt,
    backbone: BackboneOpt = "slow8x8",
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    tau: TauOpt = "2",
    split: SplitOpt = "res3",
    pool: Annotated[str, typer.Option(help="Query pooling: topk (paper), avg, max.")] = "topk",
    kqv: Annotated[str, typer.Option(help="abs (paper: k=q=F_abs, v=F_head), head, abs_all.")] = "abs",
    theta_kernel: Annotated[str, typer.Option(help="theta_q/theta_k kernel: 3x1x1 (paper), 3x3x3, 1x1x1.")] = "3x1x1",
    logit_scale: Annotated[str, typer.Option(help="sqrt_d divides attention logits by sqrt(C*h*w); none: the paper's form.")] = "sqrt_d",
    prior: Annotated[bool, typer.Option("--prior/--no-prior", help="Positional prior: start as uniform stride-tau subsampling (on by default: without it some seeds never start learning, see benchmarks/accuracy/NOTES.md; off: the paper's form).")] = True,
    epochs: Annotated[int, typer.Option(min=1)] = 15,
    lr: Annotated[float, typer.Option(min=0.0)] = 0.01,
    momentum: Annotated[float, typer.Option(min=0.0)] = 0.9,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 1e-5,
    milestones: Annotated[str, typer.Option(help="Epochs (from 1) where lr is divided by 10.")] = "8,12",
    schedule: Annotated[str, typer.Option(help="step (paper) or cosine.")] = "step",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per step.")] = 8,
    clip_grad: Annotated[float, typer.Option(min=0.0, help="Max gradient norm (0: off; training diverges without it).")] = 1.0,
    cache_views: Annotated[int, typer.Option(min=0, help="Fixed augmented views per video whose head features are cached (0: run the head every step).")] = 4,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Most sampled frames per video (default: all).")] = None,
    cache_file: Annotated[Path | None, typer.Option(help="Keep the feature cache in this file; reused when built for the same backbone, views and videos.")] = None,
    scale: ScaleOpt = "1.0,1.25",
    crop_fraction: CropOpt = 0.875,
    flip: FlipOpt = True,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    skip_missing: SkipMissingOpt = False,
    device: DeviceOpt = "auto",
    amp: Annotated[str, typer.Option("--amp", help="Mixed precision of SFC and tail: off, bf16 or fp16 (fp16: CUDA only, with a gradient scaler).")] = "off",
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Data-parallel processes on this machine (runs torchrun --standalone; --batch-size stays the global batch). Leave it out under torchrun.")] = 1,
    distill_weight: Annotated[float | None, typer.Option("--distill-weight", min=0.0, max=1.0, help="Weight of the KL term to the frozen backbone's own dense 30-crop predictions (computed once per video, cached); 0: labels only, 1: teacher only. Default: 1 with --labels none; with labels 0.5 given --checkpoint (benchmarks/accuracy: above labels alone at tau 2 in every setting measured), else 0.")] = None,
    distill_temperature: Annotated[float | None, typer.Option("--distill-temperature", min=0.01, help="Softmax temperature of the distillation term. Default: 0.5 for the standardized target, 2 for the soft one.")] = None,
    distill_target: Annotated[str | None, typer.Option("--distill-target", help="soft: the teacher's softmax at the temperature, for teacher and student (Hinton); standardized: the teacher's logits standardised per video, then at the temperature, the student at 1 (benchmarks/accuracy: what makes label-free training work). Default: standardized with --labels none, else soft.")] = None,
    labels: Annotated[str, typer.Option("--labels", help="use: DATA's labels; none: DATA is any list of videos (CSV with a path column, .txt list, folder, glob) learnt from the dense teacher alone (needs --checkpoint).")] = "use",
    recover: Annotated[int, typer.Option("--recover", min=0, help="Roll a run whose first epoch stalled or whose training top-1 collapsed back to its last good epoch, with other random draws, at most this many times (0: warn only; benchmarks/accuracy/NOTES.md).")] = 2,
    unlabelled: Annotated[str | None, typer.Option("--unlabelled", help="Extra videos without labels (CSV with a path column, .txt list, folder or glob), learnt from the dense teacher alone.")] = None,
    print_settings: Annotated[bool, typer.Option("--print-settings", help="Print the training options this command resolves to (every default filled in) as JSON, the form train_state.pt records them in, and exit: nothing is read or written.")] = False,
) -> None:
    """Train only SFC on a frozen backbone (paper recipe by default, plus gradient clipping at 1.0).

    Writes OUT/sfc.safetensors every epoch (it records the backbone it belongs to), metrics.jsonl and
    train_state.pt for --resume. Data parallel: `--nproc N`, or `torchrun --nproc-per-node N -m
    sfc_deploy.cli train ...` (one process per GPU, many nodes; rank 0 writes, nothing else does).
    """
    options = SFCTrainOptions(
        tau=tau_value(tau), split=split, pool=pool, kqv=kqv, theta_kernel=theta_kernel, logit_scale=logit_scale,
        prior=prior, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
        milestones=parse_milestones(milestones), schedule=schedule, batch_size=batch_size, clip_grad=clip_grad,
        cache_views=cache_views, max_frames=max_frames, seed=seed, recover=recover,
        augment=Augment(scale=_range(scale), crop_fraction=crop_fraction, flip=flip),
        **distill_settings(labels, distill_weight, distill_temperature, distill_target,
                           trained_backbone=checkpoint is not None),
    )
    if options.tau < 1:
        raise ConfigError(f"--tau must be >= 1, got {tau}")
    if print_settings:
        typer.echo(json.dumps(options.to_record(), sort_keys=True))
        return
    world = env_world()
    say = (lambda line: typer.echo(line, err=True)) if world.is_main else None
    where = rank_device(resolve_device(device, announce=say), world)
    Amp(amp).check(where)
    check_output_dir(out, option="--out", existing_ok=True)
    videos = _training_videos(data, labels, unlabelled, skip_missing)
    if nproc > 1:
        _launch(nproc, world.distributed)
        return
    with process_group(world, where), (progress_bar("train") if world.is_main else nullcontext()) as report:
        summary = train_sfc(videos, out, options, backbone=backbone, checkpoint=checkpoint,
                            trust_checkpoint=trust_checkpoint, resume=resume, force=force, threads=threads,
                            cache_file=cache_file, progress=report, device=where, amp=amp, world=world)
    if not world.is_main:
        return
    last = summary["last"]
    acc = f", train accuracy {last['train_acc']:.1%}" if last and last.get("train_acc") is not None else ""
    if last and last.get("teacher_agreement") is not None:
        acc += f", agrees with the dense teacher on {last['teacher_agreement']:.1%}"
    shown = f"; last epoch loss {last['loss']:.3f}{acc}" if last else ""
    if summary.get("roll_backs"):
        shown += f"; {summary['roll_backs']} roll-back{'s' if summary['roll_backs'] > 1 else ''} (metrics.jsonl)"
    cache = "loaded" if summary["cache_loaded"] else f"{summary['cache_seconds']:.0f} s"
    typer.echo(f"wrote {summary['checkpoint']} (cache {cache}, "
               f"training {summary['train_seconds']:.0f} s{shown})")


def distill_settings(labels: str, weight: float | None, temperature: float | None, target: str | None, *,
                     trained_backbone: bool = True) -> dict:
    """The distillation options, defaults filled in with the recipes measured in benchmarks/accuracy:
    label-free training (``--labels none``) learns from the teacher alone (standardized target at
    T = 0.5); training with labels on a trained backbone (``--checkpoint``) adds the teacher's soft
    target at T = 2 with weight 0.5 (:data:`~sfc_deploy.train.distill.LABELLED_WEIGHT`). Without a
    trained backbone the teacher would be random weights: labels alone, unless asked."""
    label_free = labels == "none"
    if weight is None:
        weight = 1.0 if label_free else LABELLED_WEIGHT if trained_backbone else 0.0
    if weight == 0:
        given = [name for name, value in (("--distill-temperature", temperature), ("--distill-target", target))
                 if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only with distillation: "
                              "give --distill-weight W (> 0) and the backbone's --checkpoint")
    target = target or ("standardized" if label_free else "soft")
    if temperature is None:
        temperature = STANDARDIZED_TEMPERATURE if target == "standardized" else SOFT_TEMPERATURE
    return {"distill_weight": weight, "distill_temperature": temperature, "distill_target": target}


def _training_videos(data: Path, labels: str, unlabelled: str | None, skip_missing: bool) -> VideoList:
    """DATA's labelled videos (``--labels use``) or all of DATA unlabelled (``none``), plus ``--unlabelled``."""
    if labels not in ("use", "none"):
        raise ConfigError(f"--labels must be use or none, got {labels!r}")
    if labels == "use":
        videos = load_video_list(data, subset="train", missing="skip" if skip_missing else "error")
    else:
        videos = VideoList(items=(), class_names=())
    extra = [Path(p) for p in resolve_inputs(data if labels == "none" else unlabelled)] if (
        labels == "none" or unlabelled) else []
    if labels == "none" and unlabelled:
        extra += [Path(p) for p in resolve_inputs(unlabelled)]
    missing = [p for p in extra if not p.is_file()]
    if missing and not skip_missing:
        raise ConfigError(f"unlabelled video {missing[0]} does not exist{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                          "fix the list or pass --skip-missing")
    items = videos.items + tuple((p, UNLABELLED) for p in extra if p.is_file())
    extras = tuple(videos.extras) if len(videos.extras) == len(videos) else tuple({} for _ in videos.items)
    return VideoList(items=items, class_names=videos.class_names, extras=extras + tuple({} for _ in items[len(videos):]))


def _launch(nproc: int, inside_torchrun: bool) -> None:
    """``sfc-deploy train --nproc N``: run the same command line as N torchrun processes here."""
    if inside_torchrun:
        raise ConfigError("--nproc launches torchrun itself; under torchrun leave --nproc out")
    if "train" not in sys.argv[1:]:
        raise ConfigError("--nproc relaunches the command line it was given; run `sfc-deploy train ... --nproc N` "
                          "from a shell (or use torchrun)")
    code = launch_local(strip_nproc(sys.argv[1:]), nproc)
    if code != 0:
        raise SfcError(f"{nproc} training processes ended with exit code {code} (their messages are above); "
                      "fix the first error and rerun, with --resume if a checkpoint was written")


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``sfc-deploy`` app."""
    app.command("train-backbone")(train_backbone_cmd)
    app.command("train")(train_cmd)
