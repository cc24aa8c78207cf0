"""``sfc-deploy bench`` and its workers on a device: what a CPU can check (refusals before any work,
the CPU result contract unchanged apart from ``device``, the batch sweep, the GPU-memory arithmetic),
and ``gpu`` tests that run a tiny bench on CUDA fp16, with and without CUDA graphs."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.bench.gpu import BUDGETS_MB, MIB, gpu_memory_record, videos_per_budget
from sfc_deploy.bench.suite import BenchOptions
from sfc_deploy.bench.worker import WorkerJob, run_in_fresh_process
from sfc_deploy.cli import app
from sfc_deploy.errors import ConfigError
from sfc_deploy.runtime.pipeline import STREAM_SFC_FROM

runner = CliRunner()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a visible CUDA device")

#: the keys a CPU worker returned before devices existed (worker.py, issue 12)
OLD_KEYS = {"strategy", "runtime", "precision", "threads", "input", "frames", "segments", "base_rss_mb", "peak_rss_mb",
            "video_mem_mb", "first_video_s", "head_chunk", "allocator", "ort_arena_shrinkage", "peak_reset_after_load",
            "batch_size", "batch_trials_s", "latencies_s", "peak_rss_end_mb", "top1", "pid"}
#: keys added since, each with its own tests: --fast-decode (issue 15), SFC streaming's threshold
ADDED_KEYS = {"device", "fast_decode", "stream_sfc_from", "ort_cpu_arena", "timing_allocator"}
OLD_MATMUL_KEYS = {"strategy", "gflops", "size", "threads", "precision", "repeats", "library", "by_library", "pid"}


def _one_line_error(res) -> str:
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert res.exit_code != 0, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("runtime", ["pytorch", "onnxruntime"])
def test_device_cuda_without_cuda_fails_before_any_worker(runtime, tiny_export, tmp_path):
    cache = tmp_path / "cache"
    res = runner.invoke(app, ["bench", "--device", "cuda", "--runtime", runtime, "--cache", str(cache),
                              "--json", str(tmp_path / "r.json")])
    line = _one_line_error(res)
    assert "no CUDA device is visible" in line and "--device cpu" in line
    assert not cache.exists() and not (tmp_path / "r.json").exists()  # nothing exported, no worker, no report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cuda-graphs", "--runtime", "pytorch"], "--cuda-graphs captures CUDA graphs, which do not apply on cpu"),
        (["--cuda-graphs", "--runtime", "torchscript"], "--cuda-graphs captures CUDA graphs"),
        (["--sfc-batch", "1,0"], "--sfc-batch values must be >= 1"),
        (["--dense-videos", "two"], "--dense-videos takes comma-separated integers"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--as-trained"], "--as-trained turns off the pytorch runtime's inference rewrite; runtime onnxruntime"),
        (["--as-trained", "--runtime", "aoti"], "drop --as-trained or use --runtime pytorch"),
        (["--precision", "bf16"], "precision bf16 is served by the pytorch runtime only"),
        (["--precision", "bf16", "--runtime", "torchscript"], "use --runtime pytorch or --precision fp16"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
    ],
)
def test_device_options_fail_in_one_line(args, message, tmp_path):
    res = runner.invoke(app, ["bench", "--cache", str(tmp_path / "cache"), *args])
    assert res.exit_code == 2
    assert message in _one_line_error(res)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "cuda:0", "runtime": "torchscript", "cuda_graphs": True}, "pytorch runtime only, not torchscript"),
        ({"device": "cuda:0", "runtime": "onnxruntime"}, "torch's CUDA allocator"),
        ({"device": "cpu", "cuda_graphs": True, "runtime": "pytorch"}, "do not apply on cpu"),
        ({"sfc_batch": (1, 4), "video_files": (__file__,)}, "stack synthetic videos"),
        ({"runtime": "torchscript", "inference_rewrite": False}, "runtime torchscript serves its exported file"),
    ],
)
def test_bench_options_refuse_what_does_not_apply(changes, message):
    """The checks the CLI runs after resolving --device, on a resolved CUDA device name (no GPU needed)."""
    with pytest.raises(ConfigError, match=message):
        BenchOptions(**changes).check()


def test_worker_job_refuses_cuda_graphs_off_pytorch_cuda():
    with pytest.raises(ConfigError, match="pytorch runtime on a CUDA device only"):
        WorkerJob(strategy="sfc", runtime="torchscript", device="cuda:0", cuda_graphs=True).check()
    with pytest.raises(ConfigError, match="pytorch runtime on a CUDA device only"):
        WorkerJob(strategy="sfc", runtime="pytorch", device="cpu", cuda_graphs=True).check()
    with pytest.raises(ConfigError, match="ort_cpu_arena=False is an ONNX Runtime setting"):
        WorkerJob(strategy="sfc", runtime="pytorch", ort_cpu_arena=False).check()


@pytest.mark.slow  # 11 s; the report's contract keys are checked by tests/bench/test_bench_report.py
@pytest.mark.parametrize("strategy", ["sfc", "dense", "matmul"])
def test_cpu_worker_keys_are_the_old_ones_plus_device(strategy, tiny_export):
    job = WorkerJob(strategy=strategy, export_dir=str(tiny_export), runtime="pytorch", threads=1, videos=1,
                    batch_sizes=[30, 10], head_chunk=4 if strategy == "sfc" else None, peak_seconds=0.05, device="cpu")
    result = run_in_fresh_process(job)
    assert set(result) == (OLD_MATMUL_KEYS | {"device", "seconds"} if strategy == "matmul" else OLD_KEYS | ADDED_KEYS)
    assert result["device"] == "cpu"
    if strategy != "matmul":
        assert result["fast_decode"] is False
        assert result["stream_sfc_from"] == (STREAM_SFC_FROM if strategy == "sfc" else None)


@pytest.mark.slow  # 9 s; the CPU side of the GPU batch sweep (benchmarks/gpu/run.sh --dry runs it too)
def test_cpu_batch_sweep_stacks_videos_and_times_the_fastest(tiny_export):
    """The sweep code the GPU runs, on the CPU: every setting measured, the fastest one timed, videos/s
    counting every video of a pass."""
    for strategy in ("sfc", "dense"):
        job = WorkerJob(strategy=strategy, export_dir=str(tiny_export), runtime="pytorch", threads=1, videos=2,
                        batch_sizes=[30], sfc_batch=[1, 3], dense_videos=[1, 2], trial_passes=2)
        result = run_in_fresh_process(job)
        sweep = result["batch_sweep"]
        if strategy == "sfc":
            assert [(r["videos_per_pass"], r["crops_per_forward"]) for r in sweep] == [(1, None), (3, None)]
        else:  # crops of one video per forward, then all the crops of two videos in one forward
            assert [(r["videos_per_pass"], r["crops_per_forward"]) for r in sweep] == [(1, 30), (2, 60)]
        for row in sweep:
            assert len(row["pass_s"]) == 2
            assert row["videos_per_s"] == pytest.approx(row["videos_per_pass"] * 2 / sum(row["pass_s"]))
        top = max(sweep, key=lambda r: r["videos_per_s"])
        assert result["videos_per_pass"] == top["videos_per_pass"]
        assert result["batch_size"] == (top["crops_per_forward"] if strategy == "dense" else top["videos_per_pass"])
        assert len(result["latencies_s"]) == 2 and "gpu_memory" not in result


def test_videos_per_budget_is_the_papers_floor():
    assert videos_per_budget(16 * 1024, 1024, 1000) == math.floor(15 * 1024 / 1000)  # 15
    assert videos_per_budget(16 * 1024, 16 * 1024 + 1, 10) == 0  # the model alone does not fit
    assert videos_per_budget(80 * 1024, 0, 80 * 1024) == 1
    with pytest.raises(ValueError):
        videos_per_budget(16 * 1024, 0, 0)


def test_gpu_memory_record_from_allocator_bytes():
    rec = gpu_memory_record(model_allocated=200 * MIB, model_reserved=256 * MIB, peak_allocated=1224 * MIB,
                            peak_reserved=2048 * MIB, total=80 * 1024 * MIB)
    assert rec["model_allocated_mb"] == 200 and rec["peak_allocated_mb"] == 1224
    assert rec["video_mb"] == 1024 and rec["peak_reserved_mb"] == 2048 and rec["device_total_mb"] == 80 * 1024
    assert rec["videos_per_16gb"] == (BUDGETS_MB["16gb"] - 200) // 1024 == 15
    assert rec["videos_per_80gb"] == (BUDGETS_MB["80gb"] - 200) // 1024 == 79
    flat = gpu_memory_record(model_allocated=10 * MIB, model_reserved=0, peak_allocated=10 * MIB, peak_reserved=0)
    assert flat["video_mb"] == 0 and flat["device_total_mb"] is None  # never negative; huge count, not a crash


# ---------------------------------------------------------------------------------------------
# on a CUDA device


@pytest.fixture(scope="module")
def gpu_reports(tiny_export):
    from sfc_deploy.bench.suite import run_bench

    reports = {}
    for graphs in (False, True):
        opts = BenchOptions(export_dir=tiny_export, runtime="pytorch", precision="fp16", device="cuda:0", threads=1,
                            videos=2, warmup=1, repeats=1, batch_sizes=(30, 10), sfc_batch=(1, 2), dense_videos=(1, 2),
                            head_chunk=None, peak_seconds=0.2, trial_passes=2, cuda_graphs=graphs)
        reports[graphs] = run_bench(opts)
    return reports


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
def test_tiny_bench_on_cuda_fp16(gpu_reports, graphs):
    from sfc_deploy.bench.report import to_markdown

    report = gpu_reports[graphs]
    assert report["device"].startswith("cuda") and report["gpu"]["name"] and report["gpu"]["cuda"]
    assert report["matmul"]["timer"] == "cuda events" and report["matmul_peak_gflops"] > 0
    for name in ("sfc", "dense"):
        row = report[name]
        assert all(math.isfinite(x) and x > 0 for x in row["latencies_s"])
        assert row["gpu_memory"]["peak_allocated_mb"] > 0 and row["gpu_memory"]["model_allocated_mb"] > 0
        assert row["gpu_memory"]["video_mb"] > 0
        assert {r["videos_per_pass"] for r in row["batch_sweep"]} == {1, 2}
        assert row["cuda_graphs"] is graphs
        if graphs:  # graph replay computes what eager PyTorch computes, within fp16's verify tolerance
            assert row["cuda_graph_parity"]["passed"], row["cuda_graph_parity"]
    assert report["dense"]["gpu_memory"]["peak_allocated_mb"] > report["sfc"]["gpu_memory"]["peak_allocated_mb"]
    assert report["gpu_memory_ratio"] == pytest.approx(
        report["dense"]["gpu_memory"]["video_mb"] / report["sfc"]["gpu_memory"]["video_mb"])
    md = to_markdown(report)
    assert report["gpu"]["name"] in md and "videos/80GB" in md and "Batch sweep" in md
    topk = report["sfc"]["topk_cuda"]  # the worker process's own choice (its environment's kernel library, or none)
    assert topk["impl"] in ("kernel", "aten") and f"SFC's TopK op on {topk['impl']}" in md


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("strategy", ["sfc", "dense"])
def test_cuda_graph_logits_equal_eager(tiny_export, strategy):
    """The captured pass against eager on the same fp16 input, with verify's fp16 tolerance."""
    from sfc_deploy.bench.gpu import GraphedPass
    from sfc_deploy.runtime.pipeline import ClipPipeline, load
    from sfc_deploy.verify.tolerances import compare

    dep = load(tiny_export, "pytorch", precision="fp16", device="cuda:0")
    inp = dep.manifest.input
    g = torch.Generator(device="cuda:0").manual_seed(0)
    if strategy == "sfc":
        pipe = dep.sfc_pipeline()
        fn = lambda x: pipe(x)[0]  # noqa: E731
        x = torch.randn(2, 3, inp.frames, *inp.size, generator=g, device="cuda:0", dtype=torch.float16)
    else:
        clip = dep.runner("clip")
        fn = lambda x: ClipPipeline(clip, batch_size=30)(x, 2)  # noqa: E731
        d = inp.dense
        x = torch.randn(60, 3, d.frames, d.crop, d.crop, generator=g, device="cuda:0", dtype=torch.float16)
    eager = fn(x).float().clone()
    graphed = GraphedPass(fn, x)
    other = x.flip(0).contiguous()  # a second input through the same graph: replay, not a stale output
    assert compare(graphed(x).float().clone(), eager, "fp16")["passed"]
    assert compare(graphed(other).float().clone(), fn(other).float(), "fp16")["passed"]
    graphed.release()
    dep.close()


