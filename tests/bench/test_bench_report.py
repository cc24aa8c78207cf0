"""The bench report contract on the tiny model: keys, ratios consistent with the raw timings and
memory readings, the fresh-worker memory measurement, and the renderings. No timing is asserted."""

from __future__ import annotations

import json
import math
import os

import pytest

from sfc_deploy.bench.report import BUDGET_MB, latency_stats, to_markdown, write_json
from sfc_deploy.bench.suite import BenchOptions, run_bench
from sfc_deploy.bench.worker import WorkerJob, run_in_fresh_process
from sfc_deploy.errors import ArtifactError, ConfigError


@pytest.fixture(scope="module")
def report(tiny_export):
    opts = BenchOptions(export_dir=tiny_export, runtime="pytorch", threads=1, videos=2, warmup=1, repeats=1,
                        batch_sizes=(30, 10), head_chunk=4, lengths=(64,), peak_seconds=0.1)
    events = []
    rep = run_bench(opts, lambda kind, data: events.append((kind, data)))
    rep["_events"] = events
    return rep


def test_report_has_the_contract_keys(report):
    for key in ("speedup", "memory_ratio", "machine", "runtime", "precision", "libraries", "threads", "matmul_peak_gflops"):
        assert key in report, key
    for strategy in ("sfc", "dense"):
        for key in ("videos_per_s", "peak_mem_mb", "gmacs", "params_m", "latency_ms", "videos_per_16gb", "peak_fraction"):
            assert key in report[strategy], f"{strategy}.{key}"
        assert set(report[strategy]["latency_ms"]) >= {"p50", "p90", "p99"}
    assert report["runtime"] == "pytorch" and report["precision"] == "fp32"
    assert {"torch", "python"} <= set(report["libraries"])
    assert report["machine"]["cpu"]
    json.dumps({k: v for k, v in report.items() if k != "_events"})  # JSON-ready


def test_ratios_follow_from_the_raw_measurements(report):
    sfc, dense = report["sfc"], report["dense"]
    for row in (sfc, dense):
        lat = row["latencies_s"]
        assert len(lat) == 2  # videos x repeats
        assert row["videos_per_s"] == pytest.approx(len(lat) / sum(lat))
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p90"] <= row["latency_ms"]["p99"]
        assert row["latency_ms"]["p99"] == pytest.approx(1e3 * max(lat), rel=0.05)
        assert row["achieved_gflops"] == pytest.approx(2 * row["gmacs"] * row["videos_per_s"])
        assert row["peak_fraction"] == pytest.approx(row["achieved_gflops"] / report["matmul_peak_gflops"])
        assert row["video_mem_mb"] == pytest.approx(max(row["peak_mem_mb"] - row["base_mem_mb"], 0.0))
        assert row["videos_per_16gb"] == math.floor((BUDGET_MB - row["base_mem_mb"]) / max(row["video_mem_mb"], 1e-6))
    assert report["speedup"] == pytest.approx(sfc["videos_per_s"] / dense["videos_per_s"])
    assert report["memory_ratio"] == pytest.approx(dense["video_mem_mb"] / max(sfc["video_mem_mb"], 1e-6))
    assert report["peak_rss_ratio"] == pytest.approx(dense["peak_mem_mb"] / sfc["peak_mem_mb"])
    assert report["gmacs_ratio"] == pytest.approx(dense["gmacs"] / sfc["gmacs"])
    assert dense["gmacs"] > sfc["gmacs"] > 0  # 30 crops cost more than one pass, even on the tiny model
    assert dense["batch_size"] in (30, 10) and set(dense["batch_trials_s"]) == {"30", "10"}
    assert dense["batch_size"] == int(min(dense["batch_trials_s"], key=dense["batch_trials_s"].get))
    for name, t in report["targets"].items():
        assert t["met"] == (t["value"] >= t["target"]), name


def test_memory_against_length_and_progress_events(report):
    rows = report["memory_vs_length"]
    # the TorchScript-only export has a static-time SFC graph, so the sweep stays at its length here
    assert [r["raw_frames"] for r in rows] == [64]
    assert [r["frames"] for r in rows] == [8]
    for r in rows:
        assert r["sfc_streamed_peak_mb"] > 0 and r["sfc_whole_peak_mb"] > 0 and r["dense_peak_mb"] > 0
    videos = [d for k, d in report["_events"] if k == "event" and d.get("event") == "video"]
    # dense: memory video + 2 batch trials + 2 timed; SFC: memory video + 2 timed; sweep: 2 memory videos
    assert len(videos) == 5 + 3 + 2


def test_markdown_and_json_and_plot(report, tmp_path):
    from sfc_deploy.bench.plot import write_plot

    rep = {k: v for k, v in report.items() if k != "_events"}
    md = to_markdown(rep)
    assert "| dense 30-crop |" in md and "| SFC tau=2 |" in md and "pytorch" in md
    assert f"{rep['speedup']:.2f}x" in md
    write_json(rep, tmp_path / "out" / "bench.json")
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["speedup"] == pytest.approx(rep["speedup"])
    png = write_plot(rep, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left behind


def test_each_strategy_gets_its_own_fresh_process(report):
    """Peak RSS is a per-process high-water mark, so each strategy must run in a process of its own."""
    sfc, dense = report["sfc"], report["dense"]
    assert len({sfc["pid"], dense["pid"], report["matmul"]["pid"], os.getpid()}) == 4
    for r in (sfc, dense):
        assert r["peak_mem_mb"] >= r["base_mem_mb"] > 50  # a real interpreter with torch loaded
    assert report["protocol"]["worker_allocator_env"] == {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    # ... for the memory video; the timed passes after it run with a serving process's glibc thresholds
    assert report["protocol"]["worker_timing_allocator"] == {"mmap_threshold": 32 << 20, "trim_threshold": 64 << 20}


def test_memory_only_worker_stops_after_the_memory_video(tiny_export):
    r = run_in_fresh_process(WorkerJob(strategy="sfc", runtime="pytorch", export_dir=str(tiny_export), threads=1,
                                       memory_only=True, head_chunk=2))
    assert r["peak_rss_mb"] >= r["base_rss_mb"] and "latencies_s" not in r and r["pid"] != os.getpid()


def test_latency_stats_percentiles():
    s = latency_stats([0.4, 0.1, 0.3, 0.2])  # unsorted on purpose
    # linear interpolation over the sorted 100, 200, 300, 400 ms: rank q/100 * 3
    assert s["n"] == 4 and s["mean"] == pytest.approx(250.0)
    assert (s["p50"], s["p90"], s["p99"]) == (pytest.approx(250.0), pytest.approx(370.0), pytest.approx(397.0))


def test_worker_errors_come_back_typed(tmp_path):
    with pytest.raises(ArtifactError, match="manifest.json"):
        run_in_fresh_process(WorkerJob(strategy="sfc", runtime="pytorch", export_dir=str(tmp_path), threads=1))
    with pytest.raises(ConfigError, match="unknown strategy"):
        run_in_fresh_process(WorkerJob(strategy="both", export_dir=str(tmp_path)))
