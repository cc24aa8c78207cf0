"""What machine a benchmark ran on, and how fast it can multiply matrices.

A throughput number means little without the machine it came from, so every report carries the
CPU model, core counts, memory and library versions. The matrix-multiply peak is measured in the
same run, on the same thread count, so "achieved GFLOP/s as a fraction of peak" compares the model
with what this machine can actually do now (other load included), not with a datasheet figure.
"""

from __future__ import annotations

import time

from sfc_deploy.common.environment import cpu_model, machine_info, usable_cores  # noqa: F401 - re-exported


def default_threads() -> int:
    """Physical cores usable by this process: the thread count both strategies get by default."""
    import psutil

    usable = usable_cores()
    return max(1, min(usable, psutil.cpu_count(logical=False) or usable))


def matmul_peak_gflops(*, threads: int, precision: str = "fp32", size: int = 2048, seconds: float = 2.0,
                       device: str = "cpu") -> dict:
    """Best sustained GFLOP/s of one square matrix multiply on ``threads`` threads.

    The best of several timed repetitions is kept: the peak is what the hardware can do, and
    interference from other processes only ever makes a repetition slower.

    Args:
        threads: intra-op threads, the same number the model runs on.
        precision: fp32 or fp16 (the model's precision).
        size: matrix side; 2048 is large enough to reach the BLAS kernel's plateau on a CPU.
        seconds: time budget for the repetitions (at least three are run).
        device: "cpu" or "cuda:N"; on CUDA see :func:`cuda_matmul_peak_gflops`.
    """
    if device.startswith("cuda"):
        return cuda_matmul_peak_gflops(device=device, precision=precision, seconds=seconds)
    import torch

    from sfc_deploy.common.precision import torch_dtype

    torch.set_num_threads(threads)
    dtype = torch_dtype(precision)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: page in, pick the kernel
    flops = 2.0 * size**3
    best, reps = _best_time(lambda: torch.mm(a, b), seconds)
    result = {"gflops": flops / best / 1e9, "size": size, "threads": threads, "precision": precision, "repeats": reps,
              "seconds": seconds,
              "library": f"torch {torch.__version__} ({_blas_name()})", "by_library": {}}
    result["by_library"]["torch"] = result["gflops"]
    ort_gflops = _onnxruntime_matmul_gflops(a.numpy(), b.numpy(), threads=threads, seconds=seconds) if precision == "fp32" else None
    if ort_gflops is not None:
        result["by_library"]["onnxruntime"] = ort_gflops
        if ort_gflops > result["gflops"]:  # the peak is the best this machine's libraries reach
            result["gflops"], result["library"] = ort_gflops, f"onnxruntime MLAS {_ort_version()}"
    return result


def cuda_matmul_peak_gflops(*, device: str, precision: str = "fp16", size: int = 8192, seconds: float = 2.0,
                            per_event: int = 10) -> dict:
    """Best sustained GFLOP/s of a square ``size`` matmul on a CUDA device, timed with CUDA events.

    Groups of ``per_event`` back-to-back multiplies are bracketed by two events (one launch gap is
    then negligible); the fastest group over ``seconds`` (at least three) is the peak. The dtype is
    the model's precision (fp16/bf16: tensor cores; fp32 with torch's default, TF32 off for matmul).
    """
    import torch

    from sfc_deploy.common.precision import torch_dtype

    dev = torch.device(device)
    dtype = torch_dtype(precision)
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(size, size, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=dev, dtype=dtype, generator=gen)
    out = torch.empty(size, size, device=dev, dtype=dtype)
    for _ in range(3):  # warm-up: cuBLAS handle, workspace, clocks
        torch.mm(a, b, out=out)
    torch.cuda.synchronize(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best, reps, t_start = float("inf"), 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t_start < seconds:
        start.record()
        for _ in range(per_event):
            torch.mm(a, b, out=out)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / per_event)
        reps += 1
    gflops = 2.0 * size**3 / best / 1e9
    return {"gflops": gflops, "size": size, "threads": None, "precision": precision, "repeats": reps * per_event,
            "seconds": seconds,
            "library": f"torch {torch.__version__} (cuBLAS, CUDA {torch.version.cuda})", "by_library": {"torch": gflops},
            "device": str(dev), "gpu": torch.cuda.get_device_name(dev), "timer": "cuda events"}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _onnxruntime_matmul_gflops(a, b, *, threads: int, seconds: float) -> float | None:
    """The same multiply through ONNX Runtime's MLAS GEMM, which has its own (AVX-512) kernels.

    BLAS libraries can pick a slower code path on virtual CPUs with generic model names; taking
    the best of both keeps "fraction of peak" from exceeding 100% for no physical reason.
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    n = a.shape[0]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"a": a, "b": b}
    session.run(None, feed)
    best, _ = _best_time(lambda: session.run(None, feed), seconds)
    return 2.0 * n**3 / best / 1e9


def _best_time(fn, seconds: float) -> tuple[float, int]:
    """Fastest of repeated ``fn()`` calls over ``seconds`` (at least three), and how many ran."""
    best, reps, start = float("inf"), 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best, reps


def _blas_name() -> str:
    import torch

    config = torch.__config__.show()
    for name in ("MKL", "OpenBLAS", "BLIS", "Accelerate"):
        if f"BLAS_INFO={name.lower()}" in config.replace(" ", "").lower() or f"USE_{name.upper()}=ON" in config:
            return name
    return "BLAS"
