"""Distillation from the backbone's dense 30-crop logits: the teacher, the loss, label-free training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.datasets import VideoList, read_csv_list
from sfc_deploy.data.samplers import sample_video
from sfc_deploy.errors import ConfigError
from sfc_deploy.models import create_backbone
from sfc_deploy.train.distill import TEACHER_DIR, UNLABELLED, dense_logits, distill_loss
from sfc_deploy.train.sfc import SFCTrainOptions, build_model, train_sfc
from sfc_deploy.train.views import Augment, FrameStore

runner = CliRunner()
TINY = dict(epochs=1, batch_size=3, cache_views=1, augment=Augment(flip=False))


def test_distill_loss_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    y = torch.tensor([2, UNLABELLED])
    w, temp = 0.25, 2.0

    def soft(v):
        e = [math.exp(x / temp) for x in v]
        return [x / sum(e) for x in e]

    def kl(tv, sv):
        p, q = soft(tv), soft(sv)
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) * temp * temp

    ce0 = -math.log(math.exp(-1.0) / sum(math.exp(x) for x in (1.0, 0.0, -1.0)))
    want = (1 - w) * ce0 + w * kl(t[0].tolist(), s[0].tolist()) + kl(t[1].tolist(), s[1].tolist())
    assert float(distill_loss(s, y, t, weight=w, temperature=temp)) == pytest.approx(want, rel=1e-5)
    labelled = torch.tensor([2, 0])
    assert float(distill_loss(s, labelled, None, weight=0.0, temperature=1.0)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(s, labelled, reduction="sum")))


def test_standardized_target_by_hand():
    """z-scored teacher logits (sample std) at T against the student at 1, no T^2; the teacher's scale is gone."""
    s = torch.tensor([[1.0, 0.0, -1.0, 0.5]])
    t = torch.tensor([[0.2, 0.6, 0.0, 0.2]])
    temp = 0.5
    mean = sum(t[0].tolist()) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in t[0].tolist()) / 3)
    z = [(v - mean) / std / temp for v in t[0].tolist()]
    p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    q = [math.exp(v) / sum(math.exp(u) for u in s[0].tolist()) for v in s[0].tolist()]
    want = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    y = torch.tensor([UNLABELLED])
    got = distill_loss(s, y, t, weight=1.0, temperature=temp, target="standardized")
    assert float(got) == pytest.approx(want, rel=1e-5)
    # scaling and shifting the teacher's logits leaves the standardized target as it is, not the soft one
    moved = 7.0 * t + 3.0
    assert float(distill_loss(s, y, moved, weight=1.0, temperature=temp, target="standardized")) == pytest.approx(want, rel=1e-5)
    assert float(distill_loss(s, y, moved, weight=1.0, temperature=temp)) != pytest.approx(
        float(distill_loss(s, y, t, weight=1.0, temperature=temp)), rel=1e-3)
    with pytest.raises(ValueError, match="unknown distillation target"):
        distill_loss(s, y, t, weight=1.0, temperature=temp, target="hard")
    with pytest.raises(ConfigError, match="distill_target"):
        SFCTrainOptions(distill_weight=1.0, distill_target="hard")


def test_the_teacher_is_the_dense_30_crop_baseline(tiny_trained):
    videos = read_csv_list(tiny_trained["train"])
    model = build_model("slow8x8_tiny", tiny_trained["backbone"], SFCTrainOptions())
    backbone = create_backbone("slow8x8_tiny", checkpoint=tiny_trained["backbone"]).eval()
    path = videos[0][0]
    with torch.no_grad():  # independent path: decode the file and sample it as `eval` samples dense
        want = backbone(sample_video(path, "dense", backbone.config, num_clips=10).tensor).mean(0)
    got = dense_logits(model, FrameStore(videos, preload=False).all_frames(0))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_label_free_training_caches_the_teacher_once_and_resumes(tiny_trained, tmp_path):
    labelled = read_csv_list(tiny_trained["train"])
    videos = VideoList(items=tuple((p, UNLABELLED) for p, _ in labelled), class_names=())
    options = SFCTrainOptions(**TINY, distill_weight=1.0, distill_temperature=2.0)
    cache = tmp_path / "cache"
    first = train_sfc(videos, tmp_path / "a", options, backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"],
                      threads=1, cache_file=cache, warn=None)
    files = sorted((cache / "teacher").glob("video_*.safetensors"))
    assert len(files) == len(videos) and math.isfinite(first["last"]["loss"]) and first["last"]["train_acc"] is None
    agreeing = first["last"]["teacher_agreement"] * len(videos)  # label-free top-1: agreement with the teacher
    assert 0 <= agreeing <= len(videos) and agreeing == pytest.approx(round(agreeing))
    stamps = [f.stat().st_mtime_ns for f in files]
    # another run on the same videos and backbone reads the teacher instead of recomputing it
    train_sfc(videos, tmp_path / "b", options, backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"],
              threads=1, cache_file=cache, warn=None)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    from safetensors.torch import load_file

    model = build_model("slow8x8_tiny", tiny_trained["backbone"], options)
    want = dense_logits(model, FrameStore(videos, preload=False).all_frames(1))
    torch.testing.assert_close(load_file(str(files[1]))["views"][0], want)


