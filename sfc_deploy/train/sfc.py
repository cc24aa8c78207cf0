"""Training SFC on a frozen backbone (paper section 4).

Head and tail keep their weights and stay in eval mode (BatchNorm statistics frozen); the loss's
gradient flows back through the tail into SFC, and only SFC's parameters are handed to the
optimizer. Defaults are the paper's recipe: SGD lr 0.01, momentum 0.9, weight decay 1e-5, 15
epochs, lr/10 at epochs 8 and 12, the whole video as input, outward scaling, a 0.875 crop
(224x273 of 256x312) and horizontal flips.

One deliberate addition: **gradient-norm clipping at 1.0, on by default**. The attention logits
are dot products over C*h*w dimensions, and the SPEC's prototype saw training diverge without
clipping (40% top-1 unclipped vs 90.8% clipped on the same data). ``clip_grad=0`` restores the
paper's plain SGD.

Distillation (``distill_weight > 0``): the frozen backbone's own dense 30-crop logits, computed
once per training video and cached beside the head features, add a KL term at a temperature to
the cross-entropy, and let videos without a label (:data:`~sfc_deploy.train.distill.UNLABELLED`)
train on the teacher alone (:mod:`sfc_deploy.train.distill`).

``train`` warns in one line when the loss over the last quarter of the first epoch is not below
:data:`STALL_RATIO` of the loss over its first eighth and its training top-1 (label-free: agreement
with the teacher's top-1) stayed under :data:`STALL_TIMES_CHANCE` x chance: the sign of a run that will
never learn (issue 16: the attention stuck near uniform, where the frozen tail passes back almost no
gradient); and, in a later epoch, when a training top-1 that had reached that line falls back under
it: a run that learned, then collapsed.

With ``cache_views > 0`` (the default) the head runs once per fixed view of each video and its
features are reused every epoch (see :mod:`sfc_deploy.train.cache`); ``cache_views=0`` renders a
fresh view and runs the head at every step.

Devices and processes: the model runs on ``device`` (features are moved there per step), with
optional autocast (``amp``: bf16, or fp16 with a gradient scaler). Under ``torch.distributed``
(:mod:`sfc_deploy.train.distributed`) every rank runs its shard of each global batch and SFC's
gradients are summed over ranks, so N processes take the same steps as one process with the same
``batch_size`` (which stays the *global* batch); rank 0 alone writes. The data order is a function
of (seed, epoch, batch size), never of the world size, so ``--resume`` works across world sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sfc_deploy.common.atomic import atomic_write, atomic_write_text
from sfc_deploy.common.device import Amp
from sfc_deploy.common.environment import environment
from sfc_deploy.common.outputs import run_folder
from sfc_deploy.data.datasets import VideoList
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.factory import create_model
from sfc_deploy.models.sfc_model import SFCModel, save_sfc_checkpoint
from sfc_deploy.train.cache import cache_key, cache_views, head_features, open_or_build_cache, render_view, video_features
from sfc_deploy.train.common import (
    METRICS_FILE, STATE_FILE, Metrics, Progress, Schedule, Timer, check_resume, check_same_run, epoch_generator,
    make_optimizer, set_threads, state_on_cpu,
)
from sfc_deploy.train.distill import DISTILL_TARGETS, SOFT_TEMPERATURE, TEACHER_CLIPS, TEACHER_DIR, UNLABELLED, dense_logits, distill_loss, open_or_build_teacher, teacher_key
from sfc_deploy.train.recovery import Recovery, fresh_weights, take
from sfc_deploy.train.distributed import World, average_buffers, same_on_all_ranks, set_synced, sync_batchnorms, sync_gradients
from sfc_deploy.train.views import Augment, FrameStore

SFC_FILE = "sfc.safetensors"
#: Where the head-feature cache lives inside the run folder when no ``cache_file`` is given.
CACHE_DIR = "feature_cache"


@dataclass(frozen=True)
class SFCTrainOptions:
    """Settings of :func:`train_sfc`; recorded in the checkpoint and checked on ``--resume``.

    Attributes:
        tau, split, pool, kqv, theta_kernel, logit_scale, prior: the SFC module (see ``SFCConfig``).
        epochs, lr, momentum, weight_decay, optimizer, schedule, milestones, warmup: optimisation.
        batch_size: videos per step (videos of different lengths run as separate forward passes
            of the same step).
        clip_grad: max gradient norm of SFC's parameters (0: off).
        cache_views: fixed augmented views per video whose head features are cached (0: no cache).
        max_frames: most sampled frames per video (None: the whole video).
        seed: weight init and every random draw.
        augment: outward scaling, crop fraction, flip, temporal jitter.
        distill_weight: weight w of the KL term to the frozen backbone's dense 30-crop logits
            (:mod:`sfc_deploy.train.distill`); 0 (here, the paper's recipe): cross-entropy only.
            Unlabelled videos need w > 0. ``sfc-deploy train`` defaults to
            :data:`~sfc_deploy.train.distill.LABELLED_WEIGHT` when given a trained backbone.
        distill_temperature: softmax temperature T of the KL term.
        distill_target: ``soft`` (the teacher's softmax at T, Hinton's) or ``standardized`` (the
            teacher's logits standardised per video, then at T; the student at 1): see
            :mod:`sfc_deploy.train.distill`. Label-free training wants ``standardized``.
        recover: how many times a run whose first epoch stalled or whose training top-1 collapsed
            is rolled back to its last good epoch and continued with other random draws
            (:mod:`sfc_deploy.train.recovery`); 0: never, warn only.
    """

    tau: float = 2.0
    split: str = "res3"
    pool: str = "topk"
    kqv: str = "abs"
    theta_kernel: str = "3x1x1"
    logit_scale: str = "sqrt_d"
    # On by default since issue 16: without it 2 of 6 seeds never learned on the harder synthetic setting
    # (attention stuck near uniform, where the frozen tail passes back ~no gradient); with it none did.
    prior: bool = True
    epochs: int = 15
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    optimizer: str = "sgd"
    schedule: str = "step"
    milestones: tuple[int, ...] = (8, 12)
    warmup: float = 0.0
    batch_size: int = 8
    clip_grad: float = 1.0
    cache_views: int = 4
    max_frames: int | None = None
    seed: int = 0
    augment: Augment = field(default_factory=lambda: Augment(flip=True))
    distill_weight: float = 0.0
    distill_temperature: float = SOFT_TEMPERATURE
    distill_target: str = "soft"
    recover: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight must be in [0, 1] (0: labels only, 1: teacher only), got {self.distill_weight}")
        if not self.distill_temperature > 0:
            raise ConfigError(f"distill_temperature must be > 0 (1: the teacher's own softmax), got {self.distill_temperature}")
        if self.distill_target not in DISTILL_TARGETS:
            raise ConfigError(f"distill_target must be one of {', '.join(DISTILL_TARGETS)}, got {self.distill_target!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_grad < 0:
            raise ConfigError(f"clip_grad must be >= 0 (0 turns clipping off), got {self.clip_grad}")
        if self.recover < 0:
            raise ConfigError(f"recover must be >= 0 (0: never roll a stalled or collapsed run back), got {self.recover}")
        if self.cache_views < 0:
            raise ConfigError(f"cache_views must be >= 0 (0 runs the head every step), got {self.cache_views}")

    @property
    def sfc_options(self) -> dict[str, Any]:
        return {"pool": self.pool, "kqv": self.kqv, "theta_kernel": self.theta_kernel,
                "logit_scale": self.logit_scale, "prior": self.prior}

    def to_record(self) -> dict[str, Any]:
        record = json.loads(json.dumps(dataclasses.asdict(self)))
        if self.distill_weight == 0:  # absent when off: states written before distillation existed still resume
            record.pop("distill_weight")
            record.pop("distill_temperature")
        if self.distill_weight == 0 or self.distill_target == "soft":  # likewise for states from before the option
            record.pop("distill_target")
        if self.recover == 0:  # likewise: states from before roll-backs resume with --recover 0
            record.pop("recover")
        return record


def build_model(backbone: str, checkpoint: str | Path | None, options: SFCTrainOptions, *,
                trust_checkpoint: bool = False, num_classes: int | None = None) -> SFCModel:
    """The frozen backbone with a freshly initialised SFC (seeded)."""
    torch.manual_seed(options.seed)
    return create_model(backbone, tau=options.tau, split=options.split, checkpoint=checkpoint,
                        trust_checkpoint=trust_checkpoint, num_classes=num_classes, **options.sfc_options)


def sfc_step(model: SFCModel, feats: list[torch.Tensor], labels: list[int], opt: torch.optim.Optimizer,
             clip_grad: float, *, denominator: int | None = None, amp: Amp = Amp(),
             scaler: torch.amp.GradScaler | None = None, world: World = World(),
             teacher: list[torch.Tensor] | None = None, distill_weight: float = 0.0,
             distill_temperature: float = 1.0, distill_target: str = "soft") -> tuple[float, int, int, float]:
    """One optimizer step on a batch of head features; returns (summed loss, correct, agreeing, grad norm).

    ``teacher``: the dense teacher's logits per video, for the distillation term
    (:func:`~sfc_deploy.train.distill.distill_loss`); a label :data:`UNLABELLED` trains on it alone
    and never counts as correct. ``agreeing`` counts the videos whose top-1 is the teacher's (0
    without a teacher).

    Features of equal shape are stacked into one forward pass; the losses are summed and divided
    by ``denominator`` (the global batch size; default ``len(feats)``), so mixed lengths, and
    shards of one batch on several ranks (``world``), give the same gradient as one big batch
    would. Loss, correct count and gradients are summed over ranks in one all-reduce, so every
    rank clips with the global norm and takes the same step.
    """
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for j, f in enumerate(feats):
        groups[tuple(f.shape)].append(j)
    denominator = denominator or len(feats)
    device = next(model.sfc.parameters()).device
    if world.distributed:  # global BatchNorm statistics need every rank to run the same forward passes
        set_synced(model.sfc, same_on_all_ranks(list(groups), world))
    opt.zero_grad(set_to_none=True)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, agreeing: one copy per step
    for members in groups.values():
        x = torch.stack([feats[j] for j in members]).to(device, non_blocking=True)
        y = torch.tensor([labels[j] for j in members]).to(device, non_blocking=True)
        t = torch.stack([teacher[j] for j in members]).to(device) if teacher is not None else None
        with amp.autocast(str(device)):
            logits = model.tail(model.sfc(x))
            loss = distill_loss(logits, y, t, weight=distill_weight, temperature=distill_temperature,
                                target=distill_target)
        scaled = loss / denominator
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        totals[0] += loss.detach().double()
        top1 = logits.detach().argmax(-1)
        totals[1] += (top1 == y).sum()
        if t is not None:
            totals[2] += (top1 == t.argmax(-1)).sum()
    totals = sync_gradients([p for p in model.sfc.parameters() if p.requires_grad], totals, world)
    if scaler is not None:
        scaler.unscale_(opt)
    params = [p for p in model.sfc.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad > 0 else float("inf"))
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    loss_sum, correct, agreeing = totals.tolist()
    return loss_sum, int(correct), int(agreeing), float(norm)



#: The first epoch's loss over its last quarter of steps must fall below this fraction of its
#: first eighth, or ``train`` warns that the run has not started learning ...
STALL_RATIO = 0.97
STALL_MIN_STEPS = 8
#: ... unless its training top-1 (against the labels, or label-free against the teacher's top-1)
#: reached this multiple of chance (1 / classes): a run that learns from epoch 1 may end it at the
#: loss it started from, since the per-step loss of a batch of 4 is noisy (issue 16's harder setting:
#: runs at 62-70% training top-1 after epoch 1 crossed 0.97 while the run that never learned sat at 15%).
STALL_TIMES_CHANCE = 2.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def epoch_top1(record: dict[str, Any]) -> float | None:
    """An epoch's training top-1: against the labels where there are any, else agreement with the teacher's top-1."""
    return record.get("train_acc") if record.get("train_acc") is not None else record.get("teacher_agreement")


def stalled(record: dict[str, Any], num_classes: int) -> bool:
    """Whether an epoch's record shows a run that has not started learning: a loss that has not moved
    (:data:`STALL_RATIO`) and a training top-1 under :data:`STALL_TIMES_CHANCE` x chance (a record
    without one is judged by its loss). An epoch of fewer than :data:`STALL_MIN_STEPS` steps is too
    short to tell."""
    top1 = epoch_top1(record)
    return (record.get("steps", 0) >= STALL_MIN_STEPS
            and record["loss_last_steps"] >= STALL_RATIO * record["loss_first_steps"]
            and (top1 is None or top1 < STALL_TIMES_CHANCE / num_classes))


def collapsed(record: dict[str, Any], best: float | None, num_classes: int) -> bool:
    """Whether a run whose training top-1 once reached :data:`STALL_TIMES_CHANCE` x chance (``best``,
    over the earlier epochs) fell back under it in this epoch's record: a run that learned, then
    collapsed (issue 16: distillation at tau 4, attention stuck after epoch 2, gradients near 0)."""
    top1, line = epoch_top1(record), STALL_TIMES_CHANCE / num_classes
    return top1 is not None and best is not None and best >= line > top1


def clear_of_chance(record: dict[str, Any], num_classes: int) -> bool:
    """Whether an epoch's training top-1 reached :data:`STALL_TIMES_CHANCE` x chance: an epoch a roll-back may return to."""
    top1 = epoch_top1(record)
    return top1 is not None and top1 >= STALL_TIMES_CHANCE / num_classes


def trouble(record: dict[str, Any], *, first: bool, good_top1: float | None, num_classes: int) -> str | None:
    """What the roll-back checks make of an epoch's record: ``"stall"`` (the first epoch of a run that has not
    started learning), ``"collapse"`` (under the line again after ``good_top1`` was above it), else None."""
    if first and stalled(record, num_classes):
        return "stall"
    return "collapse" if collapsed(record, good_top1, num_classes) else None


def collapse_message(record: dict[str, Any], best: float) -> str:
    return (f"warning: training top-1 fell to {epoch_top1(record):.1%} in epoch {record['epoch']} from {best:.1%} "
            "earlier: this run has collapsed (attention stuck?) and its checkpoint is overwritten each epoch; "
            "train again with another --seed, or without distillation (--distill-weight 0)")


def rollback_message(record: dict[str, Any], done: int, attempt: int, limit: int, collapse: bool) -> str:
    top1 = epoch_top1(record)
    what = (f"training top-1 fell to {top1:.1%} in epoch {record['epoch']}: the run collapsed" if collapse else
            f"the loss has not moved in epoch {record['epoch']} (training top-1 {top1:.1%}): the run has not started learning"
            if top1 is not None else f"the loss has not moved in epoch {record['epoch']}: the run has not started learning")
    where = f"rolled back to the end of epoch {done}" if done else "restarted from a new initialisation"
    return (f"note: {what}; {where} with other random draws (roll-back {attempt} of {limit}, "
            "benchmarks/accuracy/NOTES.md; --recover 0 turns this off)")


def stall_message(record: dict[str, Any]) -> str:
    top1 = epoch_top1(record)
    seen = f", training top-1 {top1:.1%}" if top1 is not None else ""
    return (f"warning: the loss has not moved in epoch {record['epoch']} ({record['loss_first_steps']:.3f} over its first "
            f"steps, {record['loss_last_steps']:.3f} over its last{seen}); this run may never learn (attention stuck near "
            "uniform?): keep --prior on, try another --seed, and check metrics.jsonl")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_sfc(
    videos: VideoList,
    out: str | Path,
    options: SFCTrainOptions = SFCTrainOptions(),
    *,
    backbone: str = "slow8x8",
    checkpoint: str | Path | None = None,
    trust_checkpoint: bool = False,
    resume: bool = False,
    force: bool = False,
    threads: int | None = None,
    cache_file: str | Path | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
    amp: str = "off",
    world: World = World(),
    warn: Callable[[str], None] | None = _stderr,
) -> dict[str, Any]:
    """Train SFC; write ``sfc.safetensors`` (every epoch), the training state and metrics under ``out``.

    Args:
        cache_file: keep the head-feature cache in this folder and reuse it when it was built for
            the same backbone weights, views and videos (other SFC variants then skip the head);
            default: ``out/feature_cache`` (reused by ``--resume``).
        device: a concrete device (``cpu``, ``cuda:N``; see ``common.device.resolve_device``).
        amp: ``off``, ``bf16`` or ``fp16`` (CUDA only) autocast of SFC and tail.
        world: this process's rank and world size (:func:`sfc_deploy.train.distributed.env_world`),
            inside a joined process group; every rank calls this function, rank 0 writes.
        warn: where the one-line warning goes when the first epoch's loss has not moved (None: nowhere).

    Returns:
        A summary: checkpoint path, the last epoch's metrics, the seconds spent caching and training.
    """
    if not len(videos):
        raise ConfigError("the training list is empty; pass a CSV/folder with labelled videos")
    if options.distill_weight == 0 and any(y == UNLABELLED for y in videos.labels):
        raise ConfigError("unlabelled videos train only on the dense teacher's predictions; pass --distill-weight "
                          "above 0 (e.g. 1 for teacher only) or give every video a label")
    mode = Amp(amp)
    mode.check(device)
    out = Path(out)
    saved = check_resume(out, resume, force)  # every rank reads; none has written yet
    guard = (run_folder(out, keep_if=lambda: (out / STATE_FILE).exists()) if world.is_main
             else contextlib.nullcontext())
    with guard:
        return _train_sfc(videos, out, options, saved, backbone=backbone, checkpoint=checkpoint,
                          trust_checkpoint=trust_checkpoint, threads=threads, cache_file=cache_file,
                          progress=progress if world.is_main else None, device=device, amp=mode, world=world,
                          warn=warn)


def _train_sfc(videos: VideoList, out: Path, options: SFCTrainOptions, saved: dict[str, Any] | None, *,
               backbone: str, checkpoint: str | Path | None, trust_checkpoint: bool, threads: int | None,
               cache_file: str | Path | None, progress: Progress | None, device: str, amp: Amp,
               world: World, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    set_threads(threads)
    settings = {"kind": "sfc", "options": options.to_record(), "videos": len(videos), "backbone": backbone,
                "checkpoint": str(checkpoint) if checkpoint else None}
    if amp.mode != "off":  # absent when off: states written before --amp existed still resume
        settings["amp"] = amp.mode
    if saved is not None:
        check_same_run(saved["settings"], settings, out)
    if not videos.class_names and not checkpoint:
        raise ConfigError("training on unlabelled videos only needs the backbone's weights (--checkpoint): "
                          "its dense predictions are the only teacher")
    model = build_model(backbone, checkpoint, options, trust_checkpoint=trust_checkpoint,
                        num_classes=None if checkpoint else len(videos.class_names))
    if videos.class_names and model.config.num_classes != len(videos.class_names):
        raise ConfigError(
            f"the backbone has {model.config.num_classes} classes but the data has {len(videos.class_names)}; "
            "train SFC on the label set the backbone was trained on"
        )
    if world.distributed:
        sync_batchnorms(model.sfc)
    model.to(device)
    opt = make_optimizer(options.optimizer, model.sfc.parameters(), lr=options.lr, momentum=options.momentum,
                         weight_decay=options.weight_decay)
    scaler = amp.scaler(device) if amp.mode == "fp16" else None
    schedule = Schedule(options.schedule, options.lr, options.epochs, options.milestones, options.warmup)
    start_epoch = 0
    if saved is not None:
        model.sfc.load_state_dict(saved["sfc"])
        opt.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        start_epoch = int(saved["epoch"])
    recovery = Recovery(options.recover, saved.get("recovery") if saved is not None else None)
    if recovery.good is None and start_epoch == 0:
        recovery.remember(take(0, None, model.sfc, opt))
    metrics = (Metrics(out / METRICS_FILE, keep_until_epoch=start_epoch if saved is not None else None,
                       keep_attempts_before=recovery.attempt) if world.is_main else None)
    cached = options.cache_views > 0
    store = FrameStore(videos, preload=not cached, progress=progress)
    stride = model.config.stride
    cache_timer = Timer()
    cache, cache_loaded = None, False
    if cached:
        views = cache_views(options.augment, options.seed, len(store), options.cache_views, stride)
        key = cache_key(model, [str(p) for p, _ in videos], str(checkpoint) if checkpoint else None, views,
                        options.max_frames)
        model.eval()
        cache, cache_loaded = open_or_build_cache(
            Path(cache_file) if cache_file else out / CACHE_DIR, key, len(store),
            lambda i: video_features(model, store, i, views[i], options.augment, options.max_frames, device),
            world=world, progress=progress,
        )
    teacher = None
    if options.distill_weight > 0:
        tkey = teacher_key(cache_key(model, [str(p) for p, _ in videos], str(checkpoint) if checkpoint else None, [],
                                     options.max_frames), TEACHER_CLIPS)
        model.eval()
        teacher, _ = open_or_build_teacher(
            (Path(cache_file) if cache_file else out / CACHE_DIR) / TEACHER_DIR, tkey, len(store),
            lambda i: dense_logits(model, store.all_frames(i), device=device), world=world, progress=progress,
        )
    cache_seconds = cache_timer() if cached or teacher is not None else 0.0
    record: dict[str, Any] = {}
    train_seconds = 0.0
    labelled = sum(store.label(i) != UNLABELLED for i in range(len(store)))
    warned_collapse = False
    epoch = start_epoch
    while epoch < options.epochs:
        g = epoch_generator(options.seed, epoch, stream=recovery.attempt)
        order = torch.randperm(len(store), generator=g).tolist()
        steps = (len(order) + options.batch_size - 1) // options.batch_size
        model.train()  # SFC's own BatchNorm trains; the backbone stays in eval mode
        timer, loss_sum, correct, agreeing, norms, step_losses = Timer(), 0.0, 0, 0, [], []
        for step in range(steps):
            batch = order[step * options.batch_size : (step + 1) * options.batch_size]
            # every rank draws for the whole global batch (the generator stays in step), then keeps its shard
            mine = world.shard(range(len(batch)))
            if cache is not None:
                draws = [int(torch.randint(options.cache_views, (1,), generator=g)) for _ in batch]
                feats = [cache.view(batch[j], draws[j]) for j in mine]
            else:
                drawn = [options.augment.draw(g, stride) for _ in batch]
                feats = [head_features(model, render_view(store, batch[j], drawn[j], model, options.augment,
                                                          options.max_frames).to(device)) for j in mine]
            lr = schedule.at(epoch, step / steps)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, ok, agree, norm = sfc_step(model, feats, [store.label(batch[j]) for j in mine], opt, options.clip_grad,
                                      denominator=len(batch), amp=amp, scaler=scaler, world=world,
                                      teacher=[teacher[batch[j]] for j in mine] if teacher is not None else None,
                                      distill_weight=options.distill_weight,
                                      distill_temperature=options.distill_temperature,
                                      distill_target=options.distill_target)
            average_buffers(model.sfc, world)
            loss_sum, correct, agreeing = loss_sum + loss, correct + ok, agreeing + agree
            norms.append(norm)
            step_losses.append(loss / len(batch))
            if progress is not None:
                progress(f"epoch {epoch + 1}/{options.epochs}", step + 1, steps)
        seconds = timer()
        train_seconds += seconds
        record = {"epoch": epoch + 1, "loss": loss_sum / len(order),
                  "train_acc": correct / labelled if labelled else None,
                  "teacher_agreement": agreeing / len(order) if teacher is not None else None, "lr": lr,
                  "grad_norm_mean": sum(norms) / len(norms), "grad_norm_max": max(norms),
                  "clipped_fraction": sum(n > options.clip_grad for n in norms) / len(norms) if options.clip_grad else 0.0,
                  "loss_first_steps": _mean(step_losses[: max(1, steps // 8)]),
                  "loss_last_steps": _mean(step_losses[-max(1, steps // 4):]),
                  "steps": steps, "seconds": seconds, "seconds_per_video": seconds / len(order)}
        if recovery.attempt:
            record["attempt"] = recovery.attempt
        classes = model.config.num_classes
        problem = trouble(record, first=epoch == 0, good_top1=recovery.best_top1, num_classes=classes)
        stall, collapse = problem == "stall", problem == "collapse"
        if problem and recovery.can_roll_back():
            done = recovery.roll_back(model.sfc, opt, fresh=lambda: fresh_weights(model.sfc, options.seed, recovery.attempt))
            record["rolled_back_to_epoch"] = done
            if warn is not None and world.is_main:
                warn(rollback_message(record, done, recovery.attempt, options.recover, collapse))
        elif warn is not None and world.is_main:
            if stall:
                warn(stall_message(record))
            elif collapse and not warned_collapse:
                warn(collapse_message(record, recovery.best_top1))
                warned_collapse = True
        if "rolled_back_to_epoch" not in record and clear_of_chance(record, classes):
            recovery.remember(take(epoch + 1, epoch_top1(record), model.sfc, opt))
        model.eval()
        if world.is_main:
            metrics.write(record)
            now = record.get("rolled_back_to_epoch", epoch + 1)
            save_sfc_checkpoint(model, out / SFC_FILE, extra={"epoch": now, "train": settings})
            state = {"epoch": now, "sfc": state_on_cpu(model.sfc.state_dict()),
                     "optimizer": state_on_cpu(opt.state_dict()), "settings": settings,
                     "recovery": recovery.to_state()}
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            atomic_write(out / STATE_FILE, lambda tmp: torch.save(state, tmp))
        epoch = record.get("rolled_back_to_epoch", epoch + 1)
    model.eval()
    summary = {"checkpoint": str(out / SFC_FILE), "epochs": options.epochs, "last": record,
               "roll_backs": recovery.attempt,
               "cache_seconds": cache_seconds, "train_seconds": train_seconds, "cached": cached,
               "cache_loaded": cache_loaded, "device": device, "amp": amp.mode, "world_size": world.size,
               "environment": environment()}
    if world.is_main:
        if start_epoch >= options.epochs or not (out / SFC_FILE).exists():
            save_sfc_checkpoint(model, out / SFC_FILE, extra={"epoch": options.epochs, "train": settings})
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    world.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
    return summary


def train_steps_on_random_features(out: str | Path, *, device: str, amp: str = "off", steps: int = 8,
                                   backbone: str = "slow8x8_tiny", batch_size: int = 4, frames: int = 16,
                                   size: tuple[int, int] = (32, 40), lr: float = 2.0,
                                   seed: int = 0) -> dict[str, Any]:
    """A few SFC training steps on the device from random videos (no decoder needed): a device check.

    The head runs once on random clips with random labels; SFC then takes ``steps`` steps on that
    same batch (through :func:`sfc_step`, with autocast and, for fp16, the gradient scaler) and
    writes ``out/sfc.safetensors``. Memorising one batch drives the loss down, so a finite,
    decreasing loss shows the device path trains. Returns the losses and the checkpoint path.
    """
    mode = Amp(amp)
    mode.check(device)
    options = SFCTrainOptions(lr=lr, batch_size=batch_size, seed=seed)
    model = build_model(backbone, None, options, num_classes=3).to(device)
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch_size, 3, frames, *size, generator=gen).to(device)
    labels = torch.randint(3, (batch_size,), generator=gen).tolist()
    model.eval()
    feats = [head_features(model, clip) for clip in clips]
    opt = make_optimizer(options.optimizer, model.sfc.parameters(), lr=lr, momentum=options.momentum,
                         weight_decay=options.weight_decay)
    scaler = mode.scaler(device) if mode.mode == "fp16" else None
    model.train()
    losses = []
    for _ in range(steps):
        loss, _, _, _ = sfc_step(model, feats, labels, opt, options.clip_grad, amp=mode, scaler=scaler)
        losses.append(loss / batch_size)
    model.eval()
    path = save_sfc_checkpoint(model, Path(out) / SFC_FILE, extra={"steps": steps, "device": device, "amp": amp})
    return {"losses": losses, "checkpoint": str(path), "device": device, "amp": amp}
