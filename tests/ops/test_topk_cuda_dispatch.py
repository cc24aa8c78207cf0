"""``torch.ops.sfc.topk_temporal_pool`` on CUDA tensors: the project's kernel where its library is
built, aten otherwise (sfc_deploy.ops.cuda_dispatch).

On every machine: the CPU path is unchanged, import registers nothing without a library and never
touches CUDA, and the choice is reported ("aten" here, with the reason). ``gpu`` tests build the
kernel (or use $SFC_TOPK_KERNEL_LIB / build/csrc) and check the op on CUDA against the NumPy
reference bit for bit (float32, float16, ties), its gradient against the aten path, bfloat16's
fall-back to aten, and a capture in a CUDA graph.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfc_deploy.errors import BackendUnavailableError
from sfc_deploy.ops import (
    cuda_dispatch,
    cuda_implementation,
    cuda_implementation_record,
    topk_temporal_pool_aten,
    topk_temporal_pool_reference,
    use_aten,
    use_cuda_kernel,
)

REPO = Path(__file__).resolve().parents[2]


def _op(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.ops.sfc.topk_temporal_pool(x, k)


@pytest.fixture
def restore_dispatch():
    """Tests that switch the implementation put the import-time choice back."""
    yield
    cuda_dispatch._reset_for_tests()


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (import-time behaviour), with extra environment."""
    full = {k: v for k, v in os.environ.items() if k not in ("SFC_TOPK_CUDA", "SFC_TOPK_KERNEL_LIB")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=full,
                          check=False, timeout=120)


# --- every machine ------------------------------------------------------------------------------


def test_cpu_path_is_the_aten_one_and_matches_the_reference() -> None:
    tied = torch.randint(0, 3, (2, 3, 12, 2, 3)).float()
    got = _op(tied, 5)
    np.testing.assert_array_equal(got.numpy(), topk_temporal_pool_reference(tied.numpy(), 5))
    torch.testing.assert_close(got, topk_temporal_pool_aten(tied, 5), rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where no GPU is visible")
def test_without_gpu_the_choice_is_aten_and_says_why(restore_dispatch, tmp_path: Path) -> None:
    assert use_cuda_kernel() == "aten"  # never raises by default
    record = cuda_implementation_record()
    assert record["impl"] == "aten" and record["library"] is None
    assert "no CUDA device" in record["reason"]
    assert cuda_implementation() == "aten"
    with pytest.raises(BackendUnavailableError, match="required .* no CUDA device"):
        use_cuda_kernel(tmp_path / "libnothing.so", required=True)
    x = torch.randn(1, 2, 6, 2, 2)
    np.testing.assert_array_equal(_op(x, 3).numpy(), topk_temporal_pool_reference(x.numpy(), 3))


def test_the_record_of_a_dtype_the_kernel_does_not_take_is_aten(restore_dispatch) -> None:
    """bf16 (and float64) CUDA tensors run aten whatever was chosen: the record for that dtype says so,
    for float32/float16 it is the choice's."""
    for dtype in (torch.bfloat16, torch.float64):
        record = cuda_implementation_record(dtype)
        assert record["impl"] == "aten" and record["library"] is None
        assert record["reason"] == f"the CUDA kernel takes float32 and float16, not {str(dtype)[6:]}"
    assert cuda_implementation_record(torch.float16) == cuda_implementation_record(torch.float32) == cuda_implementation_record()


def test_use_aten_reports_aten(restore_dispatch) -> None:
    assert use_aten() == "aten"
    assert cuda_implementation() == "aten"
    assert cuda_implementation_record()["impl"] == "aten"


def test_import_registers_nothing_without_a_library_and_never_initialises_cuda(tmp_path: Path) -> None:
    code = ("import torch, sfc_deploy.ops as o; from sfc_deploy.ops import cuda_dispatch as d; "
            "print(d._state.registered, o.cuda_implementation_record()['impl'], torch.cuda.is_initialized())")
    proc = _python(code, SFC_TOPK_KERNEL_LIB=str(tmp_path / "missing.so"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "aten", "False"]


def test_import_with_a_library_file_registers_without_loading_it(tmp_path: Path) -> None:
    """Import only looks for the file: a file that is not a library at all does not fail the import
    (nor is it loaded); it is loaded when CUDA work asks, and here (no GPU) the answer is aten."""
    fake = tmp_path / "libsfc_topk_kernel.so"
    fake.write_bytes(b"not a shared library")
    code = ("import torch, sfc_deploy.ops as o; from sfc_deploy.ops import cuda_dispatch as d, cuda_kernel as k; "
            "print(d._state.registered, len(k._libraries), torch.cuda.is_initialized())")
    proc = _python(code, SFC_TOPK_KERNEL_LIB=str(fake))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "0", "False"]


def test_env_aten_never_registers_and_a_bad_value_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "libsfc_topk_kernel.so"
    fake.write_bytes(b"x")
    code = "from sfc_deploy.ops import cuda_dispatch as d; print(d._state.registered, d.cuda_implementation())"
    proc = _python(code, SFC_TOPK_KERNEL_LIB=str(fake), SFC_TOPK_CUDA="aten")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "aten"]
    proc = _python("import sfc_deploy.ops", SFC_TOPK_CUDA="fast")
    assert proc.returncode != 0
    assert "SFC_TOPK_CUDA='fast'; expected one of auto, kernel, aten" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU failure of a required kernel")
