"""`train` warns in one line when the first epoch's loss has not moved, and only then."""

from __future__ import annotations

import pytest

from sfc_deploy.data.datasets import VideoList, read_csv_list
from sfc_deploy.train import sfc as sfc_train
from sfc_deploy.train.sfc import SFCTrainOptions, stalled, train_sfc
from sfc_deploy.train.views import Augment


def test_stalled_compares_the_first_and_last_steps_of_an_epoch():
    record = {"epoch": 1, "steps": 40, "loss_first_steps": 2.08, "loss_last_steps": 2.07}
    assert stalled(record)
    assert not stalled(record | {"loss_last_steps": 1.6})
    assert not stalled(record | {"steps": 3})  # too short an epoch to tell


def test_train_warns_when_the_loss_does_not_move(tiny_trained, tmp_path):
    """Eight copies of one video with identical views, one per step, at lr ~ 0: every step sees the
    same input with the same weights, so the loss cannot move; the run still finishes and writes."""
    path, label = read_csv_list(tiny_trained["train"])[0]
    videos = VideoList(items=((path, label),) * 8, class_names=read_csv_list(tiny_trained["train"]).class_names)
    options = SFCTrainOptions(epochs=1, batch_size=1, cache_views=1, lr=1e-9, clip_grad=0, momentum=0.0,
                              augment=Augment(scale=(1.0, 1.0), crop_fraction=1.0, flip=False, jitter=False))
    lines: list[str] = []
    summary = train_sfc(videos, tmp_path / "run", options, backbone="slow8x8_tiny",
                        checkpoint=tiny_trained["backbone"], threads=1, warn=lines.append)
    last = summary["last"]
    assert summary["last"]["steps"] == 8 >= sfc_train.STALL_MIN_STEPS
    assert last["loss_last_steps"] == pytest.approx(last["loss_first_steps"], rel=1e-6)
    assert len(lines) == 1 and "\n" not in lines[0] and "has not moved in epoch 1" in lines[0]
    assert (tmp_path / "run" / "sfc.safetensors").is_file()
