"""Rolling an SFC run that stalled or collapsed back to its last good state (issue 16).

What goes wrong, measured on ``benchmarks/accuracy``'s harder setting (``NOTES.md``): the attention
learns to *avoid* the frames that hold the action (the spread over time of its scaled logits grew
from 8 to 21), the compressed video is background only, the frozen tail's answer is the same for
every video, and since the attention weight on the action frames is ~0 and the background frames are
alike, the gradient that could undo it is ~0 as well (norms of 0.002-0.5 per step, 1-140 while the
run learned): an absorbing state. A run can fall into it in epoch 1 (a stall: 10% training top-1 for
7 epochs) or after learning (a collapse: 63-66% in epochs 1-2, 9-12% from epoch 4 on); distillation
from a flat dense teacher makes both likelier, since a background-only answer is nearly as flat as
the teacher.

So ``train`` checks every epoch's training top-1 (:mod:`sfc_deploy.train.sfc`'s ``stalled`` and
``collapsed``) and, up to ``SFCTrainOptions.recover`` times per run, goes back to the end of the
last epoch whose top-1 was clear of chance (or to a fresh initialisation when no epoch was), and
goes on from there with other random draws: ``attempt`` n (0 first) draws epoch e's order and views
from :func:`~sfc_deploy.train.common.epoch_generator` stream n, so a run without roll-backs draws
exactly as before, and a roll-back neither replays the batches that led to the collapse nor breaks
determinism or ``--resume`` (the snapshot and the attempt count are part of the training state).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sfc_deploy.train.common import state_on_cpu


@dataclass
class Snapshot:
    """SFC's weights and the optimizer's state after ``epoch`` epochs (0: the start), on the CPU."""

    epoch: int
    top1: float | None
    sfc: dict[str, torch.Tensor]
    optimizer: dict[str, Any]

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "top1": self.top1, "sfc": self.sfc, "optimizer": self.optimizer}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Snapshot":
        return cls(int(state["epoch"]), state["top1"], state["sfc"], state["optimizer"])


def take(epoch: int, top1: float | None, sfc: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Snapshot:
    """A copy (never a view of the live tensors) of the state to come back to."""
    return Snapshot(epoch, top1, copy.deepcopy(state_on_cpu(sfc.state_dict())),
                    copy.deepcopy(state_on_cpu(optimizer.state_dict())))


class Recovery:
    """The last good snapshot and how many roll-backs a run has used of its ``limit``."""

    def __init__(self, limit: int, state: dict[str, Any] | None = None) -> None:
        self.limit = limit
        self.attempt = int(state["attempt"]) if state else 0
        self.good = Snapshot.from_state(state["good"]) if state and state.get("good") else None

    @property
    def best_top1(self) -> float | None:
        """Training top-1 of the epoch the run would go back to (None: the start)."""
        return self.good.top1 if self.good is not None else None

    def remember(self, snapshot: Snapshot) -> None:
        self.good = snapshot

    def can_roll_back(self) -> bool:
        return self.good is not None and self.attempt < self.limit

    def roll_back(self, sfc: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                  fresh: Callable[[], dict[str, torch.Tensor]] | None = None) -> int:
        """Restore the good snapshot (the SFC weights ``fresh()`` draws for the new attempt instead when it
        is the start) and start the next attempt; returns the number of epochs the run has completed from here."""
        self.attempt += 1
        sfc.load_state_dict(fresh() if fresh is not None and self.good.epoch == 0 else self.good.sfc)
        optimizer.load_state_dict(copy.deepcopy(self.good.optimizer))
        return self.good.epoch

    def to_state(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "good": self.good.to_state() if self.good is not None else None}


def fresh_weights(sfc: torch.nn.Module, seed: int, attempt: int) -> dict[str, torch.Tensor]:
    """A new initialisation of ``sfc``'s module for a run that goes back to its start: attempt n of
    seed s draws it from seed (s, n), leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + attempt)
        return type(sfc)(sfc.config).state_dict()
