"""Evaluation: the report's content agrees with its own predictions; the files it writes; bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from sfc_deploy.data.datasets import VideoList, read_csv_list
from sfc_deploy.data.samplers import sample_video
from sfc_deploy.data.synth import write_counter_video
from sfc_deploy.errors import ConfigError
from sfc_deploy.eval.evaluate import evaluate, parse_sfc_entries
from sfc_deploy.eval.report import markdown, write_report
from sfc_deploy.models import create_backbone, create_model, get_config
from sfc_deploy.train.backbone import save_backbone
from sfc_deploy.train.sfc import SFCTrainOptions, train_sfc
from sfc_deploy.train.views import Augment


@pytest.fixture(scope="module")
def sfc_ckpt(tiny_trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_sfc")
    options = SFCTrainOptions(epochs=1, batch_size=3, cache_views=1, augment=Augment(flip=False))
    return train_sfc(read_csv_list(tiny_trained["train"]), out, options, backbone="slow8x8_tiny",
                     checkpoint=tiny_trained["backbone"], threads=1)["checkpoint"]


@pytest.fixture(scope="module")
def report(tiny_trained, sfc_ckpt):
    return evaluate(read_csv_list(tiny_trained["test"]), backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"],
                    sfc_checkpoints={"topk": sfc_ckpt}, taus=(2.0, 4.0), num_clips=2)


def test_report_lists_every_method_with_consistent_accuracy(report, tiny_trained):
    assert {"runtime", "precision", "environment", "backbone", "class_names", "labels", "results", "predictions"} <= set(report)
    names = [r["method"] for r in report["results"]]
    assert names == ["single", "uniform-2", "dense-6", "sfc:topk@tau=2", "sfc:topk@tau=4"]
    labels = report["labels"]
    assert labels == read_csv_list(tiny_trained["test"]).labels
    for r in report["results"]:
        preds = report["predictions"][r["method"]]
        assert len(preds) == len(labels) == r["videos"]
        assert r["top1"] == pytest.approx(sum(p == y for p, y in zip(preds, labels)) / len(labels))
        # top-5 is not checked here: with 3 classes it is 1.0 whatever the code does (see the 8-class test)
    sfc2, sfc4 = report["results"][3:]
    assert sfc2["trained_tau"] == sfc4["trained_tau"] == 2.0 and sfc4["tau"] == 4.0
    assert sfc4["gmacs"] < sfc2["gmacs"]  # fewer frames through the tail
    single, uniform, dense = report["results"][:3]
    assert uniform["gmacs"] == pytest.approx(2 * single["gmacs"]) and dense["gmacs"] == pytest.approx(3 * uniform["gmacs"])


CLASSES = tuple(f"class{i}" for i in range(8))  # more than 5, so top-5 can miss


@pytest.fixture(scope="module")
def eight_class_backbone(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A seeded random slow8x8_tiny with 8 classes (short side 32), saved, and three short videos."""
    root = tmp_path_factory.mktemp("eval_top5")
    config = get_config("slow8x8_tiny", num_classes=len(CLASSES))
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    weights = save_backbone(create_backbone(config), root / "backbone.safetensors")
    videos = [write_counter_video(root / f"v{i}.mp4", 64 + 8 * i, (48, 64), 25) for i in range(3)]
    return weights, videos


