"""Agreement with dense 30-crop and seed spread: computed independently here and compared with the report."""

from __future__ import annotations

import math

import pytest
import torch

from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.eval.agreement import agreement, seed_groups
from sfc_deploy.eval.evaluate import evaluate
from sfc_deploy.eval.report import markdown
from sfc_deploy.train.sfc import SFCTrainOptions, train_sfc
from sfc_deploy.train.views import Augment


def test_agreement_by_hand():
    dense = [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    sfc = [[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    labels = [0, 2, 2, 1]  # video 1: SFC right, dense wrong; video 2: dense right, SFC wrong
    got = agreement(sfc, dense, labels)

    def kl(p_logits, q_logits):
        p = [math.exp(v) / sum(math.exp(u) for u in p_logits) for v in p_logits]
        q = [math.exp(v) / sum(math.exp(u) for u in q_logits) for v in q_logits]
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    assert got["agreement"] == 0.5 and got["disagreements"] == 2
    assert got["right_when_disagreeing"] == 0.5 and got["dense_right_when_disagreeing"] == 0.5
    assert got["kl_from_dense"] == pytest.approx(sum(kl(d, s) for d, s in zip(dense, sfc)) / 4)
    same = agreement(dense, dense, labels)
    assert same["agreement"] == 1.0 and same["kl_from_dense"] == pytest.approx(0.0, abs=1e-12)
    assert same["right_when_disagreeing"] is None


@pytest.fixture(scope="module")
def seeds(tiny_trained, tmp_path_factory):
    """Two seeds of one variant and one of another (avg pooling), one tiny epoch each."""
    videos = read_csv_list(tiny_trained["train"])
    out = {}
    for name, seed, pool in (("topk_s0", 0, "topk"), ("topk_s1", 1, "topk"), ("avg_s0", 0, "avg")):
        options = SFCTrainOptions(epochs=1, batch_size=3, cache_views=1, seed=seed, pool=pool, augment=Augment(flip=False))
        out[name] = train_sfc(videos, tmp_path_factory.mktemp(name), options, backbone="slow8x8_tiny",
                              checkpoint=tiny_trained["backbone"], threads=1, warn=None)["checkpoint"]
    return out


def test_report_agreement_matches_its_predictions_and_seeds_are_grouped(tiny_trained, seeds):
    report = evaluate(read_csv_list(tiny_trained["test"]), backbone="slow8x8_tiny", checkpoint=tiny_trained["backbone"],
                      sfc_checkpoints=seeds, taus=(2.0,), strategies=("dense", "sfc"), num_clips=2)
    rows = {r["method"]: r for r in report["results"]}
    labels, preds = report["labels"], report["predictions"]
    assert report["agreement_with"] == "dense-6" and "agreement" not in rows["dense-6"]
    for name in seeds:
        row = rows[f"sfc:{name}@tau=2"]
        same = [a == b for a, b in zip(preds[row["method"]], preds["dense-6"])]
        assert row["agreement"] == pytest.approx(sum(same) / len(same))
        assert row["disagreements"] == same.count(False)
        assert row["kl_from_dense"] >= 0
        if row["disagreements"]:
            right = sum(p == y for p, y, s in zip(preds[row["method"]], labels, same) if not s)
            assert row["right_when_disagreeing"] == pytest.approx(right / row["disagreements"])
    assert rows["sfc:topk_s1@tau=2"]["seed"] == 1
    (group,) = report["seed_groups"]  # avg_s0 is another variant, alone: no group
    assert group["variant"] == "topk" and group["members"] == ["topk_s0", "topk_s1"] and group["seeds"] == [0, 1]
    top1 = [rows["sfc:topk_s0@tau=2"]["top1"], rows["sfc:topk_s1@tau=2"]["top1"]]
    assert group["top1_mean"] == pytest.approx(sum(top1) / 2)
    assert group["top1_std"] == pytest.approx(abs(top1[0] - top1[1]) / math.sqrt(2))
    md = markdown(report)
    assert "agrees with dense" in md and "| topk (sfc) | 2 | 0,1 |" in md


def test_seed_groups_need_two_members_and_the_same_tau():
    rows = [{"sfc": "a", "strategy": "sfc", "tau": 2.0, "top1": 0.5, "top5": 1.0},
            {"sfc": "b", "strategy": "sfc", "tau": 4.0, "top1": 0.7, "top5": 1.0},
            {"sfc": None, "strategy": "dense", "top1": 0.9, "top5": 1.0}]
    assert seed_groups(rows, {"a": "k", "b": "k"}) == []
    rows[1]["tau"] = 2.0
    (g,) = seed_groups(rows, {"a": "k", "b": "k"})
    assert g["top1_mean"] == pytest.approx(0.6) and g["top1_min"] == 0.5 and g["top1_max"] == 0.7
    assert "agreement_mean" not in g  # no dense in the report: nothing to agree with
