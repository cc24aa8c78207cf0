"""Distillation from the frozen backbone's own dense 30-crop predictions.

A team that replaces dense inference with SFC wants SFC to give the answers their deployed dense
model gives, and often has far more unlabelled production videos than labelled ones. The frozen
backbone *is* that dense model, so every training video has a free teacher: its 10 x 3 crop
logits, averaged exactly as ``sfc-deploy eval``'s ``dense-30`` averages them. They depend on the
backbone weights and the video only (no augmentation), so they are computed once per video and
kept beside the head-feature cache (:func:`open_or_build_teacher`), with the same resumable,
rank-sharded build.

The loss per video (Hinton et al.'s knowledge distillation):

    labelled:    (1 - w) * CE(student, label) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    unlabelled:                                      T^2 * KL(softmax(teacher / T) || softmax(student / T))

``w`` is ``distill_weight`` (0: plain cross-entropy, the teacher is never computed), ``T`` the
temperature; T^2 keeps the gradient's scale independent of T. A video whose label is
:data:`UNLABELLED` learns from the teacher alone.

That is the ``soft`` target. The ``standardized`` target (``--distill-target standardized``) replaces
the KL term by

    KL(softmax(z(teacher) / T) || softmax(student)),   z(v) = (v - mean(v)) / std(v) over the classes

(logit standardisation, as in Sun et al., CVPR 2024, applied to the teacher only): the target's
sharpness is set by T alone, whatever the scale of the teacher's logits, and the student is trained
at temperature 1 with no T^2 factor, as by a cross-entropy against that soft target. Dense 30-crop
averages logits over 30 clips most of which may see no action, so its logits can be nearly flat
(their spread and the ``soft`` target's top probability are recorded in ``benchmarks/accuracy``); as
a ``soft`` target they give label-free training little gradient, while standardised they give a
target whose confidence follows the teacher's ranking of the classes, not the scale of its logits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sfc_deploy.data.inputs import model_input
from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.train.cache import FeatureCache, open_or_build_cache
from sfc_deploy.train.common import Progress
from sfc_deploy.train.distributed import World

#: Label of a video that has none: it trains on the teacher's logits only.
UNLABELLED = -1
#: Sub-folder of the feature-cache folder that holds the teacher's logits.
TEACHER_DIR = "teacher"
#: 10 temporal clips x 3 crops: the dense baseline SFC replaces.
TEACHER_CLIPS = 10
#: What the student is fitted to (module docstring): the teacher's softmax at T for both (Hinton) or
#: the teacher's per-video standardised logits at T, the student at 1.
DISTILL_TARGETS = ("soft", "standardized")
#: The standardized target's default temperature (``train --labels none``): the better of 0.5 and 1
#: in benchmarks/accuracy's harder setting (``results_hard.md``: labelfree against labelfree_t1).
STANDARDIZED_TEMPERATURE = 0.5
#: ``sfc-deploy train``'s default with labels and a trained backbone: cross-entropy and the soft
#: target at :data:`SOFT_TEMPERATURE`, half each. In benchmarks/accuracy it beat cross-entropy alone
#: at tau 2 on both settings (harder, easy end) with both backbones (12 and 40 epochs), and beat the
#: standardized target with labels (``distill_std``), which fell 9 points under it at the easy end.
#: It makes a run likelier to stall or collapse (a flat teacher is matched by attending to frames
#: without the action): ``train`` rolls such a run back (:mod:`sfc_deploy.train.recovery`).
LABELLED_WEIGHT = 0.5
#: The soft target's default temperature. With weight 0.5 it was the best labelled recipe measured at tau 2
#: in benchmarks/accuracy; T 1, or a weight of 0.25 at T 2, were about 4 points lower (``NOTES.md``).
SOFT_TEMPERATURE = 2.0


@torch.no_grad()
def dense_logits(model: SFCModel, frames: torch.Tensor, *, num_clips: int = TEACHER_CLIPS, device: str = "cpu",
                 chunk: int = 10) -> torch.Tensor:
    """Dense ``num_clips`` x 3 logits (classes,) of one video's raw frames (3, T, H, W), averaged, on the CPU.

    The clips come from the same video-to-input function ``sfc-deploy eval`` uses for ``dense``,
    so the teacher is the dense baseline the report compares SFC with.
    """
    clips = model_input(frames, "dense", model.config, num_clips=num_clips).tensor
    model.backbone.eval()
    parts = [model.backbone(clips[i : i + chunk].to(device)).float() for i in range(0, clips.shape[0], chunk)]
    return torch.cat(parts).mean(0).cpu()


def teacher_key(feature_key: dict, num_clips: int) -> dict:
    """Everything the teacher's logits depend on: the backbone (config and weights) and the videos, not the views."""
    return {"teacher": "dense", "num_clips": num_clips, "backbone": feature_key["backbone"],
            "checkpoint_sha256": feature_key["checkpoint_sha256"], "videos": feature_key["videos"]}


