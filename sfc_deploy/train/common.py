"""Pieces both training loops share: seeds, learning-rate schedules, metrics, resume.

Determinism is by construction rather than by saving RNG state: every random draw of epoch ``e``
comes from a generator seeded with ``(seed, e)``, and the learning rate is a pure function of the
position in training. A run resumed after epoch ``e`` therefore redoes exactly what an
uninterrupted run would have done, as long as the weights and the optimizer state are restored.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.common.outputs import run_folder
from sfc_deploy.common.parsing import parse_ints
from sfc_deploy.errors import CheckpointError, ConfigError

#: ``progress(description, done, total)``: the CLI turns it into a progress bar.
Progress = Callable[[str, int, int], None]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")
STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """The generator of one epoch's random draws (shuffles, clips, crops): a function of its inputs only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 101 + stream)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Schedule:
    """Learning rate as a function of (epoch, fraction of the epoch done).

    ``step`` divides by 10 at each milestone epoch (the paper: 8 and 12, counted from 1, so epochs
    8-11 run at lr/10 and 12-15 at lr/100). ``cosine`` decays to 0 over all epochs. ``warmup``
    epochs ramp linearly from lr/100 (a guard against the early blow-ups the SPEC's prototype saw).
    """

    kind: str
    lr: float
    epochs: int
    milestones: tuple[int, ...] = ()
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0 epochs, got {self.warmup}")

    def at(self, epoch: int, fraction: float = 0.0) -> float:
        """Learning rate at ``epoch`` (0-based) plus ``fraction`` of it."""
        pos = epoch + fraction
        if self.kind == "step":
            lr = self.lr * 0.1 ** sum(epoch + 1 >= m for m in self.milestones)
        else:
            lr = 0.5 * self.lr * (1 + math.cos(math.pi * min(pos / max(self.epochs, 1), 1.0)))
        if pos < self.warmup:
            lr *= 0.01 + 0.99 * pos / self.warmup
        return lr


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def parse_milestones(text: str) -> tuple[int, ...]:
    """``"8,12"`` -> (8, 12): epochs counted from 1."""
    return tuple(parse_ints(text, "milestones", minimum=1, example="8,12"))


class Metrics:
    """One JSON object per line in ``metrics.jsonl``; on resume, lines past the saved epoch are dropped,
    except those of attempts before ``keep_attempts_before`` (epochs a roll-back went back over,
    :mod:`sfc_deploy.train.recovery`: they happened)."""

    def __init__(self, path: Path, *, keep_until_epoch: int | None = None, keep_attempts_before: int = 0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_epoch is None:
            path.write_text("")
        elif path.exists():
            records = [(line, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
            kept = [line for line, r in records
                    if r.get("epoch", 0) <= keep_until_epoch or r.get("attempt", 0) < keep_attempts_before]
            path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def in_run_folder(train: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run a training function ``train(videos, out, ...)`` with ``out`` locked against a second writer;
    a run that fails before its first checkpoint leaves no folder behind (:func:`run_folder`)."""

    @functools.wraps(train)
    def wrapper(videos, out, *args, **kwargs):
        out = Path(out)
        with run_folder(out, keep_if=lambda: (out / STATE_FILE).exists()):
            return train(videos, out, *args, **kwargs)

    return wrapper


def check_resume(out: Path, resume: bool, force: bool) -> dict[str, Any] | None:
    """The saved training state to continue from, or None for a fresh run.

    A fresh run into a folder that already holds a run is refused unless ``force``: silently
    overwriting hours of training is worse than one more flag.
    """
    state_path = out / STATE_FILE
    if resume:
        if not state_path.is_file():
            raise ConfigError(f"--resume: {state_path} does not exist; start without --resume")
        try:
            return torch.load(state_path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
            raise CheckpointError(f"{state_path} is not a readable training state ({exc}); start over with --force") from exc
    if state_path.exists() and not force:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it or --force to start over")
    return None


def check_same_run(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """Refuse to resume with settings that would make the result differ from an uninterrupted run."""
    def flat(settings: dict[str, Any]) -> dict[str, Any]:  # one level of nesting named: options.lr, not all options
        return {f"{k}.{j}" if isinstance(v, dict) else k: w for k, v in settings.items()
                for j, w in (v.items() if isinstance(v, dict) else [(None, v)])}

    saved, current = flat(saved), flat(current)
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        shown = ", ".join(f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}" for k in diff[:3])
        raise ConfigError(f"cannot resume {out} with different settings ({shown}); use the saved ones or --force")


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many rows have their label among the top-k logits, per k (k capped at the class count)."""
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
        out[k] = int((top == labels[:, None]).any(-1).sum())
    return out


def state_on_cpu(value: Any) -> Any:
    """A training state (nested dicts/lists of tensors) with every tensor on the CPU, so a run saved
    on a GPU resumes on any device."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: state_on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(state_on_cpu(v) for v in value)
    return value
