"""``benchmarks/gpu/run.sh --dry``: the prepared device check runs its CPU side end to end.

The GPU run itself happens only where a GPU is lent (benchmarks/gpu/README.md records it); here the
same script runs its dry mode (tiny model, CPU, fp32), so a broken step, a renamed option or a
collector that cannot read what the steps wrote fails CI instead of a scarce GPU session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_writes_a_summary_of_passing_steps(tmp_path: Path) -> None:
    """About 70 s on 2 cores (two benches of a tiny model, each in fresh processes, the stage profile and classify jobs):
    CI runs it, so a GPU session never finds the script broken."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks/gpu/run.sh"), "--dry"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=420, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    steps = {s["step"]: s["status"] for s in results["steps"]}
    assert steps == {"environment": "ok", "export_weights": "ok", "bench-pytorch-as-trained": "ok",
                     "profile-stages": "ok", "e2e_videos": "ok", "bench-pytorch-e2e": "ok", "classify-batch": "ok",
                     "train-amp-bf16": "ok"}, steps
    benches = {b["run"]: b for b in results["bench"]}
    assert set(benches) == {"pytorch-as-trained", "pytorch-e2e"}
    for name, bench in benches.items():
        assert bench["device"] == "cpu" and bench["precision"] == "fp32"
        assert bench["sfc_videos_per_s"] > 0 and bench["dense_videos_per_s"] > 0
        assert bench["speedup"] == bench["sfc_videos_per_s"] / bench["dense_videos_per_s"]
        assert bench["inference_rewrite"] is (name == "pytorch-e2e")  # served as the runtime serves it, or --as-trained
    assert benches["pytorch-as-trained"]["sfc_batch"] == 2  # BEST: no sweep, the batch the script names
    e2e = benches["pytorch-e2e"]  # the two mp4 files synth wrote, decoded ahead of the model
    assert e2e["sfc_e2e_videos_per_s"] > 0 and e2e["dense_e2e_videos_per_s"] > 0 and e2e["decode_workers"] == 1
    assert e2e["e2e_speedup"] == e2e["sfc_e2e_videos_per_s"] / e2e["dense_e2e_videos_per_s"]
    assert benches["pytorch-as-trained"]["e2e_speedup"] is None
    classified = results["classify"]  # the same two files through classify, one per call and two per call
    assert classified["batch"] == 2 and classified["videos"] == 2 and classified["top1_agreement"] == 1.0
    assert all(r["succeeded"] == 2 and r["videos_per_s"] > 0 for r in classified["runs"].values())
    stages = results["stages"]  # the stage profile, each variant on the same weights
    assert set(stages["variants"]) == {"served", "channels-last", "as-trained"} and stages["sfc_batch"] == 2
    for variant in stages["variants"].values():
        assert set(variant["stages"]) == {"head", "sfc", "tail", "clip"}
        assert variant["sfc_ms_per_video"] == sum(variant["stages"][s]["ms_per_video"] for s in ("head", "sfc", "tail"))
        assert all(abs(sum(s["shares"].values()) - 1) < 1e-6 for s in variant["stages"].values())
    training = results["training"]["amp-bf16"]
    assert training["finite"] and training["loss_fell"] and training["amp"] == "bf16"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| bench-pytorch-e2e | ok (exit 0) |" in summary and "| pytorch-as-trained | pytorch | fp32 |" in summary
    assert "| run (real mp4 files) |" in summary and "\n| pytorch-e2e | " in summary
    assert "classify end to end (2 mp4 files, 1 decoding threads, pytorch fp32 on cpu)" in summary
    assert "\n| as-trained | " in summary and "copies" in summary
    with tarfile.open(tmp_path / "out" / "run.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"./bench-pytorch-as-trained.md", "./logs/train-amp-bf16.log"} <= names
    markdown = tar_text(tmp_path / "out" / "run.tar.gz", "./bench-pytorch-as-trained.md")
    assert "as trained (no inference rewrite)" in markdown and "8x32x32" in markdown  # dense crops at the dry scale
    assert not list((tmp_path / "out").glob(".run.tar.gz.*"))  # no temporary left behind


def tar_text(tarball: Path, name: str) -> str:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(name)
        assert member is not None, name
        return member.read().decode()
