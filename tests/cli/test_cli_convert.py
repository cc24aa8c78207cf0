"""``sfc-deploy convert`` through typer's CliRunner: success, refusals, and their one-line messages."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.models.checkpoint import save_in_layout
from sfc_deploy.models.factory import create_backbone
from sfc_deploy.models.registry import get_config
from sfc_deploy.models.resnet3d import ResNet3d

NAME = "slow8x8_tiny"
runner = CliRunner()


@pytest.fixture(scope="module")
def source() -> ResNet3d:
    torch.manual_seed(0)
    model = ResNet3d(get_config(NAME, num_classes=7))
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                t.normal_(0, 0.1)
    return model.eval()


@pytest.fixture()
def mm_checkpoint(source: ResNet3d, tmp_path: Path) -> Path:
    config = source.config.replace(class_names=tuple(f"c{i}" for i in range(7)))
    return save_in_layout(source.state_dict(), tmp_path / "mm.pth", "mmaction2", config=config)


def _convert(*args: str):
    return runner.invoke(app, ["convert", *args])


def test_convert_round_trip(source, mm_checkpoint, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    result = _convert(str(mm_checkpoint), "--backbone", NAME, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "layout: mmaction2" in result.output
    assert "classes: 7 (c0, c1, c2, c3, c4, ...)" in result.output
    assert "data_preprocessor.*" in result.output
    assert f"wrote: {out}" in result.output
    clip = torch.randn(1, 3, 8, 32, 32)
    model = create_backbone(NAME, checkpoint=out)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), source(clip))


def test_existing_output_needs_force(mm_checkpoint, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"keep me")
    result = _convert(str(mm_checkpoint), "--backbone", NAME, "--out", str(out))
    assert result.exit_code == 2
    assert "already exists; pass --force" in result.output
    assert out.read_bytes() == b"keep me"
    result = _convert(str(mm_checkpoint), "--backbone", NAME, "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"keep me"


def test_pickled_checkpoint_needs_trust(source, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / "sf.pyth", "pyslowfast", config=source.config)
    ckpt = torch.load(path, weights_only=True)
    ckpt["args"] = argparse.Namespace(lr=0.1)
    torch.save(ckpt, path)
    out = tmp_path / "w.safetensors"
    result = _convert(str(path), "--backbone", NAME, "--out", str(out))
    assert result.exit_code == 2
    assert "argparse.Namespace" in result.output and "--trust-checkpoint" in result.output
    assert not out.exists()
    result = _convert(str(path), "--backbone", NAME, "--out", str(out), "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    assert "layout: pyslowfast" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", NAME, "--out", "w.pt"], "--out must end in .safetensors"),
        (["--backbone", "slow8x9", "--out", "w.safetensors"], "unknown backbone 'slow8x9'"),
        (["--backbone", "slow8x8", "--out", "w.safetensors"], "pass --backbone slow8x8_tiny"),
    ],
)
def test_invalid_values_fail_in_one_line(args, message, mm_checkpoint, tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a.startswith("w.") else a for a in args]
    result = _convert(str(mm_checkpoint), *args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not list(tmp_path.glob("w.*"))


def test_missing_checkpoint(tmp_path: Path) -> None:
    result = _convert(str(tmp_path / "nope.pyth"), "--backbone", NAME, "--out", str(tmp_path / "w.safetensors"))
    assert result.exit_code == 2
    assert "not found; check the path" in result.output