class TeacherLogits:
    """The cached teacher logits, one video at a time."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.cache.view(i, 0)


def open_or_build_teacher(folder: Path, key: dict, num_videos: int, logits: Callable[[int], torch.Tensor], *,
                          world: World = World(), progress: Progress | None = None) -> tuple[TeacherLogits, bool]:
    """The teacher logits cached in ``folder`` for ``key``, else computed there (sharded by rank, resumable).

    Same layout and rules as the head-feature cache (one file per video, written atomically; a
    build interrupted for the same key keeps its finished videos). Returns (logits, loaded).
    """
    def described(_: str, i: int, total: int) -> None:
        if progress is not None:
            progress("cache teacher logits (dense 30-crop)", i, total)

    cache, loaded = open_or_build_cache(folder, key, num_videos, lambda i: [logits(i)], world=world,
                                        progress=described)
    return TeacherLogits(cache), loaded


def standardized(logits: torch.Tensor) -> torch.Tensor:
    """z(v) of the module docstring: logits (..., classes) z-scored over the classes (sample std), in fp32."""
    z = logits.float()
    return (z - z.mean(-1, keepdim=True)) / z.std(-1, keepdim=True).clamp_min(1e-6)


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, *, weight: float,
                 temperature: float, target: str = "soft") -> torch.Tensor:
    """Summed loss of a batch: cross-entropy where labelled, KL to the teacher's ``target`` (module docstring).

    Args:
        logits: student logits (N, classes).
        labels: (N,) class indices, :data:`UNLABELLED` where there is none.
        teacher: teacher logits (N, classes), or None when ``weight`` is 0 and every video is labelled.
        weight, temperature: w and T of the module docstring.
        target: one of :data:`DISTILL_TARGETS`.
    """
    labelled = labels != UNLABELLED
    ce = F.cross_entropy(logits[labelled], labels[labelled], reduction="none") if bool(labelled.any()) else None
    if teacher is None or weight == 0:
        if not bool(labelled.all()):
            raise ValueError("unlabelled videos need the teacher (distill weight > 0)")
        return ce.sum()
    t = temperature
    if target == "standardized":
        kl = F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(standardized(teacher) / t, -1),
                      reduction="none", log_target=True).sum(-1)
    elif target == "soft":
        kl = F.kl_div(F.log_softmax(logits.float() / t, -1), F.log_softmax(teacher.float() / t, -1),
                      reduction="none", log_target=True).sum(-1) * (t * t)
    else:
        raise ValueError(f"unknown distillation target {target!r}; expected one of {', '.join(DISTILL_TARGETS)}")
    per_video = torch.where(labelled, weight * kl, kl)
    if ce is not None:
        per_video = per_video.clone()
        per_video[labelled] = per_video[labelled] + (1 - weight) * ce
    return per_video.sum()
