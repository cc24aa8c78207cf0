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
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # 38 s: run it before a GPU session (benchmarks/gpu/README.md), not in every CI run
def test_dry_run_writes_a_summary_of_passing_steps(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks/gpu/run.sh"), "--dry"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    steps = {s["step"]: s["status"] for s in results["steps"]}
    assert steps == {"environment": "ok", "export_weights": "ok", "bench-pytorch-eager": "ok",
                     "train-amp-bf16": "ok"}, steps
    (bench,) = results["bench"]
    assert bench["device"] == "cpu" and bench["precision"] == "fp32"
    assert bench["sfc_videos_per_s"] > 0 and bench["dense_videos_per_s"] > 0
    assert bench["speedup"] == bench["sfc_videos_per_s"] / bench["dense_videos_per_s"]
    training = results["training"]["amp-bf16"]
    assert training["finite"] and training["loss_fell"] and training["amp"] == "bf16"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| bench-pytorch-eager | ok (exit 0) |" in summary
    assert (tmp_path / "out" / "run.tar.gz").stat().st_size > 0
