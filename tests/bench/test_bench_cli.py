"""``sfc-deploy bench`` through typer's CliRunner: a tiny end-to-end run, and bad options failing with
one-line messages and exit code 2 before any work starts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app

runner = CliRunner()


def _bench(*args: str):
    return runner.invoke(app, ["bench", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "tensorflow"], "unknown runtime 'tensorflow'"),
        (["--precision", "int8"], "--precision 'int8'"),
        (["--batch-size", "30,ten"], "--batch-size takes comma-separated integers"),
        (["--batch-size", "31"], "--batch-size values must be 1..30"),
        (["--videos", "0"], "--videos must be >= 1"),
        (["--warmup", "0"], "--warmup must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--head-chunk", "1"], "--head-chunk must be >= 2"),
        (["--tau", "0.5"], "--tau must be >= 1"),
        (["--lengths", "288,-1"], "--lengths must be positive"),
        (["--video", "/no/such/file.mp4"], "/no/such/file.mp4 does not exist"),
        (["--size", "256by312"], "--size must look like 256x312"),
    ],
)
def test_bad_options_fail_in_one_line(args, message, tmp_path):
    res = _bench("--cache", str(tmp_path / "cache"), *args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message in lines[0]
    assert not (tmp_path / "cache").exists()  # nothing exported before the options were checked


def test_not_an_export_folder(tmp_path):
    res = _bench(str(tmp_path))
    assert res.exit_code == 2
    assert "no manifest.json" in res.output and len(res.output.strip().splitlines()) == 1


def test_tau_sweep_needs_the_cache(tiny_export):
    res = _bench(str(tiny_export), "--tau", "1,2,4")
    assert res.exit_code == 2
    assert "a tau sweep (1, 2, 4) needs one export per tau" in res.output


def test_output_path_that_is_a_folder(tiny_export, tmp_path):
    res = _bench(str(tiny_export), "--json", str(tmp_path))
    assert res.exit_code == 2 and "is a folder" in res.output


def test_labelled_videos_are_decoded_timed_and_scored(tiny_export, make_video, tmp_path):
    """--labels: real files through decode + sampling + both strategies, top-1 in the report and plot."""
    a = make_video("a.mp4", frames=64, size=(48, 64))
    b = make_video("b.mp4", frames=60, size=(48, 64))  # 8 sampled frames: the static-time graph's
    (tmp_path / "list.csv").write_text(f"path,label\n{a.name},0\n{b.name},1\n")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    res = _bench(str(tiny_export), "--runtime", "torchscript", "--threads", "1", "--batch-size", "30",
                 "--labels", str(tmp_path / "list.csv"), "--json", str(out), "--plot", str(png))
    assert res.exit_code == 0, res.output
    tail = res.output.strip().splitlines()
    assert any("SFC vs dense" in line for line in tail[-3:])  # the table and its ratios come last
    assert "sfc-deploy bench: slow8x8_tiny, torchscript fp32" in res.output and "dense 30-crop" in res.output
    report = json.loads(out.read_text())
    assert report["runtime"] == "torchscript"
    assert report["dense"]["batch_size"] == 30 and report["dense"]["batch_trials_s"] == {}
    assert report["speedup"] == pytest.approx(report["sfc"]["videos_per_s"] / report["dense"]["videos_per_s"])
    assert report["input"]["source"] == "video files (decode included)"
    for strategy in ("sfc", "dense"):
        assert len(report[strategy]["latencies_s"]) == 2  # every listed video timed once
        assert report[strategy]["top1"] in (0.0, 50.0, 100.0)
    assert "top-1 SFC" in res.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_labels_and_video_together_are_refused(tmp_path, make_video):
    v = make_video("a.mp4", frames=16)
    (tmp_path / "list.csv").write_text(f"path,label\n{v.name},0\n")
    res = _bench("--labels", str(tmp_path / "list.csv"), "--video", str(v), "--cache", str(tmp_path / "c"))
    assert res.exit_code == 2 and "either --video files or a --labels list" in res.output
