"""Bench on real files: decode seconds apart from the model's, then the same videos end to end through
the prefetcher, for both strategies (in this process: the worker's protocol without the fresh interpreter).

Relations between the recorded numbers are checked, never timings against each other."""

from __future__ import annotations

import math

import pytest

from sfc_deploy.bench.report import end_to_end
from sfc_deploy.bench.worker import INPUT_FILES, WorkerJob, run_job
from sfc_deploy.errors import VideoError

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


@pytest.mark.parametrize("strategy", ["sfc", "dense"])
def test_files_report_decode_model_and_end_to_end(tiny_export, make_video, strategy: str) -> None:
    files = [str(make_video("a.mp4", frames=64, size=(48, 64))), str(make_video("b.mp4", frames=70, size=(48, 64)))]
    events = []
    job = WorkerJob(strategy=strategy, export_dir=str(tiny_export), runtime="torchscript", video_files=files,
                    videos=2, repeats=1, batch_sizes=[30], workers=1, prefetch=1)
    run = run_job(job, events.append)
    assert run["input"] == INPUT_FILES
    assert len(run["decode_s"]) == len(run["latencies_s"]) == 2 and min(run["decode_s"]) > 0
    e2e = run["e2e"]
    assert (e2e["videos"], e2e["workers"], e2e["prefetch"], e2e["kind"]) == (2, 1, 1, "thread")
    for key in ("decode_s", "model_s", "wait_s", "cycle_s"):  # the lead video is not among the timed ones
        assert len(e2e[key]) == 2 and min(e2e[key]) >= 0
    assert min(e2e["decode_s"]) > 0 and min(e2e["model_s"]) > 0
    assert e2e["videos_per_s"] == pytest.approx(2 / e2e["wall_s"])
    assert e2e["wall_s"] == pytest.approx(sum(e2e["cycle_s"])) and len(e2e["cycle_s"]) == 2
    assert min(c - m for c, m in zip(e2e["cycle_s"], e2e["model_s"])) >= 0  # a cycle holds its model pass
    assert sum(1 for e in events if e.get("kind") == "e2e") == 2

    model_vps = len(run["latencies_s"]) / sum(run["latencies_s"])
    row = end_to_end(run, model_vps)
    assert row["decode_s_per_video"] == pytest.approx(sum(run["decode_s"]) / 2)
    assert row["model_s_per_video"] == pytest.approx(1 / model_vps)
    assert 0 < row["decode_share"] < 1
    assert row["serial_videos_per_s"] < model_vps  # decoding costs something when it is not overlapped
    assert row["overlap_efficiency"] == pytest.approx(e2e["videos_per_s"] / model_vps)
    assert math.isfinite(row["overlap_efficiency"]) and row["overlap_efficiency"] > 0


def test_a_file_that_does_not_decode_ends_the_bench_naming_it(tiny_export, make_video, tmp_path) -> None:
    good = make_video("a.mp4", frames=64, size=(48, 64))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    job = WorkerJob(strategy="sfc", export_dir=str(tiny_export), runtime="torchscript",
                    video_files=[str(good), str(bad)], videos=2, workers=1, prefetch=1)
    with pytest.raises(VideoError, match="bad.mp4"):
        run_job(job)
