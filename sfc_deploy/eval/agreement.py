"""Agreement with dense 30-crop, and the spread of several seeds of one SFC variant.

A team replacing dense inference with SFC watches more than top-1: how often SFC gives the
*same answer* as the model it replaces (top-1 agreement), how far its class distribution is
from dense's (mean KL(dense || method), both softmaxes at temperature 1), and, on the videos
where the two disagree, which of them is right. :func:`agreement` computes these from the
per-video logits the evaluation loop keeps; :func:`seed_groups` folds the rows of several
checkpoints of one variant (trained with the same settings, different seeds) into mean and
sample standard deviation, so one lucky or unlucky seed is not read as a property of a recipe.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import torch

#: Row fields summarised over the seeds of one variant.
SEED_FIELDS = ("top1", "top5", "agreement", "kl_from_dense")


def agreement(logits: Sequence[Sequence[float]], reference: Sequence[Sequence[float]],
              labels: Sequence[int]) -> dict[str, Any]:
    """How ``logits`` (one row per video) answer compared with ``reference`` (dense's logits).

    Returns:
        ``agreement``: fraction of videos with the same top-1; ``kl_from_dense``: mean over videos
        of KL(softmax(reference) || softmax(logits)) in nats; ``disagreements``: how many videos
        differ in top-1; ``right_when_disagreeing`` / ``dense_right_when_disagreeing``: of those,
        the fraction where this method's / dense's top-1 is the label (None when they never differ;
        the two need not sum to 1: both can be wrong).
    """
    a = torch.as_tensor(logits, dtype=torch.float64)
    r = torch.as_tensor(reference, dtype=torch.float64)
    y = torch.as_tensor(labels)
    top_a, top_r = a.argmax(-1), r.argmax(-1)
    differ = top_a != top_r
    log_r = torch.log_softmax(r, -1)
    kl = (log_r.exp() * (log_r - torch.log_softmax(a, -1))).sum(-1)
    n = int(differ.sum())
    return {
        "agreement": float((~differ).double().mean()),
        "kl_from_dense": float(kl.mean()),
        "disagreements": n,
        "right_when_disagreeing": float((top_a == y)[differ].double().mean()) if n else None,
        "dense_right_when_disagreeing": float((top_r == y)[differ].double().mean()) if n else None,
    }


def seed_of(meta: dict[str, Any]) -> int | None:
    """The training seed an SFC checkpoint's metadata records (None when it records none)."""
    return ((meta.get("train") or {}).get("options") or {}).get("seed")


def variant_key(meta: dict[str, Any]) -> str:
    """What makes two SFC checkpoints the same variant: SFC config, split and training settings but the seed."""
    seed = seed_of(meta)
    train = dict((meta.get("train") or {}))
    train["options"] = {k: v for k, v in (train.get("options") or {}).items() if k != "seed"}
    config = {k: v for k, v in meta.items() if k not in ("checkpoint", "train", "seed")}
    return json.dumps({"config": config, "train": train, "has_seed": seed is not None}, sort_keys=True)


def _label(names: list[str]) -> str:
    """A group's name: the names' common prefix without trailing separators (``topk_s0``, ``topk_s1`` -> ``topk``)."""
    prefix = re.sub(r"[_\-:#/.]+(seed|s)?$", "", os.path.commonprefix(names))
    return prefix or names[0]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def seed_groups(rows: list[dict[str, Any]], keys: dict[str, str]) -> list[dict[str, Any]]:
    """Mean and spread over checkpoints of one variant, per strategy and tau (groups of 2 or more only).

    Args:
        rows: the report's result rows; SFC rows carry ``sfc`` (the checkpoint's name).
        keys: checkpoint name -> :func:`variant_key` of its metadata.

    Returns:
        One dict per group: ``variant`` (a label from the names), ``strategy``, ``tau``, ``members``,
        ``seeds`` (None where a checkpoint does not record one), and ``<field>_mean``/``_std``/``_min``/``_max``
        for top-1, top-5 and, where present, agreement and KL; std is the sample standard deviation.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("sfc") is None:
            continue
        groups.setdefault((keys[row["sfc"]], row["strategy"], row["tau"]), []).append(row)
    out = []
    for (_, strategy, tau), members in groups.items():
        if len(members) < 2:
            continue
        group: dict[str, Any] = {"variant": _label([m["sfc"] for m in members]), "strategy": strategy, "tau": tau,
                                 "members": [m["sfc"] for m in members], "seeds": [m.get("seed") for m in members],
                                 "n": len(members)}
        for field in SEED_FIELDS:
            values = [m[field] for m in members if m.get(field) is not None]
            if len(values) == len(members):
                mean, std = _mean_std(values)
                group.update({f"{field}_mean": mean, f"{field}_std": std, f"{field}_min": min(values),
                              f"{field}_max": max(values)})
        out.append(group)
    return out
