"""`train` rolls a run that stalled or collapsed back to its last good state (sfc_deploy.train.recovery)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sfc_deploy.data.datasets import VideoList, read_csv_list
from sfc_deploy.models.sfc import SFC, SFCConfig
from sfc_deploy.train.common import Metrics
from sfc_deploy.train.recovery import Recovery, fresh_weights, take
from sfc_deploy.train.sfc import SFCTrainOptions, build_model, rollback_message, train_sfc
from sfc_deploy.train.views import Augment


def _module_and_optimizer() -> tuple[SFC, torch.optim.Optimizer]:
    torch.manual_seed(0)
    sfc = SFC(SFCConfig(channels=16, prior=True))
    return sfc, torch.optim.SGD(sfc.parameters(), lr=0.1, momentum=0.9)


def _step(sfc: SFC, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    sfc(torch.rand(2, 16, 8, 4, 4)).square().mean().backward()
    opt.step()


def test_a_roll_back_restores_the_weights_and_the_optimizer_of_the_snapshot():
    sfc, opt = _module_and_optimizer()
    _step(sfc, opt)
    recovery = Recovery(limit=1)
    recovery.remember(take(3, 0.6, sfc, opt))
    kept_weights = {k: v.clone() for k, v in sfc.state_dict().items()}
    kept_momentum = {k: v["momentum_buffer"].clone() for k, v in opt.state_dict()["state"].items()}
    for _ in range(3):  # the run goes on and moves away from it
        _step(sfc, opt)
    assert any(not torch.equal(v, sfc.state_dict()[k]) for k, v in kept_weights.items())
    assert recovery.can_roll_back() and recovery.best_top1 == 0.6
    assert recovery.roll_back(sfc, opt, fresh=lambda: fresh_weights(sfc, 0, 1)) == 3  # fresh weights only go to epoch 0
    assert recovery.attempt == 1 and not recovery.can_roll_back()  # limit 1: used
    for k, v in kept_weights.items():
        assert torch.equal(sfc.state_dict()[k], v), k
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(v["momentum_buffer"], kept_momentum[k])
    _step(sfc, opt)  # the snapshot is a copy: training on does not change it
    restored = Recovery(1, json.loads(json.dumps({"attempt": 1, "good": None})))
    assert restored.attempt == 1 and restored.good is None and not restored.can_roll_back()
    assert torch.equal(recovery.good.sfc["theta_q.weight"], kept_weights["theta_q.weight"])


def test_a_roll_back_to_the_start_takes_a_fresh_initialisation_that_depends_on_seed_and_attempt():
    sfc, opt = _module_and_optimizer()
    start = take(0, None, sfc, opt)
    recovery = Recovery(limit=2)
    recovery.remember(start)
    _step(sfc, opt)
    fresh = fresh_weights(sfc, 0, 1)
    before = torch.random.get_rng_state()
    assert torch.equal(fresh_weights(sfc, 0, 1)["theta_q.weight"], fresh["theta_q.weight"])  # deterministic
    assert torch.equal(torch.random.get_rng_state(), before)  # and leaves the global random state alone
    assert not torch.equal(fresh_weights(sfc, 0, 2)["theta_q.weight"], fresh["theta_q.weight"])
    assert not torch.equal(fresh["theta_q.weight"], start.sfc["theta_q.weight"])
    assert recovery.roll_back(sfc, opt, fresh=lambda: fresh) == 0
    assert torch.equal(sfc.state_dict()["theta_q.weight"], fresh["theta_q.weight"])
    assert opt.state_dict()["state"] == {}  # the optimizer as it was at the start: no momentum yet


def test_on_resume_metrics_keep_the_epochs_a_roll_back_went_back_over(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "rolled_back_to_epoch": 2},
             {"epoch": 3, "attempt": 1}, {"epoch": 4, "attempt": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    Metrics(path, keep_until_epoch=3, keep_attempts_before=1)  # saved after epoch 3 of attempt 1
    assert [json.loads(x) for x in path.read_text().splitlines()] == lines[:4]
    Metrics(path, keep_until_epoch=2, keep_attempts_before=1)  # saved right after the roll-back
    assert [json.loads(x) for x in path.read_text().splitlines()] == lines[:3]


def test_a_stalled_run_is_restarted_then_warned_about(tiny_trained, tmp_path):
    """The stuck run of test_distill_stall (lr ~ 0: nothing can move): with roll-backs on, epoch 1 is
    run again from a new initialisation each time, as many times as allowed, each recorded and
    reported in one line; then the warning. A run that learns is never rolled back."""
    listed = read_csv_list(tiny_trained["train"])
    options = SFCTrainOptions(epochs=1, batch_size=1, cache_views=1, lr=1e-9, clip_grad=0, momentum=0.0, recover=2,
                              augment=Augment(scale=(1.0, 1.0), crop_fraction=1.0, flip=False, jitter=False))
    for label in range(len(listed.class_names)):  # a label the first initialisation does not predict
        lines: list[str] = []
        out = tmp_path / f"label{label}"
        videos = VideoList(items=((listed[0][0], label),) * 8, class_names=listed.class_names)
        summary = train_sfc(videos, out, options, backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"],
                            threads=1, warn=lines.append)
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        if records[0]["train_acc"] == 0.0:
            break
        assert lines == [] and len(records) == 1 and summary["roll_backs"] == 0
    else:
        pytest.fail("the tiny model predicts every class for this video")
    assert [r["epoch"] for r in records] == [1] * len(records)
    assert [r.get("attempt", 0) for r in records] == list(range(len(records)))
    rolled = [r for r in records if "rolled_back_to_epoch" in r]
    assert [r["rolled_back_to_epoch"] for r in rolled] == [0] * len(rolled) and summary["roll_backs"] == len(rolled)
    notes = [x for x in lines if x.startswith("note:")]
    assert len(notes) == len(rolled) and all("\n" not in x and "restarted from a new initialisation" in x for x in notes)
    if len(rolled) == 2:  # every attempt stalled: the limit is reached, then the warning
        assert len(records) == 3 and lines[-1].startswith("warning:") and "has not moved in epoch 1" in lines[-1]
    else:  # a fresh initialisation happened to predict the label: that attempt is not rolled back
        assert records[-1]["train_acc"] == 1.0 and not lines[-1].startswith("warning:")
    # the checkpoint is the last attempt's, not the first initialisation
    first = build_model("slow8x8_tiny", tiny_trained["backbone"], options).sfc.state_dict()
    assert not torch.equal(load_file(out / "sfc.safetensors")["theta_q.weight"], first["theta_q.weight"])


def test_roll_back_messages_are_one_line_and_name_what_happened():
    collapse = rollback_message({"epoch": 3, "train_acc": 0.165}, 2, 1, 2, True)
    assert "\n" not in collapse and "fell to 16.5% in epoch 3" in collapse and "end of epoch 2" in collapse
    assert "roll-back 1 of 2" in collapse and "--recover 0" in collapse
    stall = rollback_message({"epoch": 1, "train_acc": 0.105}, 0, 1, 2, False)
    assert "has not moved in epoch 1 (training top-1 10.5%)" in stall and "new initialisation" in stall


def test_recover_must_not_be_negative():
    from sfc_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="recover must be >= 0"):
        SFCTrainOptions(recover=-1)
    assert "recover" not in SFCTrainOptions(recover=0).to_record()  # states from before roll-backs resume
    assert SFCTrainOptions().to_record()["recover"] == 2


class _Interrupted(Exception):
    pass


def test_a_run_interrupted_after_a_roll_back_resumes_to_the_same_end(tiny_trained, tmp_path):
    """The stuck run again (2 epochs, one roll-back allowed): epoch 1 stalls, the run restarts from a new
    initialisation (saved as epoch 0, attempt 1), epoch 1 stalls again (no roll-back left), epoch 2. A
    copy interrupted in the middle of attempt 1's epoch 1 and resumed ends with the same weights and the
    same metrics lines as the uninterrupted run: the attempt, its random draws and the snapshot survive."""
    listed = read_csv_list(tiny_trained["train"])
    options = SFCTrainOptions(epochs=2, batch_size=1, cache_views=1, lr=1e-9, clip_grad=0, momentum=0.0, recover=1,
                              augment=Augment(scale=(1.0, 1.0), crop_fraction=1.0, flip=False, jitter=False))
    common = dict(backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"], threads=1, warn=None)
    for label in range(len(listed.class_names)):
        videos = VideoList(items=((listed[0][0], label),) * 8, class_names=listed.class_names)
        whole = train_sfc(videos, tmp_path / f"whole{label}", options, **common)
        if whole["roll_backs"] == 1:
            break
    else:
        pytest.fail("no label makes this run stall")
    seen: list[str] = []

    def interrupt(description: str, done: int, total: int) -> None:
        seen.append(description)
        if seen.count("epoch 1/2") == 8 + 3:  # all of attempt 0's epoch 1, then 3 steps into attempt 1's
            raise _Interrupted

    cut = tmp_path / "cut"
    with pytest.raises(_Interrupted):
        train_sfc(videos, cut, options, progress=interrupt, **common)
    state = torch.load(cut / "train_state.pt", weights_only=True)
    assert state["epoch"] == 0 and state["recovery"]["attempt"] == 1  # saved right after the roll-back
    train_sfc(videos, cut, options, resume=True, **common)
    whole_dir = tmp_path / f"whole{label}"
    a, b = load_file(whole_dir / "sfc.safetensors"), load_file(cut / "sfc.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = ("seconds", "seconds_per_video")
    lines = [[{k: v for k, v in json.loads(x).items() if k not in drop} for x in (d / "metrics.jsonl").read_text().splitlines()]
             for d in (whole_dir, cut)]
    assert lines[0] == lines[1]
    assert [(r["epoch"], r.get("attempt", 0), "rolled_back_to_epoch" in r) for r in lines[0]] == [
        (1, 0, True), (1, 1, False), (2, 1, False)]
