"""`train` warns in one line when the first epoch's loss has not moved and its top-1 is near chance, and only then."""

from __future__ import annotations

import pytest

from sfc_deploy.data.datasets import VideoList, read_csv_list
from sfc_deploy.train import sfc as sfc_train
from sfc_deploy.train.sfc import SFCTrainOptions, collapse_message, collapsed, stalled, train_sfc
from sfc_deploy.train.views import Augment


def test_stalled_compares_the_first_and_last_steps_of_an_epoch():
    record = {"epoch": 1, "steps": 40, "loss_first_steps": 2.08, "loss_last_steps": 2.07}
    assert stalled(record, 8)  # no top-1 recorded: the loss decides
    assert not stalled(record | {"loss_last_steps": 1.6}, 8)
    assert not stalled(record | {"steps": 3}, 8)  # too short an epoch to tell


def test_a_run_whose_top1_left_chance_is_not_stalled():
    """A noisy per-step loss can end epoch 1 where it began in a run that learned (issue 16's harder
    setting: 62-70% training top-1): the top-1, against the labels or the teacher, clears it."""
    record = {"epoch": 1, "steps": 50, "loss_first_steps": 1.526, "loss_last_steps": 1.485}
    assert stalled(record | {"train_acc": 0.15}, 8)
    assert not stalled(record | {"train_acc": 0.67}, 8)
    assert stalled(record | {"train_acc": None, "teacher_agreement": 0.2}, 8)
    assert not stalled(record | {"train_acc": None, "teacher_agreement": 0.6}, 8)
    assert stalled(record | {"train_acc": 0.3}, 4) and not stalled(record | {"train_acc": 0.3}, 8)  # 2x chance


def test_collapsed_is_a_top1_that_fell_back_under_twice_chance():
    """The tau-4 distillation run of benchmarks/accuracy: 63% after epoch 1, 17% in epoch 3."""
    epoch3 = {"epoch": 3, "train_acc": 0.17}
    assert collapsed(epoch3, 0.63, 8)
    assert not collapsed(epoch3 | {"train_acc": 0.40}, 0.63, 8)  # worse, not collapsed
    assert not collapsed(epoch3, 0.20, 8)  # never learned: the first-epoch warning's case
    assert not collapsed(epoch3, None, 8)  # first epoch of this process
    assert not collapsed({"epoch": 3, "train_acc": None, "teacher_agreement": None}, 0.63, 8)
    assert collapsed({"epoch": 3, "train_acc": None, "teacher_agreement": 0.1}, 0.5, 8)  # label-free
    line = collapse_message(epoch3, 0.63)
    assert "\n" not in line and "17.0% in epoch 3 from 63.0%" in line and "--distill-weight 0" in line


def test_train_warns_when_the_loss_does_not_move(tiny_trained, tmp_path):
    """Eight copies of one video with identical views, one per step, at lr ~ 0: every step sees the
    same input with the same weights, so neither the loss nor the prediction can move. Labelled with
    a class the model does not predict (top-1 0%), the run warns; labelled with the one it predicts
    (100%), it does not. Either way it finishes and writes. Roll-backs off (``recover=0``): with them
    on, such a run is restarted first (tests/train/test_recovery.py)."""
    listed = read_csv_list(tiny_trained["train"])
    options = SFCTrainOptions(epochs=1, batch_size=1, cache_views=1, lr=1e-9, clip_grad=0, momentum=0.0, recover=0,
                              augment=Augment(scale=(1.0, 1.0), crop_fraction=1.0, flip=False, jitter=False))

    def run(label: int, name: str) -> tuple[dict, list[str]]:
        videos = VideoList(items=((listed[0][0], label),) * 8, class_names=listed.class_names)
        lines: list[str] = []
        summary = train_sfc(videos, tmp_path / name, options, backbone="slow8x8_tiny",
                            checkpoint=tiny_trained["backbone"], threads=1, warn=lines.append)
        last = summary["last"]
        assert last["steps"] == 8 >= sfc_train.STALL_MIN_STEPS
        assert last["loss_last_steps"] == pytest.approx(last["loss_first_steps"], rel=1e-6)
        assert last["train_acc"] in (0.0, 1.0)
        assert (tmp_path / name / "sfc.safetensors").is_file()
        return last, lines

    last, lines = run(0, "label0")
    if last["train_acc"] == 1.0:  # the model predicts class 0: no warning; another label is a wrong one
        assert lines == []
        last, lines = run(1, "label1")
    assert last["train_acc"] == 0.0
    assert len(lines) == 1 and "\n" not in lines[0] and "has not moved in epoch 1" in lines[0]
    assert "training top-1 0.0%" in lines[0]
