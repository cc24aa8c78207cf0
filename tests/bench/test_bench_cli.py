"""``sfc-deploy bench`` through typer's CliRunner: a tiny end-to-end run, and bad options failing with
one-line messages and exit code 2 before any work starts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.bench.worker import INPUT_FILES
from sfc_deploy.cli import app
from sfc_deploy.export.exporter import ExportOptions, export_model
from sfc_deploy.models import create_model, get_config

runner = CliRunner()
ALWAYS = 2  # the class the constant-classifier model below predicts for every input


def _bench(*args: str):
    return runner.invoke(app, ["bench", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "tensorflow"], "unknown runtime 'tensorflow'"),
        (["--precision", "int4"], "unknown precision 'int4'"),
        (["--batch-size", "30,ten"], "--batch-size takes comma-separated integers"),
        (["--batch-size", "31"], "--batch-size values must be 1..30"),
        (["--videos", "0"], "--videos must be >= 1"),
        (["--warmup", "0"], "--warmup must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--head-chunk", "1"], "--head-chunk must be >= 2"),
        (["--stream-sfc-from", "-1"], "--stream-sfc-from must be >= 0"),
        (["--head-chunk", "0", "--stream-sfc-from", "8"], "--head-chunk 0 turns them off"),
        (["--tau", "0.5"], "--tau must be >= 1"),
        (["--lengths", "288,-1"], "--lengths must be positive"),
        (["--video", "/no/such/file.mp4"], "/no/such/file.mp4 does not exist"),
        (["--size", "256by312"], "--size must look like 256x312"),
        (["--fast-decode"], "--fast-decode decodes real videos; add --video FILE"),
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


@pytest.fixture(scope="module")
def constant_export(tmp_path_factory):
    """The bench's tiny model (tests/bench/conftest.py) with a zero classifier whose bias picks class
    ALWAYS: every input, real or not, is predicted ALWAYS, so the test knows every top-1 exactly."""
    config = get_config("slow8x8_tiny")
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    model = create_model(config, tau=2.0, split="res3", num_classes=5)
    with torch.no_grad():
        model.backbone.fc.weight.zero_()
        model.backbone.fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(ALWAYS), 5).float())
    out = tmp_path_factory.mktemp("bench_constant") / "export"
    export_model(model, out, ExportOptions(formats=("torchscript",), frames=8, size=(32, 40), raw_frames=64))
    return out


def test_labelled_videos_are_decoded_timed_and_scored(constant_export, make_video, tmp_path):
    """--labels: real files through decode + sampling + both strategies, top-1 in the report and plot.

    The model always predicts class ALWAYS, and two of the three labels are ALWAYS: top-1 must be
    exactly 2/3 for both strategies (every listed video scored once, none twice, none skipped)."""
    a = make_video("a.mp4", frames=64, size=(48, 64))
    b = make_video("b.mp4", frames=60, size=(48, 64))  # 8 sampled frames: the static-time graph's
    c = make_video("c.mp4", frames=70, size=(48, 64))
    (tmp_path / "classes.txt").write_text("".join(f"c{i}\n" for i in range(5)))  # label names -> indices 0..4
    (tmp_path / "list.csv").write_text(f"path,label\n{a.name},c{ALWAYS}\n{b.name},c0\n{c.name},c{ALWAYS}\n")
    out, png, md = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.md"
    res = _bench(str(constant_export), "--runtime", "torchscript", "--threads", "1", "--batch-size", "30",
                 "--labels", str(tmp_path / "list.csv"), "--json", str(out), "--plot", str(png), "--markdown", str(md),
                 "--workers", "1", "--prefetch", "2", "--fast-decode", "--peak-seconds", "0.1")
    assert res.exit_code == 0, res.output
    tail = res.output.strip().splitlines()
    assert any("SFC vs dense" in line for line in tail[-3:])  # the table and its ratios come last
    assert "sfc-deploy bench: slow8x8_tiny, torchscript fp32" in res.output and "dense 30-crop" in res.output
    report = json.loads(out.read_text())
    assert report["runtime"] == "torchscript"
    assert report["matmul"]["seconds"] == 0.1 and report["matmul"]["repeats"] >= 3  # --peak-seconds reached the worker
    assert report["dense"]["batch_size"] == 30 and report["dense"]["batch_trials_s"] == {}
    assert report["speedup"] == pytest.approx(report["sfc"]["videos_per_s"] / report["dense"]["videos_per_s"])
    assert report["input"]["source"] == INPUT_FILES
    assert report["sfc"]["fast_decode"] is True and report["dense"]["fast_decode"] is True
    for strategy in ("sfc", "dense"):
        assert len(report[strategy]["latencies_s"]) == 3  # every listed video timed once
        assert report[strategy]["top1"] == pytest.approx(100.0 * 2 / 3)  # a percentage, not a fraction
    assert "top-1 SFC 66.7% vs dense 66.7%" in " ".join(res.output.split())  # rich wraps long lines
    for strategy in ("sfc", "dense"):  # decoding timed apart, then the same videos end to end
        row = report[strategy]
        assert row["decode_s_per_video"] > 0 and row["e2e"]["videos"] == 3 and row["e2e"]["workers"] == 1
        assert row["overlap_efficiency"] == pytest.approx(row["e2e_videos_per_s"] / row["videos_per_s"])
    assert report["e2e_speedup"] == pytest.approx(report["sfc"]["e2e_videos_per_s"] / report["dense"]["e2e_videos_per_s"])
    assert "sfc_overlap_efficiency" in report["targets"] and "overlap_efficiency" in report["definitions"]
    table = md.read_text()
    assert "| strategy | decode s/video | model s/video |" in table and "end to end SFC vs dense" in table
    assert "end to end SFC vs dense" in " ".join(res.output.split())
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_labels_and_video_together_are_refused(tmp_path, make_video):
    v = make_video("a.mp4", frames=16)
    (tmp_path / "list.csv").write_text(f"path,label\n{v.name},0\n")
    res = _bench("--labels", str(tmp_path / "list.csv"), "--video", str(v), "--cache", str(tmp_path / "c"))
    assert res.exit_code == 2 and "either --video files or a --labels list" in res.output


def test_head_chunk_is_refused_for_a_head_that_mixes_time(tmp_path):
    """R(2+1)D's head has temporal kernels and strides: chunks would change its output, so an explicit
    --head-chunk is refused in one line (the default quietly runs such a head whole)."""
    config = get_config("r2plus1d_tiny")
    config = dataclasses.replace(config, preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    model = create_model(config, tau=2.0, split="res3", num_classes=5)
    export_model(model, tmp_path / "r21d", ExportOptions(formats=("torchscript",), frames=8, size=(32, 40), raw_frames=16))
    res = _bench(str(tmp_path / "r21d"), "--runtime", "torchscript", "--head-chunk", "4", "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: --head-chunk 4: the head after res3 mixes time steps"), res.output
    assert not (tmp_path / "r.json").exists()
