"""``sfc-deploy synth`` through typer's CliRunner: files written, refusals and bad options."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.datasets import read_csv_list

runner = CliRunner()
TINY = ["--classes", "2", "--train-per-class", "1", "--test-per-class", "1", "--frames", "24", "--size", "32x40",
        "--workers", "1"]


def test_synth_writes_a_dataset(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", str(out), *TINY, "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 train + 2 test videos of 2 classes (24 frames, 32x40)" in result.output
    assert (out / "classes.txt").read_text() == "move_right\nmove_left\n"
    test = read_csv_list(out / "test.csv")
    assert len(test) == 2 and set(test.extras[0]) == {"start", "end"}
    assert all(path.suffix == ".mp4" and path.stat().st_size > 0 for path, _ in test)


def test_synth_refuses_existing_output_unless_forced(tmp_path):
    out = tmp_path / "synth"
    out.mkdir()
    result = runner.invoke(app, ["synth", str(out), *TINY])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last == f"error: {out} already exists; choose another directory or pass --force to replace it"
    result = runner.invoke(app, ["synth", str(out), *TINY, "--force"])
    assert result.exit_code == 0, result.output
    assert (out / "train.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "33x40"], "error: size must be even and at least 32x32"),
        (["--size", "big"], "error: size must be HEIGHTxWIDTH such as 64x80, got 'big'"),
        (["--window-min", "0.5", "--window-max", "0.3"], "error: window fractions must satisfy"),
        (["--classes", "11"], "Invalid value for '--classes'"),
        (["--frames", "8"], "Invalid value for '--frames'"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--fps", "abc"], "Invalid value for '--fps'"),
    ],
)
def test_synth_bad_options(tmp_path, args, message):
    result = runner.invoke(app, ["synth", str(tmp_path / "out"), *TINY, *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_synth_needs_an_output_directory():
    result = runner.invoke(app, ["synth"])
    assert result.exit_code == 2 and "Missing argument" in result.output
