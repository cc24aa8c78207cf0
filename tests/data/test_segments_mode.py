"""Untrimmed videos (paper section 6, table 7): S segments of F sampled frames in predict, eval, classify, bench.

The tiny TorchScript export fixes SFC's time axis at T=8 sampled frames (so 2 x 4 fits it); the same
export on ``--runtime pytorch`` takes any length.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.bench.flops import sfc_cost
from sfc_deploy.cli import app
from sfc_deploy.data.datasets import VideoList
from sfc_deploy.data.inputs import model_input
from sfc_deploy.data.samplers import sample_video, segment_indices
from sfc_deploy.data.synth import write_counter_video
from sfc_deploy.eval.evaluate import evaluate_export
from sfc_deploy.eval.predict import from_export, predict_video
from sfc_deploy.export.weights import model_from_manifest
from sfc_deploy.runtime.pipeline import load
from sfc_deploy.scale.classify import ClassifyOptions, classify

pytestmark = pytest.mark.usefixtures("sfc_one_thread")
runner = CliRunner()
LONG = 200  # raw frames: 25 sampled at stride 8, far more than one 2 x 4 plan reads


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("long")
    return [write_counter_video(root / "long.mp4", LONG, (32, 40)),
            write_counter_video(root / "short.mp4", 20, (32, 40))]


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("runtime, plan", [("torchscript", (2, 4)), ("pytorch", (3, 5))])
def test_predict_reads_the_segment_plan(sfc_export_ts: Path, long_videos: list[Path], runtime: str, plan) -> None:
    video = long_videos[0]
    with from_export(sfc_export_ts, runtime=runtime) as predictor:
        pred = predict_video(predictor, video, top=3, segments=plan)
        expected = segment_indices(LONG, predictor.config.stride, *plan)
        assert len(expected) == plan[0] * plan[1] and pred.frame_indices == tuple(expected)
        assert pred.attention.shape[-1] == plan[0] * plan[1]
        sampled = sample_video(video, "segments", predictor.config, segments=plan[0], frames_per_segment=plan[1])
        assert sampled.frame_indices[0] == tuple(expected)
        logits, _ = predictor.forward(sampled.tensor)
        torch.testing.assert_close(pred.logits, logits[0].float(), rtol=0, atol=0)
        whole = predict_video(predictor, video, top=3) if runtime == "pytorch" else None
    if whole is not None:  # the default is still the whole video
        assert len(whole.frame_indices) == -(-LONG // predictor.config.stride)
    reference = model_from_manifest(load(sfc_export_ts, "pytorch").manifest).eval()
    with torch.no_grad():
        torch.testing.assert_close(pred.logits, reference(sampled.tensor)[0].float(), rtol=1e-4, atol=1e-4)


def test_predict_cli_segments_and_json_source_frames(sfc_export_ts: Path, long_videos: list[Path], tmp_path: Path) -> None:
    import json

    out = tmp_path / "p.json"
    result = runner.invoke(app, ["predict", str(long_videos[0]), "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                 "--segments", "2", "--segment-frames", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["videos"][0]["attention"]["source_frames"] == segment_indices(LONG, 8, 2, 4)


def test_segments_that_do_not_fill_a_fixed_time_axis_fail_in_one_line(sfc_export_ts: Path, long_videos: list[Path],
                                                                       tmp_path: Path) -> None:
    line = _one_line_error(runner.invoke(app, ["predict", str(long_videos[0]), "--export", str(sfc_export_ts),
                                               "--runtime", "torchscript", "--segments", "3", "--segment-frames", "4"]))
    for fragment in ("exactly 8 frames", "gives 12", "S x F = 8", "--runtime pytorch"):
        assert fragment in line, line
    line = _one_line_error(runner.invoke(app, ["classify", str(long_videos[0]), "--export", str(sfc_export_ts),
                                               "--runtime", "torchscript", "--out", str(tmp_path / "c.parquet"),
                                               "--segments", "3", "--segment-frames", "4"]))
    assert "S x F = 8" in line and not (tmp_path / "c.parquet").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--segments", "8"], "--segments needs --segment-frames"),
    (["--segment-frames", "32"], "--segment-frames needs --segments"),
])
def test_half_a_segment_option_is_refused(long_videos: list[Path], args, fragment: str) -> None:
    line = _one_line_error(runner.invoke(app, ["predict", str(long_videos[0]), *args]))
    assert fragment in line, line


def test_eval_segments_row_equals_a_manual_computation(sfc_export_ts: Path, long_videos: list[Path]) -> None:
    with load(sfc_export_ts, "torchscript") as dep:
        names = tuple(str(i) for i in range(dep.config.num_classes))
        videos = VideoList(items=((long_videos[0], 3),), class_names=names)
        report = evaluate_export(videos, sfc_export_ts, runtime="torchscript", strategies=["single", "sfc", "segments"],
                                 num_clips=2, segments=(2, 4))
        x = model_input(long_videos[0], "segments", dep.config, dep.input_spec, segments=2, frames_per_segment=4).tensor
        logits = dep.predict(x)[0]
        reference = model_from_manifest(dep.manifest)
    rows = {r["method"]: r for r in report["results"]}
    name = "sfc-segments-2x4:export@tau=2"
    assert list(rows) == ["single", "sfc:export@tau=2", name]
    row = rows[name]
    assert row["strategy"] == "segments" and row["tau"] == 2 and row["videos"] == 1
    top5 = logits.topk(5).indices.tolist()
    assert report["predictions"][name] == [top5[0]]
    assert row["top1"] == float(top5[0] == 3) and row["top5"] == float(3 in top5)
    assert row["gmacs"] == pytest.approx(sfc_cost(reference, frames=8, size=tuple(x.shape[-2:])).gmacs)
    assert rows["sfc:export@tau=2"]["gmacs"] == pytest.approx(row["gmacs"])  # same T=8 on this export


def test_eval_cli_refuses_segments_without_the_strategy(sfc_export_ts: Path, tmp_path: Path) -> None:
    line = _one_line_error(runner.invoke(app, ["eval", str(tmp_path), "--out", str(tmp_path / "o"), "--export",
                                               str(sfc_export_ts), "--runtime", "torchscript", "--strategies", "sfc",
                                               "--segments", "2", "--segment-frames", "4"]))
    assert "add it to --strategies" in line, line


def test_classify_rows_with_segments_equal_predict(sfc_export_ts: Path, long_videos: list[Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "c.parquet"
    paths = [str(p) for p in long_videos]
    summary = classify(paths, sfc_export_ts, out, ClassifyOptions(runtime="torchscript", workers=1, prefetch=2, top=3,
                                                                  segments=(2, 4)))
    assert summary["succeeded"] == 2
    rows = {Path(r["path"]).name: r for r in pq.read_table(out).to_pylist()}
    with from_export(sfc_export_ts, runtime="torchscript") as predictor:
        for video in long_videos:
            pred = predict_video(predictor, video, top=3, segments=(2, 4))
            row = rows[video.name]
            assert row["error"] == ""
            assert [(c["class"], c["index"]) for c in row["topk"]] == [(c.name, c.index) for c in pred.top]
            assert row["top1_prob"] == pytest.approx(pred.top[0].prob, abs=1e-6)
            assert row["peak_frames"] == [pred.frame_indices[i] for i in pred.peaks(3)]


def test_bench_worker_feeds_the_segment_input(sfc_export_ts: Path, long_videos: list[Path]) -> None:
    from sfc_deploy.bench.suite import BenchOptions
    from sfc_deploy.bench.worker import WorkerJob, _Inputs
    from sfc_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="add --video"):
        BenchOptions(segments=(2, 4)).check()
    job = WorkerJob(strategy="sfc", export_dir=str(sfc_export_ts), runtime="torchscript", video_files=[str(long_videos[0])],
                    segments=[2, 4])
    job.check()
    with load(sfc_export_ts, "torchscript") as dep:
        inputs = _Inputs(job, dep)
        x = inputs.next()
        expected = model_input(long_videos[0], "segments", dep.config, dep.input_spec, segments=2, frames_per_segment=4)
    assert inputs.frames == 8
    torch.testing.assert_close(x, expected.tensor.to(x.dtype), rtol=0, atol=0)


def test_eval_cli_writes_the_segments_row(sfc_export_ts: Path, long_videos: list[Path], tmp_path: Path) -> None:
    import json

    data = tmp_path / "list.csv"
    data.write_text(f"path,label\n{long_videos[0]},3\n{long_videos[1]},1\n")
    (tmp_path / "classes.txt").write_text("".join(f"{i}\n" for i in range(10)))
    result = runner.invoke(app, ["eval", str(data), "--out", str(tmp_path / "o"), "--export", str(sfc_export_ts),
                                 "--runtime", "torchscript", "--strategies", "sfc,segments", "--segments", "2",
                                 "--segment-frames", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert [r["method"] for r in report["results"]] == ["sfc:export@tau=2", "sfc-segments-2x4:export@tau=2"]
    assert (tmp_path / "o" / "eval.md").is_file() and (tmp_path / "o" / "eval.png").is_file()


@pytest.mark.slow  # 13 s (bench on a file, with its end-to-end phase); the segment input itself is tested above
def test_bench_cli_times_the_segment_input(sfc_export_ts: Path, long_videos: list[Path], tmp_path: Path) -> None:
    import json

    out = tmp_path / "r.json"
    result = runner.invoke(app, ["bench", str(sfc_export_ts), "--runtime", "torchscript", "--threads", "1",
                                 "--batch-size", "30", "--videos", "1", "--video", str(long_videos[0]),
                                 "--segments", "2", "--segment-frames", "4", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["sfc"]["segments"] == [2, 4] and report["sfc"]["frames"] == 8
    assert report["dense"]["segments"] is None and "2 segments x 4 frames" in report["input"]["sfc"]