def test_env_kernel_without_gpu_fails_when_asked_not_at_import() -> None:
    code = ("import sfc_deploy.ops as o\n"
            "try:\n    o.cuda_implementation()\nexcept Exception as e:\n    print(type(e).__name__)")
    proc = _python(code, SFC_TOPK_CUDA="kernel")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "BackendUnavailableError"


# --- GPU ----------------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")


@pytest.fixture(scope="module")
def kernel_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    from sfc_deploy.ops.cuda_kernel import build_kernel, default_library_path

    existing = default_library_path()
    if existing.is_file():
        return existing
    if shutil.which("nvcc") is None or shutil.which("cmake") is None:
        pytest.skip(f"no {existing} and no nvcc/cmake to build it")
    return build_kernel(tmp_path_factory.mktemp("topk_dispatch_build"))


@pytest.fixture
def kernel(kernel_library: Path, restore_dispatch) -> Path:
    assert use_cuda_kernel(kernel_library, required=True) == "kernel"
    assert cuda_implementation() == "kernel"
    assert cuda_implementation_record()["library"] == str(kernel_library.resolve())
    return kernel_library


@pytest.fixture
def kernel_calls(monkeypatch) -> list[torch.dtype]:
    """The dtypes that reached the kernel entry point (a spy that still runs the real kernel)."""
    seen: list[torch.dtype] = []
    real = cuda_dispatch.topk_temporal_pool_cuda

    def spy(x, k, **kw):
        seen.append(x.dtype)
        return real(x, k, **kw)

    monkeypatch.setattr(cuda_dispatch, "topk_temporal_pool_cuda", spy)
    return seen


def _data(kind: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        x = torch.randn(shape, generator=gen)
    else:  # three levels: most columns are full of ties
        x = torch.randint(-1, 2, shape, generator=gen).float()
    return x.to(dtype)


CASES = [((2, 3, 36, 4, 5), 18), ((1, 2, 7, 3, 1), 7), ((2, 4, 16, 7, 7), 1)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", ["random", "tied"])
@pytest.mark.parametrize("shape,k", CASES, ids=[f"T{s[2]}k{k}" for s, k in CASES])
def test_op_on_cuda_runs_the_kernel_and_equals_the_reference(kernel, kernel_calls, shape, k, kind, dtype) -> None:
    x = _data(kind, shape, dtype, seed=shape[2] * 100 + k)
    got = _op(x.cuda(), k).cpu()
    assert kernel_calls == [dtype]
    want = topk_temporal_pool_reference(x.numpy(), k)
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.gpu
@needs_gpu
def test_non_contiguous_input_and_bf16_falls_back_to_aten(kernel, kernel_calls) -> None:
    base = torch.randn(2, 3, 5, 4, 12, device="cuda")
    x = base.permute(0, 1, 4, 2, 3)  # (2, 3, 12, 5, 4), not contiguous
    np.testing.assert_array_equal(_op(x, 4).cpu().numpy(), topk_temporal_pool_reference(x.cpu().numpy(), 4))
    xb = x.to(torch.bfloat16)
    got = _op(xb, 4)
    assert kernel_calls == [torch.float32]  # bf16 did not reach the kernel
    torch.testing.assert_close(got, topk_temporal_pool_aten(xb, 4), rtol=0, atol=0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_gradient_through_the_kernel_equals_the_aten_path(kernel, kernel_calls, dtype) -> None:
    x = _data("tied", (2, 3, 12, 3, 3), dtype, seed=7).cuda()
    grad = torch.randn(2, 3, 5, 3, 3, device="cuda", dtype=dtype)
    xk = x.clone().requires_grad_(True)
    _op(xk, 5).backward(grad)
    assert kernel_calls == [dtype]
    use_aten()
    xa = x.clone().requires_grad_(True)
    _op(xa, 5).backward(grad)
    assert kernel_calls == [dtype]  # the second forward was aten's
    torch.testing.assert_close(xk.grad, xa.grad, rtol=0, atol=0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_kernel_is_captured_in_a_cuda_graph(kernel, kernel_calls, dtype) -> None:
    """Warm up on a side stream, capture, then replay on new data: the kernel ran inside the graph
    (the replay's output follows the new input) without syncing with the host."""
    static_x = _data("random", (2, 4, 16, 5, 5), dtype, seed=1).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            _op(static_x, 8)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = _op(static_x, 8)
    assert kernel_calls == [dtype] * 3
    for seed in (2, 3):
        fresh = _data("tied", tuple(static_x.shape), dtype, seed=seed)
        static_x.copy_(fresh.cuda())
        graph.replay()
        torch.cuda.synchronize()
        np.testing.assert_array_equal(static_y.cpu().numpy(), topk_temporal_pool_reference(fresh.numpy(), 8))
    assert kernel_calls == [dtype] * 3  # replays run the captured kernel, not Python


@pytest.mark.gpu
@needs_gpu
def test_sfc_model_on_cuda_uses_the_kernel_and_matches_aten(kernel, kernel_calls) -> None:
    """An SFC model's forward on CUDA goes through the op (the kernel), equal to the aten path."""
    from sfc_deploy.models import create_model, get_config

    torch.manual_seed(0)
    model = create_model(get_config("slow8x8_tiny", num_classes=5), tau=2.0).eval().cuda().half()
    x = torch.randn(2, 3, 8, 32, 32, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        got = model(x)
    assert kernel_calls  # the SFC's TopK went to the kernel
    use_aten()
    with torch.inference_mode():
        want = model(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