def test_unlabelled_videos_need_distillation_and_a_backbone(tiny_trained, tmp_path):
    labelled = read_csv_list(tiny_trained["train"])
    mixed = VideoList(items=labelled.items[:-1] + ((labelled[-1][0], UNLABELLED),), class_names=labelled.class_names)
    with pytest.raises(ConfigError, match="--distill-weight"):
        train_sfc(mixed, tmp_path / "a", SFCTrainOptions(**TINY), backbone="slow8x8_tiny",
                  checkpoint=tiny_trained["backbone"])
    none = VideoList(items=tuple((p, UNLABELLED) for p, _ in labelled), class_names=())
    with pytest.raises(ConfigError, match="--checkpoint"):
        train_sfc(none, tmp_path / "b", SFCTrainOptions(**TINY, distill_weight=1.0), backbone="slow8x8_tiny")
    with pytest.raises(ConfigError, match="distill_weight must be in"):
        SFCTrainOptions(distill_weight=1.5)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_labels_none_and_unlabelled_lists(tiny_trained, tmp_path, one_line_error):
    data = tiny_trained["data"]
    paths = [str(p) for p, _ in read_csv_list(tiny_trained["train"])]
    listing = tmp_path / "unlabelled.txt"
    listing.write_text("\n".join(paths[:2]) + "\n")
    base = ["train", "-o", str(tmp_path / "run"), "-b", "slow8x8_tiny", "--checkpoint", str(tiny_trained["backbone"]),
            "--epochs", "1", "--batch-size", "3", "--cache-views", "1", "--no-flip", "--threads", "1"]
    result = runner.invoke(app, [*base[:1], str(tiny_trained["train"]), *base[1:], "--unlabelled", str(listing),
                                 "--distill-weight", "0.5", "--distill-target", "standardized"])
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["settings"]["videos"] == len(paths) + 2
    assert state["settings"]["options"]["distill_weight"] == 0.5
    assert state["settings"]["options"]["distill_target"] == "standardized"
    one_line_error(runner.invoke(app, [*base[:1], str(tiny_trained["train"]), *base[1:], "--distill-weight", "1",
                                       "--distill-target", "hard", "--force"]), "distill_target must be one of")
    one_line_error(runner.invoke(app, [*base[:1], str(listing), *base[1:], "--labels", "none", "--distill-weight", "0",
                                       "--force"]), "--distill-weight")
    one_line_error(runner.invoke(app, [*base[:1], str(listing), *base[1:], "--labels", "some", "--force"]),
                   "--labels must be use or none")
    missing = tmp_path / "missing.txt"
    missing.write_text(str(data / "nope.mp4") + "\n")
    one_line_error(runner.invoke(app, [*base[:1], str(tiny_trained["train"]), *base[1:], "--unlabelled", str(missing),
                                       "--distill-weight", "1", "--force"]), "does not exist")


def test_defaults_are_the_measured_recipes():
    from sfc_deploy.cli.train import distill_settings

    assert distill_settings("none", None, None, None) == {
        "distill_weight": 1.0, "distill_temperature": 0.5, "distill_target": "standardized"}
    # labels and a trained backbone: half cross-entropy, half the teacher's soft target at T 2
    assert distill_settings("use", None, None, None) == {
        "distill_weight": 0.5, "distill_temperature": 2.0, "distill_target": "soft"}
    # labels on a backbone without trained weights: its dense predictions teach nothing
    assert distill_settings("use", None, None, None, trained_backbone=False)["distill_weight"] == 0.0
    assert distill_settings("none", 0.5, None, "soft") == {
        "distill_weight": 0.5, "distill_temperature": 2.0, "distill_target": "soft"}
    assert distill_settings("use", 0.5, 1.0, "standardized")["distill_temperature"] == 1.0
    for weight, labels, trained in ((0.0, "use", True), (0.0, "none", True), (None, "use", False)):
        # no distillation: the options do not apply
        with pytest.raises(ConfigError, match="--distill-target applies only with distillation"):
            distill_settings(labels, weight, None, "standardized", trained_backbone=trained)
        with pytest.raises(ConfigError, match="--distill-temperature applies only with distillation"):
            distill_settings(labels, weight, 2.0, None, trained_backbone=trained)


@pytest.mark.slow
def test_two_ranks_share_the_teacher_build_and_train_like_one_process(tiny_trained, tmp_path):
    """torchrun with 2 ranks: each computes the teacher for its share of the videos; one process then
    loads that teacher (no recomputation) and takes the same steps."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    args = ["train", str(tiny_trained["train"]), "-o", str(tmp_path / "two"), "-b", "slow8x8_tiny", "--checkpoint",
            str(tiny_trained["backbone"]), "--epochs", "1", "--batch-size", "4", "--cache-views", "1", "--no-flip",
            "--distill-weight", "0.5", "--distill-temperature", "2", "--threads", "1", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "sfc_deploy.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    teacher = tmp_path / "two" / "feature_cache" / TEACHER_DIR
    videos = read_csv_list(tiny_trained["train"])
    files = sorted(teacher.glob("video_*.safetensors"))
    assert len(files) == len(videos) and (teacher / "cache.json").is_file()
    stamps = [f.stat().st_mtime_ns for f in files]
    options = SFCTrainOptions(epochs=1, batch_size=4, cache_views=1, augment=Augment(flip=False),
                              distill_weight=0.5, distill_temperature=2.0)
    one = train_sfc(videos, tmp_path / "one", options, backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"],
                    threads=1, cache_file=tmp_path / "two" / "feature_cache", warn=None)
    assert [f.stat().st_mtime_ns for f in files] == stamps and one["cache_loaded"]
    two = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert two["loss"] == pytest.approx(one["last"]["loss"], rel=1e-5)