def test_top1_and_top5_against_an_independent_ranking(eight_class_backbone):
    """Labels are picked from the backbone's own ranking of each video (1st, 3rd and last of 8), so
    top-1 must be 1/3 and top-5 2/3 for `single`; `uniform` is checked against the same ranking
    recomputed here from the backbone and the sampler, outside evaluate."""
    weights, paths = eight_class_backbone
    backbone = create_backbone("slow8x8_tiny", checkpoint=weights)
    opts = {"single": {}, "uniform": {"num_clips": 2}}

    def logits(path: Path, strategy: str) -> torch.Tensor:
        with torch.no_grad():
            return backbone(sample_video(path, strategy, backbone.config, **opts[strategy]).tensor).mean(0)

    ranked = [logits(path, "single").argsort(descending=True).tolist() for path in paths]
    labels = [ranked[0][0], ranked[1][2], ranked[2][-1]]
    videos = VideoList(items=tuple(zip(paths, labels)), class_names=CLASSES)
    report = evaluate(videos, backbone="slow8x8_tiny", checkpoint=weights, strategies=("single", "uniform"), num_clips=2)

    assert [r["method"] for r in report["results"]] == ["single", "uniform-2"]
    for r in report["results"]:
        scores = [logits(path, r["strategy"]) for path in paths]
        ranks = [int((s > s[y]).sum()) for s, y in zip(scores, labels)]  # classes scored above the label
        assert r["top1"] == pytest.approx(sum(k == 0 for k in ranks) / 3), r["method"]
        assert r["top5"] == pytest.approx(sum(k < 5 for k in ranks) / 3), r["method"]
        assert report["predictions"][r["method"]] == [int(s.argmax()) for s in scores]
    single = report["results"][0]
    assert (single["top1"], single["top5"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_predictions_match_the_models_run_directly(report, tiny_trained, sfc_ckpt):
    videos = read_csv_list(tiny_trained["test"])
    backbone = create_backbone("slow8x8_tiny", checkpoint=tiny_trained["backbone"])
    model = create_model("slow8x8_tiny", checkpoint=tiny_trained["backbone"], sfc_checkpoint=sfc_ckpt)
    with torch.no_grad():
        for i, (path, _) in enumerate(videos):
            dense = backbone(sample_video(path, "dense", backbone.config, num_clips=2).tensor).mean(0)
            assert int(dense.argmax()) == report["predictions"]["dense-6"][i]
            sfc = model(sample_video(path, "sfc", model.config).tensor)[0]
            assert int(sfc.argmax()) == report["predictions"]["sfc:topk@tau=2"][i]


def test_fast_decode_feeds_every_method_the_nearest_reference_frames(tiny_trained, sfc_ckpt):
    videos = read_csv_list(tiny_trained["test"])
    fast = evaluate(videos, backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"], sfc_checkpoints={"topk": sfc_ckpt},
                    strategies=("dense", "sfc"), num_clips=2, fast_decode=True)
    assert fast["fast_decode"] is True
    backbone = create_backbone("slow8x8_tiny", checkpoint=tiny_trained["backbone"])
    model = create_model("slow8x8_tiny", checkpoint=tiny_trained["backbone"], sfc_checkpoint=sfc_ckpt)
    with torch.no_grad():  # eval decodes each video whole and samples it; sampling a file decodes only what it needs
        for i, (path, _) in enumerate(videos):
            dense = backbone(sample_video(path, "dense", backbone.config, num_clips=2, reference_only=True).tensor).mean(0)
            assert int(dense.argmax()) == fast["predictions"]["dense-6"][i]
            sfc = model(sample_video(path, "sfc", model.config, reference_only=True).tensor)[0]
            assert int(sfc.argmax()) == fast["predictions"]["sfc:topk@tau=2"][i]


def test_write_report_writes_json_markdown_and_png(report, tmp_path):
    paths = write_report(report, tmp_path, name="r")
    assert json.loads(paths["json"].read_text())["results"] == report["results"]
    md = paths["md"].read_text()
    assert md == markdown(report) and "| dense-6 |" in md and "| sfc:topk@tau=4 |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_requests_are_refused(tiny_trained, sfc_ckpt):
    videos = read_csv_list(tiny_trained["test"])
    kw = dict(backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"])
    with pytest.raises(ConfigError, match="unknown strategy dence"):
        evaluate(videos, strategies=("dence",), **kw)
    with pytest.raises(ConfigError, match="needs at least one --sfc"):
        evaluate(videos, strategies=("sfc",), **kw)
    with pytest.raises(ConfigError, match="used twice"):
        parse_sfc_entries([f"a={sfc_ckpt}", f"a={sfc_ckpt}"])
    assert parse_sfc_entries([f"x={sfc_ckpt}"]) == {"x": Path(sfc_ckpt)}


def test_exported_artifacts_score_like_the_models(report, tiny_trained, sfc_ckpt, tmp_path):
    """`eval --export DIR`: the TorchScript artifacts predict what the PyTorch models predict."""
    from sfc_deploy.eval.evaluate import evaluate_export
    from sfc_deploy.export.exporter import ExportOptions, export_model

    model = create_model("slow8x8_tiny", checkpoint=tiny_trained["backbone"], sfc_checkpoint=sfc_ckpt)
    out = tmp_path / "export"
    export_model(model, out, ExportOptions(formats=("torchscript",), frames=8, size=(32, 40), raw_frames=64))
    videos = read_csv_list(tiny_trained["test"])
    got = evaluate_export(videos, out, runtime="torchscript", strategies=("dense", "sfc"), num_clips=2)
    assert [r["method"] for r in got["results"]] == ["dense-6", "sfc:export@tau=2"]
    assert got["runtime"] == "torchscript" and got["labels"] == report["labels"]
    assert got["predictions"]["dense-6"] == report["predictions"]["dense-6"]
    assert got["predictions"]["sfc:export@tau=2"] == report["predictions"]["sfc:topk@tau=2"]
    with pytest.raises(ConfigError, match="unknown strategy"):
        evaluate_export(videos, out, runtime="torchscript", strategies=("dence",))
