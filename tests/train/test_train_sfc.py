"""SFC training: only SFC learns, resume equals an uninterrupted run, the cache equals the head."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.errors import CheckpointError, ConfigError
from sfc_deploy.models import create_backbone, create_model
from sfc_deploy.train.cache import build_cache, cache_views, render_view
from sfc_deploy.train.common import read_metrics
from sfc_deploy.train.sfc import SFCTrainOptions, build_model, sfc_step, train_sfc
from sfc_deploy.train.views import Augment, FrameStore

FAST = dict(epochs=2, batch_size=3, cache_views=2, milestones=(2,), augment=Augment(flip=True))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_a_training_step_changes_only_sfc(tiny_trained):
    model = build_model("slow8x8_tiny", tiny_trained["backbone"], SFCTrainOptions(tau=2))
    backbone_before, sfc_before = _state(model.backbone), _state(model.sfc)
    model.train()
    assert not model.backbone.training and model.sfc.training
    with torch.no_grad():
        feats = list(model.head(torch.randn(2, 3, 6, 32, 40)))
    opt = torch.optim.SGD(model.sfc.parameters(), lr=0.1, momentum=0.9)
    loss, _, agreeing, norm = sfc_step(model, feats, [0, 2], opt, clip_grad=1.0)
    assert agreeing == 0  # no teacher
    assert loss > 0 and norm > 0
    after = model.backbone.state_dict()
    # weights and BatchNorm running statistics of head and tail are bit-identical
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    changed = [k for k, v in model.sfc.state_dict().items() if not torch.equal(sfc_before[k], v)]
    assert any(k.startswith("theta_q") for k in changed) and any(k.startswith("abstraction") for k in changed)


def test_gradient_clipping_bounds_the_update(tiny_trained):
    model = build_model("slow8x8_tiny", tiny_trained["backbone"], SFCTrainOptions(tau=2))
    model.train()
    with torch.no_grad():
        feats = list(model.head(torch.randn(2, 3, 6, 32, 40)))
    before = torch.cat([p.detach().flatten().clone() for p in model.sfc.parameters()])
    opt = torch.optim.SGD(model.sfc.parameters(), lr=1.0)
    sfc_step(model, feats, [0, 1], opt, clip_grad=1e-3)
    after = torch.cat([p.detach().flatten() for p in model.sfc.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 * 1.001


def test_feature_cache_equals_the_head(tiny_trained):
    videos = read_csv_list(tiny_trained["train"])
    model = build_model("slow8x8_tiny", tiny_trained["backbone"], SFCTrainOptions())
    store = FrameStore(videos, preload=False)
    augment = Augment(flip=True)
    views = cache_views(augment, 0, len(store), 2, model.config.stride)
    assert views == cache_views(augment, 0, len(store), 2, model.config.stride)  # fixed by the seed
    cache = build_cache(model, store, views, augment)
    for i in (0, len(store) - 1):
        for v, view in enumerate(views[i]):
            x = render_view(store, i, view, model, augment, None)
            with torch.no_grad():
                direct = model.backbone.forward_head(x.unsqueeze(0))[0]
            assert cache[i][v].shape == direct.shape
            torch.testing.assert_close(cache[i][v], direct, rtol=0, atol=1e-6)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    options = SFCTrainOptions(**FAST)
    common = dict(backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"], threads=1)
    train_sfc(videos, tmp_path / "full", options, **common)

    class Interrupt(Exception):
        pass

    def stop_in_epoch_2(description: str, done: int, total: int) -> None:
        if description.startswith("epoch 2"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_sfc(videos, tmp_path / "cut", options, progress=stop_in_epoch_2, **common)
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == [1]
    train_sfc(videos, tmp_path / "cut", options, resume=True, **common)

    full, cut = load_file(tmp_path / "full" / "sfc.safetensors"), load_file(tmp_path / "cut" / "sfc.safetensors")
    assert full.keys() == cut.keys()
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    metrics = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert metrics[1]["loss"] == read_metrics(tmp_path / "full" / "metrics.jsonl")[1]["loss"]


def test_resume_refuses_other_settings_and_fresh_runs_refuse_to_overwrite(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    common = dict(backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"], threads=1)
    options = SFCTrainOptions(**{**FAST, "epochs": 1})
    train_sfc(videos, tmp_path, options, **common)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train_sfc(videos, tmp_path, options, **common)
    with pytest.raises(ConfigError, match=r"cannot resume .* different settings \(options.lr: saved 0.\d+, now 0.5\)"):
        train_sfc(videos, tmp_path, SFCTrainOptions(**{**FAST, "epochs": 1, "lr": 0.5}), resume=True, **common)
    # a run saved with labels alone (before distillation was train's default) names the option that differs
    with pytest.raises(ConfigError, match=r"options.distill_weight: saved None, now 0.5"):
        train_sfc(videos, tmp_path, SFCTrainOptions(**{**FAST, "epochs": 1, "distill_weight": 0.5}), resume=True, **common)
    with pytest.raises(ConfigError, match="does not exist"):
        train_sfc(videos, tmp_path / "new", options, resume=True, **common)


def test_checkpoint_records_its_backbone_and_refuses_another(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    summary = train_sfc(videos, tmp_path, SFCTrainOptions(**{**FAST, "epochs": 1, "pool": "avg", "tau": 3}),
                        backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"])
    ckpt = summary["checkpoint"]
    model = create_model("slow8x8_tiny", checkpoint=tiny_trained["backbone"], sfc_checkpoint=ckpt)
    assert model.sfc.config.pool == "avg" and model.sfc.config.tau == 3
    with pytest.raises(CheckpointError, match="trained for backbone 'slow8x8_tiny'"):
        create_model("slow8x8_tiny", num_classes=5, sfc_checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="trained for backbone"):
        create_model("slow8x8", num_classes=3, sfc_checkpoint=ckpt)
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["cached"] and record["last"]["epoch"] == 1


def test_backbone_class_count_must_match_the_data(tiny_trained, tmp_path):
    from sfc_deploy.data.datasets import VideoList

    videos = read_csv_list(tiny_trained["train"])
    fewer = VideoList(items=videos.items[:2], class_names=videos.class_names[:2])
    with pytest.raises(ConfigError, match="3 classes but the data has 2"):
        train_sfc(fewer, tmp_path, SFCTrainOptions(**FAST), backbone="slow8x8_tiny",
                  checkpoint=tiny_trained["backbone"])


def test_trained_backbone_loads_with_its_config(tiny_trained):
    model = create_backbone("slow8x8_tiny", checkpoint=tiny_trained["backbone"])
    assert model.config.num_classes == 3
    assert model.config.preprocess.short_side == 32 and model.config.preprocess.crop == 32
    assert model.config.class_names == ("move_right", "move_left", "move_up")


def test_cache_file_is_reused_only_for_the_same_views(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    common = dict(backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"], threads=1,
                  cache_file=tmp_path / "feats.pt")
    options = SFCTrainOptions(**{**FAST, "epochs": 1})
    first = train_sfc(videos, tmp_path / "a", options, **common)
    second = train_sfc(videos, tmp_path / "b", options, **common)
    assert not first["cache_loaded"] and second["cache_loaded"]
    a, b = load_file(tmp_path / "a" / "sfc.safetensors"), load_file(tmp_path / "b" / "sfc.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    other_views = train_sfc(videos, tmp_path / "c", SFCTrainOptions(**{**FAST, "epochs": 1, "seed": 1}), **common)
    assert not other_views["cache_loaded"]
