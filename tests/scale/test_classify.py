"""``sfc-deploy classify`` with the local engine: rows equal predict's, bad videos are rows, reruns resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.eval.predict import from_export, predict_video
from sfc_deploy.scale.classify import COLUMNS, ClassifyOptions, classify, journal_path, read_rows, top1_of
from sfc_deploy.scale.sources import resolve_inputs

pytestmark = pytest.mark.usefixtures("sfc_one_thread")
runner = CliRunner()
OPTS = ClassifyOptions(runtime="torchscript", workers=2, prefetch=2, top=3)


def test_rows_match_predict_and_the_corrupt_video_is_a_row(sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    paths = resolve_inputs(videos)
    assert [Path(p).name for p in paths] == ["broken.mp4", "v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    out = tmp_path / "pred.parquet"
    summary = classify(paths, sfc_export_ts, out, OPTS)
    assert (summary["videos"], summary["succeeded"], summary["failed"], summary["skipped"]) == (5, 4, 1, 0)
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS) and table.num_rows == 5
    rows = {Path(r["path"]).name: r for r in table.to_pylist()}
    assert rows["broken.mp4"]["error"] and rows["broken.mp4"]["top1"] is None and "broken.mp4" in rows["broken.mp4"]["error"]
    with from_export(sfc_export_ts, runtime="torchscript") as predictor:
        for name in ("v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"):
            pred = predict_video(predictor, videos / name, top=3)
            row = rows[name]
            assert row["error"] == ""
            assert [(c["class"], c["index"]) for c in row["topk"]] == [(c.name, c.index) for c in pred.top]
            assert row["top1_prob"] == pytest.approx(pred.top[0].prob, abs=1e-6)
            peaks = [pred.frame_indices[i] for i in pred.peaks(3)]
            assert row["peak_frames"] == peaks
            assert row["peak_seconds"] == pytest.approx([f / pred.fps for f in peaks])
            assert row["num_frames"] == pred.num_frames and row["decode_s"] > 0 and row["model_s"] > 0
    assert not journal_path(out).exists()


def test_a_killed_job_resumes_without_redoing_finished_rows(sfc_export_ts: Path, videos: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from sfc_deploy.runtime.pipeline import Deployment

    paths = resolve_inputs(videos)
    clean = tmp_path / "clean.parquet"
    classify(paths, sfc_export_ts, clean, OPTS)
    out = tmp_path / "pred.parquet"
    real = Deployment.predict_with_attention
    calls: list[int] = []

    def dies_on_the_third(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C or a kill looks like from inside the loop
        return real(self, frames)

    monkeypatch.setattr(Deployment, "predict_with_attention", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        classify(paths, sfc_export_ts, out, OPTS)
    assert not out.exists()  # no half-written predictions ...
    journaled = [json.loads(line)["path"] for line in journal_path(out).read_text().splitlines()]
    assert len(journaled) == 3  # ... but the finished rows (the corrupt video's and two more) are kept
    calls.clear()
    monkeypatch.setattr(Deployment, "predict_with_attention",
                        lambda self, frames: (calls.append(1), real(self, frames))[1])
    summary = classify(paths, sfc_export_ts, out, OPTS)
    assert summary["skipped"] == 3 and summary["classified"] == 2 and len(calls) == 2
    assert top1_of(read_rows(out)) == top1_of(read_rows(clean))
    assert [r["path"] for r in read_rows(out)] == paths == [r["path"] for r in read_rows(clean)]
    # a rerun of a finished job runs nothing
    calls.clear()
    again = classify(paths, sfc_export_ts, out, OPTS)
    assert again["skipped"] == 5 and again["classified"] == 0 and calls == []


def test_inputs_from_csv_list_glob_and_file(videos: Path, tmp_path: Path) -> None:
    shutil.copy(videos / "v0.mp4", tmp_path / "a.mp4")
    (tmp_path / "list.csv").write_text("path,label\na.mp4,x\n" + f"{videos / 'v1.mp4'},y\n")
    (tmp_path / "list.txt").write_text("# videos\na.mp4\n\n" + f"{videos / 'v2.mp4'}\n")
    assert resolve_inputs(tmp_path / "list.csv") == [str(tmp_path / "a.mp4"), str(videos / "v1.mp4")]
    assert resolve_inputs(tmp_path / "list.txt") == [str(tmp_path / "a.mp4"), str(videos / "v2.mp4")]
    assert resolve_inputs(f"{videos}/v*.mp4") == [str(videos / f"v{i}.mp4") for i in range(4)]
    assert resolve_inputs(videos / "v3.mp4") == [str(videos / "v3.mp4")]


def test_cli_classify_writes_parquet_and_jsonl(sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    out, lines = tmp_path / "p.parquet", tmp_path / "p.jsonl"
    result = runner.invoke(app, ["classify", str(videos), "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                 "--out", str(out), "--jsonl", str(lines), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "5 videos: 4 classified, 1 failed" in result.stdout
    as_json = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["path"] for r in as_json] == [r["path"] for r in read_rows(out)]
    assert all(len(r["topk"]) == 2 for r in as_json if not r["error"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "p.parquet"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (lambda v, e, o: [str(v / "nothing_here"), "--export", str(e), "--out", str(o / "p.parquet")], "not a CSV, a list file"),
        (lambda v, e, o: [f"{v}/*.avi", "--export", str(e), "--out", str(o / "p.parquet")], "matches no files"),
        (lambda v, e, o: [str(v), "--export", str(o), "--out", str(o / "p.parquet")], "not an export folder"),
        (lambda v, e, o: [str(v), "--export", str(e), "--out", str(o / "p.csv")], ".parquet"),
        (lambda v, e, o: [str(v), "--export", str(e), "--out", str(o / "a_dir")], "is a folder"),
        (lambda v, e, o: [str(v), "--export", str(e), "--out", str(o / "p.parquet"), "--runtime", "onnxruntime"], "--format onnx"),
        (lambda v, e, o: [str(v), "--export", str(e), "--out", str(o / "p.parquet"), "--workers", "0"], "--workers"),
    ],
)
def test_cli_classify_bad_input_is_one_line(sfc_export_ts: Path, videos: Path, tmp_path: Path, args, fragment: str) -> None:
    (tmp_path / "a_dir.parquet").mkdir()
    (tmp_path / "a_dir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["classify", *args(videos, sfc_export_ts, tmp_path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_engine_ray_without_ray_says_how_to_install_it(sfc_export_ts: Path, videos: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what a plain install without the scale extra looks like
    result = runner.invoke(app, ["classify", str(videos), "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                 "--out", str(tmp_path / "p.parquet"), "--engine", "ray"])
    assert result.exit_code == 2, result.output
    assert "pip install 'sfc-deploy[scale]'" in result.stderr and list(tmp_path.iterdir()) == []


def test_batched_rows_equal_one_at_a_time_and_share_calls(sfc_export_ts: Path, videos: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--batch 3: the videos of each batch that decoded and share an input shape run as one model call
    (the export fixes the time axis and size, so all do); the rows are those of one video at a time."""
    from dataclasses import replace

    from sfc_deploy.runtime.pipeline import Deployment

    paths = resolve_inputs(videos)  # broken.mp4 first: the first batch has one bad video and two good ones
    one = read_rows_of(classify(paths, sfc_export_ts, tmp_path / "one.parquet", OPTS))
    real, calls = Deployment.predict_with_attention, []
    monkeypatch.setattr(Deployment, "predict_with_attention",
                        lambda self, frames: (calls.append(frames.shape[0]), real(self, frames))[1])
    summary = classify(paths, sfc_export_ts, tmp_path / "three.parquet", replace(OPTS, batch=3))
    assert calls == [2, 2] and (summary["succeeded"], summary["failed"]) == (4, 1)
    three = read_rows_of(summary)
    assert [r["path"] for r in three] == [r["path"] for r in one]
    for a, b in zip(three, one):
        assert a["error"] == b["error"] and a["top1"] == b["top1"] and a["peak_frames"] == b["peak_frames"]
        assert [c["prob"] for c in a["topk"]] == pytest.approx([c["prob"] for c in b["topk"]], abs=1e-5)
    by_name = {Path(r["path"]).name: r for r in three}
    assert by_name["v0.mp4"]["model_s"] == by_name["v1.mp4"]["model_s"] > 0  # one call's seconds, shared out


