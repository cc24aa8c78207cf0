"""tpn50 through export and verification on ONNX Runtime (the tiny variant, random weights).

The default run exports the tail only: it is the part TPN changes (res4, res5, the pyramid neck and
TPNHead; the head is slow-only's and SFC does not depend on the backbone). The slow test runs the
whole user path: an mmaction2 checkpoint -> ``sfc-deploy export`` (all parts) -> ``sfc-deploy verify``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from sfc_deploy.models import create_model, get_config

RAW_FRAMES, SIZE = 64, (64, 80)


def tiny_model():
    """tpn50_tiny with 5 classes, 64x64 dense crops and every weight and BN statistic random."""
    config = get_config("tpn50_tiny", num_classes=5)
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=64, crop=64))
    model = create_model(config, tau=2.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.backbone.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("running_var", "bn.weight", "bn_a.weight", "bn_b.weight", "bn_c.weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.slow  # 8 s; the tpn50 head/tail split is checked in test_tpn.py, ONNX Runtime parity of the parts in tests/export
def test_tail_exports_to_onnx_and_verifies_on_onnxruntime(tmp_path: Path, sfc_one_thread):
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.export.manifest import load_manifest
    from sfc_deploy.verify.parity import verify

    options = ExportOptions(formats=("onnx",), parts=("tail",), frames=RAW_FRAMES // 8, size=SIZE, raw_frames=RAW_FRAMES)
    out = export_model(tiny_model(), tmp_path / "export", options) and tmp_path / "export"
    manifest = load_manifest(out)
    assert manifest.backbone.family == "tpn" and manifest.backbone.preprocess.convention == "mmaction2"
    report = verify(manifest, runtimes=["onnxruntime"], dense_clips=1, threads=1)
    tails = [c for c in report.checks if c.part == "tail"]
    assert report.passed and not report.not_run, report.to_dict()
    assert {c.variant for c in tails} >= {"portable", "default (as written: tail.fp32.onnx)"}, [c.variant for c in tails]


@pytest.mark.slow
def test_mmaction2_checkpoint_exports_and_verifies_from_the_cli(tmp_path: Path):
    """The user's path, every part (head, sfc, tail and the dense clip model), on ONNX Runtime."""
    from typer.testing import CliRunner

    from sfc_deploy.cli import app
    from sfc_deploy.models.checkpoint import save_in_layout

    model = tiny_model()
    ckpt = save_in_layout(model.backbone.state_dict(), tmp_path / "tpn.pth", "mmaction2", config=model.config)
    runner = CliRunner()
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "-o", str(out), "-b", "tpn50_tiny", "--checkpoint", str(ckpt),
                                 "--frames", str(RAW_FRAMES), "--size", f"{SIZE[0]}x{SIZE[1]}", "--no-verify"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["verify", str(out), "--runtime", "onnxruntime", "--dense-clips", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "manifest.json").read_text())["parity"]  # verify records its results there
    parts = {c["part"] for c in report["checks"]}
    assert report["passed"] and {"head", "sfc", "tail", "clip", "sfc_pipeline", "dense_pipeline"} <= parts, parts
