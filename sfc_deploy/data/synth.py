"""A synthetic action dataset that makes *where to look in time* matter, written as real video files.

Each video is mostly clutter: a drifting textured background, camera noise and small dim objects
wandering about, identical in distribution for every class. In one random window covering part
of the video (25-45% by default) a bright object appears and performs the class's motion. Its
shape (disc, square, ring, bar), colour and start position are drawn independently of the class,
so a single frame says nothing about the class: only motion over several sampled frames does.
A clip taken at the wrong time sees only clutter, which is the failure of sparse sampling that
the paper's Figure 1 illustrates and that dense sampling and SFC are built to avoid.

Everything is drawn from ``numpy`` generators seeded by (seed, split, class, index) and encoded
single-threaded, so the same seed gives the same CSV files and the same decoded frames.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfc_deploy.common.atomic import atomic_dir, terminate_as_exit
from sfc_deploy.data.video import pick_encoder, write_video  # noqa: F401  (re-exported for tests)
from sfc_deploy.errors import ConfigError

#: Class motions in label order; ``--classes N`` uses the first N.
MOTIONS: tuple[str, ...] = (
    "move_right", "move_left", "move_up", "move_down", "grow", "shrink",
    "orbit_cw", "orbit_ccw", "blink", "zigzag",
)
SHAPES: tuple[str, ...] = ("disc", "square", "ring", "bar")
#: Action objects are at least this bright (channel mean); clutter stays well below it.
ACTION_MIN_BRIGHTNESS = 200
_ACTION_COLOURS = ((255, 255, 255), (255, 240, 170), (170, 240, 255), (255, 190, 240), (200, 255, 190))
#: Counter videos: gray level step between consecutive digits, and digits' base.
_COUNTER_STEP, _COUNTER_BASE = 8, 28


def counter_frames(num_frames: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """Frames whose content is their own index: uint8 (T, H, W, 3), for up to 784 frames.

    The top half's gray level encodes ``t % 28`` and the bottom half's ``t // 28`` in steps of 8,
    far more than codec error, so :func:`read_counter` recovers exactly which frame a reader
    returned, whatever the codec, and also from any centre-row crop (left/centre/right crops of
    landscape frames included). Tests and benchmarks use it to check frame indices end to end.
    """
    if num_frames > _COUNTER_BASE**2:
        raise ConfigError(f"counter videos hold at most {_COUNTER_BASE ** 2} frames, got {num_frames}")
    h, w = size
    t = np.arange(num_frames)
    out = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    out[:, : h // 2] = (16 + _COUNTER_STEP * (t % _COUNTER_BASE)).astype(np.uint8)[:, None, None, None]
    out[:, h // 2 :] = (16 + _COUNTER_STEP * (t // _COUNTER_BASE)).astype(np.uint8)[:, None, None, None]
    return out


def read_counter(frames: torch.Tensor) -> list[int]:
    """Frame indices encoded by :func:`counter_frames`, from (3, T, H, W) frames in 0-255 units."""
    _, _, h, w = frames.shape
    gray = frames.to(torch.float32).mean(0)
    cols = slice(w // 4, 3 * w // 4)
    digits = []
    for rows in (slice(h // 8, 3 * h // 8), slice(5 * h // 8, 7 * h // 8)):
        level = gray[:, rows, cols].flatten(1).median(1).values
        digits.append(((level - 16) / _COUNTER_STEP).round().long())
    return (digits[0] + _COUNTER_BASE * digits[1]).tolist()


def write_counter_video(
    path: str | Path, frames: int = 40, size: tuple[int, int] = (48, 64), fps: int = 25, *, gop: int | None = None,
    codec: str | None = None,
) -> Path:
    """Write a :func:`counter_frames` video (the ``make_video`` test fixture's file)."""
    return write_video(path, counter_frames(frames, size), fps, codec=codec, gop=gop)


@dataclass(frozen=True)
class VideoSpec:
    """Everything that defines one synthetic video; ``render_video(spec)`` is a pure function of it.

    Attributes:
        motion: one of :data:`MOTIONS`.
        frames: length in raw frames.
        size: (height, width).
        start: first frame of the action window.
        end: one past its last frame.
        seed: entropy for everything else (shape, colour, path, clutter, noise).
        distractors: number of clutter objects.
        noise: camera noise standard deviation, in 0-255 pixel units.
    """

    motion: str
    frames: int
    size: tuple[int, int]
    start: int
    end: int
    seed: tuple[int, ...]
    distractors: int = 4
    noise: float = 5.0


def _alpha(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """Soft (anti-aliased) coverage of a shape centred at (cy, cx), so sub-pixel motion is smooth."""
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        dist = np.sqrt(dy * dy + dx * dx) - r
    elif shape == "square":
        dist = np.maximum(np.abs(dy), np.abs(dx)) - 0.85 * r
    elif shape == "ring":
        dist = np.abs(np.sqrt(dy * dy + dx * dx) - 0.75 * r) - max(1.2, 0.3 * r)
    else:  # bar
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        dist = np.maximum(np.abs(u) - 1.4 * r, np.abs(v) - max(1.5, 0.45 * r))
    return np.clip(0.5 - dist, 0.0, 1.0)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Static clutter: two octaves of smooth colour noise in 35-115, shape (3, h, w)."""
    layers = []
    for cell, weight in ((10, 0.6), (3, 0.4)):
        coarse = torch.from_numpy(rng.random((1, 3, h // cell + 2, w // cell + 2), dtype=np.float32))
        layers.append(weight * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0])
    tint = torch.from_numpy(rng.uniform(-8, 8, (3, 1, 1)).astype(np.float32))
    return (35.0 + 80.0 * sum(layers) + tint).clamp(0, 255).numpy()


def _trajectory(motion: str, rng: np.random.Generator, h: int, w: int, r: float, length: int):
    """Per-frame (cy, cx, scale, visible) of the action object, as a function of window frame i."""
    m = 1.6 * r + 1
    if motion in ("move_right", "move_left", "zigzag"):
        d = rng.uniform(0.45, 0.6) * w
        x0, y0 = rng.uniform(m, w - m - d), rng.uniform(m, h - m)
        sign = (1 if motion == "move_right" else -1) if motion != "zigzag" else rng.choice((-1, 1))
        amp, period = rng.uniform(0.12, 0.2) * h, rng.uniform(24, 40)
        if motion == "zigzag":
            y0 = rng.uniform(m + amp, h - m - amp)

        def at(i: int, p: float) -> tuple[float, float, float, bool]:
            x = x0 + d * (p if sign > 0 else 1 - p)
            y = y0 + (amp * (4 * abs((i / period) % 1 - 0.5) - 1) if motion == "zigzag" else 0.0)
            return y, x, 1.0, True
    elif motion in ("move_up", "move_down"):
        d = rng.uniform(0.45, 0.6) * h
        y0, x0 = rng.uniform(m, h - m - d), rng.uniform(m, w - m)

        def at(i: int, p: float) -> tuple[float, float, float, bool]:
            return y0 + d * (p if motion == "move_down" else 1 - p), x0, 1.0, True
    elif motion in ("orbit_cw", "orbit_ccw"):
        radius = rng.uniform(0.2, 0.28) * min(h, w)
        cy, cx = rng.uniform(m + radius, h - m - radius), rng.uniform(m + radius, w - m - radius)
        a0, turns = rng.uniform(0, 2 * math.pi), rng.uniform(0.75, 1.25)
        sign = 1 if motion == "orbit_cw" else -1  # image y points down: increasing angle turns clockwise

        def at(i: int, p: float) -> tuple[float, float, float, bool]:
            a = a0 + sign * 2 * math.pi * turns * p
            return cy + radius * math.sin(a), cx + radius * math.cos(a), 1.0, True
    elif motion in ("grow", "shrink", "blink"):
        cy, cx = rng.uniform(1.5 * m, h - 1.5 * m), rng.uniform(1.5 * m, w - 1.5 * m)
        half = int(rng.integers(8, 17))

        def at(i: int, p: float) -> tuple[float, float, float, bool]:
            if motion == "blink":
                return cy, cx, 1.0, (i // half) % 2 == 0
            return cy, cx, 0.5 + (p if motion == "grow" else 1 - p), True
    else:
        raise ConfigError(f"unknown motion {motion!r}; expected one of {', '.join(MOTIONS)}")
    return at


def render_video(spec: VideoSpec) -> np.ndarray:
    """Draw the frames of ``spec``: uint8 (T, H, W, 3) RGB."""
    rng = np.random.default_rng(spec.seed)
    h, w = spec.size
    unit = min(h, w) / 64.0
    pad = max(2, round(3 * unit))
    texture = _texture(rng, h + 2 * pad, w + 2 * pad)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    # Clutter objects: random walks, dim colours, blinking in and out of view.
    clutter = [dict(
        pos=rng.uniform((2, 2), (h - 2, w - 2)), vel=rng.uniform(-0.8, 0.8, 2) * unit,
        r=rng.uniform(1.5, 3.0) * unit, colour=rng.uniform(60, 150, 3), shape=SHAPES[int(rng.integers(0, 2))],
        visible=bool(rng.random() < 0.8),
    ) for _ in range(spec.distractors)]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = np.array(_ACTION_COLOURS[int(rng.integers(len(_ACTION_COLOURS)))], dtype=np.float32)
    radius, angle = rng.uniform(5.0, 7.0) * unit, rng.uniform(0, math.pi)
    length = spec.end - spec.start
    at = _trajectory(spec.motion, rng, h, w, radius, length)
    offset = np.array([pad, pad])
    out = np.empty((spec.frames, h, w, 3), dtype=np.uint8)
    for t in range(spec.frames):
        if t % 8 == 0:  # camera shake: a slow random walk of the background crop
            offset = np.clip(offset + rng.integers(-1, 2, 2), 0, 2 * pad)
        frame = texture[:, offset[0] : offset[0] + h, offset[1] : offset[1] + w].transpose(1, 2, 0).copy()
        for obj in clutter:
            obj["vel"] = np.clip(obj["vel"] + rng.normal(0, 0.08, 2) * unit, -unit, unit)
            obj["pos"] = obj["pos"] + obj["vel"]
            for k, limit in enumerate((h, w)):  # bounce off the borders
                if not 1 <= obj["pos"][k] <= limit - 1:
                    obj["vel"][k] *= -1
                    obj["pos"][k] = np.clip(obj["pos"][k], 1, limit - 1)
            if rng.random() < 1 / 60:
                obj["visible"] = not obj["visible"]
            if obj["visible"]:
                a = _alpha(obj["shape"], yy, xx, obj["pos"][0], obj["pos"][1], obj["r"], 0.0)[..., None]
                frame += a * (obj["colour"] - frame)
        if spec.start <= t < spec.end:
            i = t - spec.start
            cy, cx, scale, visible = at(i, i / max(length - 1, 1))
            if visible:
                a = _alpha(shape, yy, xx, cy, cx, radius * scale, angle)[..., None]
                frame += a * (colour - frame)
        frame += rng.standard_normal((h, w, 3), dtype=np.float32) * spec.noise
        out[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class SynthOptions:
    """Options of :func:`write_synth_dataset` (the ``sfc-deploy synth`` flags)."""

    classes: int = 8
    train_per_class: int = 50
    test_per_class: int = 15
    frames: int = 256
    size: tuple[int, int] = (64, 80)
    fps: int = 25
    seed: int = 0
    window: tuple[float, float] = (0.25, 0.45)
    distractors: tuple[int, int] = (3, 6)
    noise: float = 5.0

    def validate(self) -> SynthOptions:
        """Reject values that cannot make a useful dataset, saying which and why."""
        if not 2 <= self.classes <= len(MOTIONS):
            raise ConfigError(
                f"classes must be 2..{len(MOTIONS)} (one per motion: {', '.join(MOTIONS)}), got {self.classes}"
            )
        if self.train_per_class < 0 or self.test_per_class < 0 or self.train_per_class + self.test_per_class == 0:
            raise ConfigError("train/test videos per class must be >= 0 and not both 0")
        if self.frames < 16:
            raise ConfigError(f"frames must be >= 16 so an action spans several sampled frames, got {self.frames}")
        h, w = self.size
        if h < 32 or w < 32 or h % 2 or w % 2:
            raise ConfigError(f"size must be even and at least 32x32 (yuv420p), got {h}x{w}")
        lo, hi = self.window
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"window fractions must satisfy 0 < min <= max <= 1, got {lo}-{hi}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.fps < 1:
            raise ConfigError(f"fps must be >= 1, got {self.fps}")
        return self


def parse_size(text: str) -> tuple[int, int]:
    """``"64x80"`` -> (64, 80): height x width."""
    try:
        h, w = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise ConfigError(f"size must be HEIGHTxWIDTH such as 64x80, got {text!r}") from None
    return h, w


def video_specs(options: SynthOptions, split: str) -> list[tuple[str, VideoSpec]]:
    """(relative path, spec) of every video of ``split`` ("train" or "test"), in CSV order."""
    code, per_class = {"train": (0, options.train_per_class), "test": (1, options.test_per_class)}[split]
    specs = []
    for label, motion in enumerate(MOTIONS[: options.classes]):
        for i in range(per_class):
            seed = (options.seed, code, label, i)
            rng = np.random.default_rng((*seed, 7))
            length = max(2, round(rng.uniform(*options.window) * options.frames))
            start = int(rng.integers(0, options.frames - length + 1))
            distractors = int(rng.integers(options.distractors[0], options.distractors[1] + 1))
            spec = VideoSpec(
                motion, options.frames, options.size, start, start + length, seed, distractors, options.noise
            )
            specs.append((f"videos/{split}/{motion}/{motion}_{i:04d}.mp4", spec))
    return specs


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_synth_dataset` wrote."""

    out: Path
    class_names: tuple[str, ...]
    num_train: int
    num_test: int


def _render_and_write(job: tuple[Path, VideoSpec, int]) -> None:
    path, spec, fps = job
    write_video(path, render_video(spec), fps)


def write_synth_dataset(
    out: str | Path,
    options: SynthOptions = SynthOptions(),
    *,
    force: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Render, encode and index a synthetic dataset under ``out``.

    Writes ``classes.txt``, ``train.csv`` and ``test.csv`` (``path,label,start,end``: the action
    window in raw frames, end exclusive), ``synth.json`` (the options) and ``videos/``. Work happens
    in a temporary sibling directory that is renamed at the end, so an interrupted run never
    leaves a half-written dataset that looks complete.

    Args:
        out: the dataset directory to create.
        options: what to generate.
        force: replace an existing ``out``.
        workers: processes rendering and encoding in parallel (each video depends only on its
            own seed, so the output is the same for any count).
        progress: called as ``progress(done, total)`` after each video.
    """
    options.validate()
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another directory or pass --force to replace it")
    splits = {split: video_specs(options, split) for split in ("train", "test")}
    names = MOTIONS[: options.classes]
    try:
        with terminate_as_exit(), atomic_dir(out, replace=force) as tmp:
            _write_into(tmp, options, splits, workers=workers, progress=progress)
    except FileExistsError:
        raise ConfigError(f"{out} appeared while generating; pass --force to replace it") from None
    return SynthSummary(out, names, len(splits["train"]), len(splits["test"]))


def _write_into(
    root: Path,
    options: SynthOptions,
    splits: dict[str, list[tuple[str, VideoSpec]]],
    *,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Every file of the dataset under ``root`` (the temporary folder :func:`write_synth_dataset` renames)."""
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in MOTIONS[: options.classes]))
    (root / "synth.json").write_text(json.dumps(asdict(options), indent=2, sort_keys=True) + "\n")
    jobs = [(root / rel, spec, options.fps) for specs in splits.values() for rel, spec in specs]
    if workers == 1:
        for done, job in enumerate(jobs, start=1):
            _render_and_write(job)
            if progress is not None:
                progress(done, len(jobs))
    else:
        # spawn, not fork: a forked child inherits torch's thread pools in an unusable state
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        try:
            futures = [pool.submit(_render_and_write, job) for job in jobs]
            for done, future in enumerate(as_completed(futures), start=1):
                future.result()
                if progress is not None:
                    progress(done, len(jobs))
        finally:  # on failure or a signal, drop the videos not yet started instead of rendering them all
            pool.shutdown(wait=True, cancel_futures=True)
    for split, specs in splits.items():
        with (root / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["path", "label", "start", "end"])
            writer.writerows([rel, spec.motion, spec.start, spec.end] for rel, spec in specs)