def read_rows_of(summary: dict) -> list[dict]:
    return read_rows(Path(summary["out"]))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["classify", str(videos), "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                 "--out", str(tmp_path / "p.parquet"), "--device", "cuda"])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA device is visible" in lines[0] and "--device cpu" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "fragment"), [
    (["--device", "cpu", "--engine", "ray"], "give --gpus-per-worker instead"),
    (["--batch", "0"], "--batch"),
])
def test_classify_device_and_batch_options_that_do_not_apply(sfc_export_ts: Path, videos: Path, tmp_path: Path,
                                                             args, fragment) -> None:
    result = runner.invoke(app, ["classify", str(videos), "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                 "--out", str(tmp_path / "p.parquet"), *args])
    assert result.exit_code == 2 and fragment in result.stderr, result.output
    assert list(tmp_path.iterdir()) == []


def test_device_cpu_rows_equal_the_default(sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    paths = resolve_inputs(videos)
    default = read_rows_of(classify(paths, sfc_export_ts, tmp_path / "a.parquet", OPTS))
    cpu = read_rows_of(classify(paths, sfc_export_ts, tmp_path / "b.parquet", replace(OPTS, device="cpu")))
    assert [(r["top1"], r["top1_prob"], r["peak_frames"]) for r in cpu] == [
        (r["top1"], r["top1_prob"], r["peak_frames"]) for r in default]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_classify_on_cuda_in_batches_matches_the_cpu(sfc_export_ts: Path, videos: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from dataclasses import replace

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 on the GPU too
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    paths = resolve_inputs(videos)
    cpu = read_rows_of(classify(paths, sfc_export_ts, tmp_path / "cpu.parquet", OPTS))
    gpu = read_rows_of(classify(paths, sfc_export_ts, tmp_path / "gpu.parquet", replace(OPTS, device="cuda:0", batch=4)))
    for a, b in zip(gpu, cpu):
        assert a["path"] == b["path"] and bool(a["error"]) == bool(b["error"]) and a["top1"] == b["top1"]
        assert [c["prob"] for c in a["topk"]] == pytest.approx([c["prob"] for c in b["topk"]], abs=1e-4)