@pytest.mark.slow  # 9 s; the GPU report is also rendered by benchmarks/gpu/run.sh --dry (tests/bench/test_gpu_script.py)
def test_gpu_report_renders_from_worker_results(tiny_export, tmp_path):
    """The GPU report path (ratios, tables, plot) on real CPU worker results given GPU memory records
    built from stated byte counts: the arithmetic and renderings, not a GPU measurement."""
    from sfc_deploy.bench.plot import write_plot
    from sfc_deploy.bench.report import build_report, to_markdown

    opts = BenchOptions(export_dir=tiny_export, runtime="pytorch", device="cuda:0", sfc_batch=(1, 2),
                        dense_videos=(1, 2), batch_sizes=(30,))
    runs = {}
    for strategy, peak in (("sfc", 150), ("dense", 900)):
        run = run_in_fresh_process(WorkerJob(strategy=strategy, export_dir=str(tiny_export), runtime="pytorch",
                                             threads=1, sfc_batch=[1, 2], dense_videos=[1, 2], batch_sizes=[30],
                                             trial_passes=1))
        run["gpu_memory"] = gpu_memory_record(model_allocated=100 * MIB, model_reserved=128 * MIB,
                                              peak_allocated=peak * MIB, peak_reserved=1024 * MIB)
        runs[strategy] = run
    matmul = {"strategy": "matmul", "gflops": 1e5, "gpu_info": {"name": "the GPU", "cuda": "12.8", "driver": "570"}}
    report = build_report(exports={2.0: str(tiny_export)}, matmul=matmul, dense=runs["dense"], sfc_runs={2.0: runs["sfc"]},
                          lengths=[], options=opts, threads=1)
    assert report["gpu_memory_ratio"] == pytest.approx(800 / 50) and report["gpu_peak_ratio"] == pytest.approx(6.0)
    sfc = report["sfc"]
    assert sfc["videos_per_s"] == pytest.approx(sfc["videos_per_pass"] * len(sfc["latencies_s"]) / sum(sfc["latencies_s"]))
    md = to_markdown(report)
    assert "on cuda:0" in md and "GPU the GPU" in md and "driver 570, CUDA 12.8" in md
    assert f"| {(BUDGETS_MB['16gb'] - 100) // 50} | {(BUDGETS_MB['80gb'] - 100) // 50} |" in md  # SFC row
    assert md.count("| dense | ") == 2 and md.count("| SFC | ") == 2  # the sweep table: two settings each
    assert write_plot(report, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_bf16_worker_serves_the_weights_in_bf16(tiny_export):
    """bench --precision bf16 (pytorch runtime): the worker converts the exported weights at load (no
    bf16 file exists) and times them."""
    sfc = run_in_fresh_process(WorkerJob(strategy="sfc", export_dir=str(tiny_export), runtime="pytorch",
                                         precision="bf16", threads=1, videos=1, head_chunk=4))
    assert sfc["precision"] == "bf16" and len(sfc["latencies_s"]) >= 1 and min(sfc["latencies_s"]) > 0


@pytest.mark.gpu
@needs_cuda
def test_tiny_bench_on_cuda_bf16(tiny_export):
    """bench -p bf16 on CUDA: the weights converted at load, the matmul peak measured in bf16."""
    from sfc_deploy.bench.suite import run_bench

    report = run_bench(BenchOptions(export_dir=tiny_export, runtime="pytorch", precision="bf16", device="cuda:0",
                                    threads=1, videos=2, warmup=1, repeats=1, batch_sizes=(30,), head_chunk=None,
                                    peak_seconds=0.2, trial_passes=1))
    assert report["precision"] == "bf16" and report["matmul"]["precision"] == "bf16"
    assert report["sfc"]["topk_cuda"]["impl"] == "aten"  # the kernel takes fp32/fp16: bf16 runs aten, and says so
    for name in ("sfc", "dense"):
        assert all(math.isfinite(x) and x > 0 for x in report[name]["latencies_s"])
