"""Clip-level training of a whole backbone: for users without pretrained weights, and for our demo.

No weights can be downloaded here, so the accuracy experiment starts by training a small
slow-only backbone on random clips of the synthetic videos, the way Kinetics models are
trained: a clip of ``frames`` frames at the backbone's stride from a random time, a random
outward-scaled crop, and the *video's* label (clips that miss the action are label noise, which
is exactly why dense sampling and SFC beat a single clip at test time).

Clips are decoded on the fly, only their own frames, by DataLoader workers (:mod:`.loader`), from
plans this module draws in the main process: memory stays flat as the video list grows, and the
weights do not depend on the number of workers or on preloading. ``device`` and ``amp`` put the
model on a GPU with autocast (and a gradient scaler for fp16).

The result is a canonical ``.safetensors`` file whose metadata carries the backbone config
(class names and preprocessing included), so ``--checkpoint`` loads it like any converted file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sfc_deploy.common.atomic import atomic_write, atomic_write_text
from sfc_deploy.common.device import Amp, resolve_device
from sfc_deploy.common.environment import environment
from sfc_deploy.data.crops import clip_frame_indices
from sfc_deploy.data.datasets import VideoList
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.checkpoint import FORMAT
from sfc_deploy.models.config import BackboneConfig
from sfc_deploy.models.factory import create_backbone
from sfc_deploy.models.registry import get_config
from sfc_deploy.models.resnet3d import ResNet3d
from sfc_deploy.train.common import (
    METRICS_FILE, STATE_FILE, Metrics, Progress, Schedule, Timer, check_resume, check_same_run, epoch_generator,
    in_run_folder,
    make_optimizer, set_threads, state_on_cpu,
)
from sfc_deploy.train.loader import ClipLoader, ClipPlan
from sfc_deploy.train.views import Augment, FrameStore

BACKBONE_FILE = "backbone.safetensors"


@dataclass(frozen=True)
class BackboneTrainOptions:
    """Settings of :func:`train_backbone`; all of them are recorded and checked on ``--resume``.

    Attributes:
        backbone: registered backbone name (``slow8x8_tiny`` suits a CPU).
        short_side: frames are resized to this short side, and dense clips cropped to it (default:
            the registered config's 256; 64 suits the 64x80 synthetic videos).
        epochs: passes over the videos.
        batch_size: clips per step.
        clips_per_video: clips drawn from each video per epoch.
        lr, momentum, weight_decay, optimizer, schedule, milestones, warmup: the optimisation.
        seed: every random draw of epoch ``e`` comes from ``(seed, e)``.
        augment: outward scaling, crop fraction, flip, temporal jitter.
    """

    backbone: str = "slow8x8_tiny"
    short_side: int | None = None
    epochs: int = 30
    batch_size: int = 16
    clips_per_video: int = 1
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    warmup: float = 1.0
    seed: int = 0
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "clips_per_video"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.short_side is not None and self.short_side < 16:
            raise ConfigError(f"short side must be >= 16 pixels, got {self.short_side}")

    def to_record(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def backbone_config(options: BackboneTrainOptions, class_names: tuple[str, ...]) -> BackboneConfig:
    """The config the trained weights belong to: class count, names and input size included."""
    config = get_config(options.backbone, num_classes=len(class_names)).replace(class_names=tuple(class_names))
    if options.short_side is not None:
        pre = dataclasses.replace(config.preprocess, short_side=options.short_side, crop=options.short_side)
        config = config.replace(preprocess=pre)
    return config


def save_backbone(model: ResNet3d, path: str | Path) -> Path:
    """Write canonical safetensors with the config in the metadata (atomically), like ``convert``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    metadata = {"sfc_deploy_format": FORMAT, "backbone_config": model.config.to_json(), "source_layout": "sfc-deploy train-backbone"}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def draw_clip(store: FrameStore, i: int, config: BackboneConfig, g: torch.Generator) -> list[int]:
    """Raw frame indices of a random clip of video ``i`` (frames at the config's stride)."""
    n = store.num_frames(i)
    start = int(torch.randint(0, max(n - config.clip_span, 0) + 1, (1,), generator=g))
    return clip_frame_indices(n, start, config.frames, config.stride)


def draw_epoch(store: FrameStore, config: BackboneConfig, options: BackboneTrainOptions, epoch: int) -> list[list[ClipPlan]]:
    """Every random draw of one epoch, as batches of clip plans: a function of (seed, epoch) only.

    The order of draws (a shuffle per clip of each video, then per clip its view and its start) is
    the one the loop has always used, so runs from before the loader existed are reproduced.
    """
    g = epoch_generator(options.seed, epoch)
    order = torch.cat([torch.randperm(len(store), generator=g) for _ in range(options.clips_per_video)]).tolist()
    batches = []
    for first in range(0, len(order), options.batch_size):
        plans = []
        for i in order[first : first + options.batch_size]:
            view = options.augment.draw(g, 1)  # the clip start already jitters time
            plans.append(ClipPlan(i, tuple(draw_clip(store, i, config, g)), view))
        batches.append(plans)
    return batches



@in_run_folder
def train_backbone(
    videos: VideoList,
    out: str | Path,
    options: BackboneTrainOptions = BackboneTrainOptions(),
    *,
    resume: bool = False,
    force: bool = False,
    threads: int | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
    amp: str = "off",
    workers: int = 0,
    preload: bool = False,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Train a backbone on random clips; write ``backbone.safetensors``, state and metrics under ``out``.

    Args:
        device: ``auto|cpu|cuda|cuda:N`` (see :func:`~sfc_deploy.common.device.resolve_device`).
        amp: mixed precision ``off|bf16|fp16`` (fp16 adds a gradient scaler and needs CUDA).
        workers: DataLoader processes decoding clips (0: in this process). Results do not depend on it.
        preload: decode every frame of every video up front (small sets only: memory grows with the list).
        channels_last: channels-last-3d memory format for the model and its input (may help on GPUs).

    Device, precision and loading are not part of the recorded settings: a run may resume with others.

    Returns:
        A summary: the weights' path, epochs done, the last epoch's metrics, seconds spent.
    """
    if not len(videos):
        raise ConfigError("the training list is empty; pass a CSV/folder with labelled videos")
    device = resolve_device(device)
    precision = Amp(amp)
    precision.check(device)
    set_threads(threads)
    out = Path(out)
    saved = check_resume(out, resume, force)
    settings = {"kind": "backbone", "options": options.to_record(), "videos": len(videos)}
    if saved is not None:
        check_same_run(saved["settings"], settings, out)
    config = backbone_config(options, tuple(videos.class_names))
    torch.manual_seed(options.seed)  # weight initialisation
    model = create_backbone(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = make_optimizer(options.optimizer, model.parameters(), lr=options.lr, momentum=options.momentum,
                         weight_decay=options.weight_decay)
    scaler = precision.scaler(device)
    schedule = Schedule(options.schedule, options.lr, options.epochs, options.milestones, options.warmup)
    start_epoch = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if scaler.is_enabled() and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        start_epoch = int(saved["epoch"])
    metrics = Metrics(out / METRICS_FILE, keep_until_epoch=start_epoch if saved is not None else None)
    store = FrameStore(videos, preload=preload, progress=progress)
    crop = max(1, round(config.preprocess.crop * options.augment.crop_fraction))
    total = Timer()
    record: dict[str, Any] = {}
    with ClipLoader(store, config.preprocess, (crop, crop), workers=workers, device=device,
                    channels_last=channels_last) as loader:
        for epoch in range(start_epoch, options.epochs):
            batches = draw_epoch(store, config, options, epoch)
            steps, clips = len(batches), sum(len(b) for b in batches)
            where = f" (training epoch {epoch + 1}"
            where += (f"; {out} keeps epoch {epoch}: replace the file and pass --resume)" if epoch else ")")
            model.train()
            timer = Timer()
            # accumulated on the device (no host sync per step), in float64 like the Python floats they replace
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            for step, (x, y) in enumerate(loader.epoch(batches, where=where)):
                lr = schedule.at(epoch, step / steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                with precision.autocast(device):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.detach().argmax(-1) == y).sum()
                if progress is not None:
                    progress(f"epoch {epoch + 1}/{options.epochs}", step + 1, steps)
            record = {"epoch": epoch + 1, "loss": float(loss_sum) / clips, "clip_acc": int(correct) / clips,
                      "lr": lr, "seconds": timer()}
            model.eval()
            save_backbone(model, out / BACKBONE_FILE)
            state = {"epoch": epoch + 1, "model": state_on_cpu(model.state_dict()), "optimizer": state_on_cpu(opt.state_dict()),
                     "settings": settings}
            if scaler.is_enabled():
                state["scaler"] = scaler.state_dict()
            atomic_write(out / STATE_FILE, lambda tmp: torch.save(state, tmp))
            metrics.write(record)
    model.eval()
    if start_epoch >= options.epochs:
        save_backbone(model, out / BACKBONE_FILE)
    summary = {"weights": str(out / BACKBONE_FILE), "epochs": options.epochs, "last": record,
               "seconds": total(), "device": device, "amp": precision.mode, "workers": workers, "preload": preload,
               "environment": environment()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
