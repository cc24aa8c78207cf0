"""The TopKTemporalPool kernel (csrc/topk_kernel) and TensorRT plugin (csrc/trt_plugin).

What runs where (SPEC.md section 5):
* everywhere with a C++ compiler: the host check (selection code vs a C++ sort oracle) and the
  host twin of the entry point vs the NumPy reference, float32 and float16;
* with nvcc: the kernel compiles, keeps no per-thread stack, and the host check compiles
  under nvcc too (the shared header's __host__ __device__ spelling);
* ``gpu``: the CUDA kernel via ctypes vs the NumPy reference;
* ``tensorrt``: the C++ plugin in a one-layer engine vs the NumPy reference.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.ops import topk_temporal_pool_reference as reference

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
KERNEL_DIR = CSRC / "topk_kernel"
NVCC = shutil.which("nvcc")
CMAKE = shutil.which("cmake")
CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _local_reference(x: np.ndarray, k: int) -> np.ndarray:
    """A second, independently written oracle (vectorised lexsort) that the project's reference
    (a per-column Python sort) must agree with, so a wrong oracle cannot pass every test below."""
    moved = np.moveaxis(x, 2, -1)
    flat = moved.reshape(-1, moved.shape[-1]).astype(np.float64)  # -0.0 == 0.0 after negation
    t = flat.shape[1]
    # lexsort: last key is primary -> value descending, then index ascending.
    order = np.lexsort((np.broadcast_to(np.arange(t), flat.shape), -flat), axis=1)
    kept = np.sort(order[:, :k], axis=1)
    out = np.take_along_axis(moved.reshape(-1, t), kept, axis=1)
    return np.moveaxis(out.reshape(*moved.shape[:-1], k), -1, 2)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())  # stable across processes, unlike hash()


def _data(kind: str, shape: tuple[int, ...], dtype: np.dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal(shape)
    elif kind == "tied":  # three levels: most columns are full of ties
        x = rng.integers(-1, 2, size=shape).astype(np.float64)
    elif kind == "constant":
        x = np.full(shape, 0.5)
    elif kind == "signed_zeros":  # -0.0 and +0.0 must tie (lower index wins)
        x = np.where(rng.integers(0, 2, size=shape) == 1, 0.0, -0.0)
    else:
        raise ValueError(kind)
    return x.astype(dtype)


CASES = [  # (shape, k)
    ((2, 3, 36, 4, 5), 18),  # the paper's T=36, tau=2
    ((1, 2, 36, 3, 3), 9),
    ((1, 1, 1, 2, 2), 1),
    ((2, 2, 7, 3, 1), 7),  # k == T: identity
    ((1, 2, 300, 2, 3), 100),  # longer T
]
KINDS = ["random", "tied", "constant", "signed_zeros"]


# --- the project oracle against an independent one, and against hand-worked columns -----------


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 5, 12])
def test_project_reference_matches_an_independent_oracle(kind: str, k: int, dtype) -> None:
    x = _data(kind, (2, 2, 12, 2, 3), dtype, seed=1)
    want = _local_reference(x, k)
    got = reference(x, k)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want)), "kept the wrong one of tied zeros"


def test_project_reference_on_hand_worked_columns() -> None:
    """Values worked out by hand, so neither oracle can be wrong in the same way as the other."""
    column = np.array([1.0, 5.0, 5.0, 2.0, 5.0, 0.0], np.float32).reshape(1, 1, 6, 1, 1)
    assert reference(column, 2).ravel().tolist() == [5.0, 5.0]  # the 5s at t=1, 2 (ties: lower index)
    assert reference(column, 4).ravel().tolist() == [5.0, 5.0, 2.0, 5.0]  # time order, not value order
    zeros = np.array([-0.0, 0.0, -0.0], np.float32).reshape(1, 1, 3, 1, 1)
    assert np.signbit(reference(zeros, 1)).ravel().tolist() == [True]  # -0.0 == +0.0: t=0 wins
    assert np.signbit(reference(zeros, 2)).ravel().tolist() == [True, False]


# --- host builds: must pass on every machine with a C++ compiler ------------------------------


@pytest.fixture(scope="module")
def host_build(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Build the host check and the host twin library (the shared CMake build, else the compiler)."""
    if CMAKE:
        build = request.getfixturevalue("csrc_build")
        return build("sfc_topk_host_check", "sfc_topk_host") / "topk_kernel"
    out = tmp_path_factory.mktemp("topk_host")
    if not CXX:
        pytest.skip("neither cmake nor a C++ compiler on PATH")
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", f"-I{KERNEL_DIR}"]
    _run([CXX, *flags, str(KERNEL_DIR / "host_check.cpp"), "-o", str(out / "sfc_topk_host_check")])
    _run([CXX, *flags, "-shared", "-fPIC", str(KERNEL_DIR / "topk_temporal_pool_host.cpp"),
          "-o", str(out / "libsfc_topk_host.so")])
    return out


def test_host_check_passes(host_build: Path) -> None:
    proc = _run([str(host_build / "sfc_topk_host_check")])
    assert re.search(r"\d+ cases passed", proc.stdout), proc.stdout


@pytest.fixture(scope="module")
def host_twin(host_build: Path):
    lib = ctypes.CDLL(str(host_build / "libsfc_topk_host.so"))
    fn = lib.sfc_topk_temporal_pool_host
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int] + [ctypes.c_int64] * 5
    return fn


def _host_pool(fn, x: np.ndarray, k: int) -> np.ndarray:
    x = np.ascontiguousarray(x)
    n, c, t, h, w = x.shape
    y = np.full((n, c, k, h, w), np.nan, dtype=x.dtype)
    code = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}[x.dtype]
    rc = fn(x.ctypes.data, y.ctypes.data, code, n, c, t, h * w, k)
    assert rc == 0
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,k", CASES, ids=[f"T{s[2]}k{k}" for s, k in CASES])
def test_host_twin_matches_reference(host_twin, shape, k, kind, dtype) -> None:
    x = _data(kind, shape, dtype, seed=_seed(shape, k, kind))
    got = _host_pool(host_twin, x, k)
    want = reference(x, k)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    assert np.array_equal(np.signbit(got), np.signbit(want)), "kept the wrong one of tied zeros"


def test_host_twin_every_half_value(host_twin) -> None:
    """All 63,490 non-NaN float16 values (subnormals, infinities, both zeros) in one column."""
    bits = np.arange(2**16, dtype=np.uint16).view(np.float16)
    values = bits[~np.isnan(bits)]
    x = np.random.default_rng(0).permutation(values).reshape(1, 1, -1, 1, 1)
    k = x.shape[2] // 3
    np.testing.assert_array_equal(_host_pool(host_twin, x, k), reference(x, k))


def test_host_twin_rejects_bad_arguments(host_twin) -> None:
    x = np.zeros((1, 1, 4, 1, 1), np.float32)
    y = np.zeros((1, 1, 4, 1, 1), np.float32)
    assert host_twin(x.ctypes.data, y.ctypes.data, 0, 1, 1, 4, 1, 5) == 1  # k > T
    assert host_twin(x.ctypes.data, y.ctypes.data, 0, 1, 1, 4, 1, 0) == 1  # k < 1
    assert host_twin(x.ctypes.data, y.ctypes.data, 7, 1, 1, 4, 1, 2) == 1  # unknown dtype


# --- nvcc: compile checks that need no GPU --------------------------------------------------

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")


@needs_nvcc
def test_kernel_compiles_without_stack(tmp_path: Path) -> None:
    """Both instantiations compile for sm_80 with no stack frame: no per-thread storage, any T."""
    proc = _run([NVCC, "-c", "-arch=sm_80", "-O3", "-Xptxas", "-v", "-std=c++17",
                 str(KERNEL_DIR / "topk_temporal_pool.cu"), "-o", str(tmp_path / "k.o")])
    frames = re.findall(r"(\d+) bytes stack frame", proc.stderr)
    assert len(frames) == 2 and all(f == "0" for f in frames), proc.stderr


@needs_nvcc
def test_host_check_under_nvcc(tmp_path: Path) -> None:
    """The shared header compiled as CUDA (SFC_HD = __host__ __device__), run on the host."""
    exe = tmp_path / "host_check_nvcc"
    _run([NVCC, "-x", "cu", "-std=c++17", "-O2", "-Werror", "all-warnings",
          str(KERNEL_DIR / "host_check.cpp"), "-o", str(exe)])
    assert "cases passed" in _run([str(exe)]).stdout


@needs_nvcc
@pytest.mark.skipif(torch.cuda.is_available(), reason="launches on host pointers: only where no GPU can run it")
def test_kernel_library_links_and_reports_no_gpu(csrc_build) -> None:
    """libsfc_topk_kernel.so links (CUDA runtime static), loads through the project's ctypes
    signatures, checks its arguments before CUDA, and on a machine without a usable GPU returns
    a code that cuda_kernel.py maps to BackendUnavailableError rather than crashing."""
    from sfc_deploy.ops.cuda_kernel import _UNAVAILABLE_CODES, load_library

    build = csrc_build("sfc_topk_kernel")
    lib = load_library(build / "topk_kernel" / "libsfc_topk_kernel.so")
    launch = lib.sfc_topk_temporal_pool_launch
    assert launch(None, None, 0, 1, 1, 4, 1, 5, None) == 1  # k > T: cudaErrorInvalidValue
    assert launch(None, None, 3, 1, 1, 4, 1, 2, None) == 1  # unknown dtype
    assert launch(None, None, 0, 0, 1, 4, 1, 2, None) == 0  # empty tensor: nothing to launch
    buf = (ctypes.c_float * 16)()
    code = launch(ctypes.addressof(buf), ctypes.addressof(buf), 0, 1, 1, 4, 4, 2, None)
    assert code in _UNAVAILABLE_CODES, (code, lib.sfc_topk_error_string(code))


# --- CUDA kernel through ctypes (no GPU needed for the argument checks) ----------------------


def test_cuda_entry_rejects_bad_input_before_touching_cuda() -> None:
    from sfc_deploy.ops.cuda_kernel import topk_temporal_pool_cuda

    with pytest.raises(ConfigError, match=r"k must be an int in \[1, T=4\]"):
        topk_temporal_pool_cuda(torch.zeros(1, 1, 4, 1, 1), 5)
    with pytest.raises(ConfigError, match="float32 and float16"):
        topk_temporal_pool_cuda(torch.zeros(1, 1, 4, 1, 1, dtype=torch.float64), 2)
    with pytest.raises(ConfigError, match="5-D"):
        topk_temporal_pool_cuda(torch.zeros(4, 1, 1), 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_entry_without_cuda_says_why() -> None:
    from sfc_deploy.ops.cuda_kernel import topk_temporal_pool_cuda

    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        topk_temporal_pool_cuda(torch.zeros(1, 1, 4, 1, 1), 2)


def test_missing_kernel_library_says_how_to_build(tmp_path: Path) -> None:
    from sfc_deploy.ops.cuda_kernel import load_library

    with pytest.raises(BackendUnavailableError, match="cmake -S csrc"):
        load_library(tmp_path / "libnothing.so")


@pytest.fixture(scope="module")
def cuda_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    from sfc_deploy.ops.cuda_kernel import build_kernel, default_library_path

    existing = default_library_path()
    if existing.is_file():
        return existing
    if NVCC is None or CMAKE is None:
        pytest.skip(f"no {existing} and no nvcc/cmake to build it")
    return build_kernel(tmp_path_factory.mktemp("topk_cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape,k", CASES, ids=[f"T{s[2]}k{k}" for s, k in CASES])
def test_cuda_kernel_matches_reference(cuda_library: Path, shape, k, kind, dtype) -> None:
    from sfc_deploy.ops.cuda_kernel import topk_temporal_pool_cuda

    np_dtype = np.float32 if dtype == torch.float32 else np.float16
    x = _data(kind, shape, np_dtype, seed=_seed(shape, k, kind))
    got = topk_temporal_pool_cuda(torch.from_numpy(x).cuda(), k, library=cuda_library)
    torch.cuda.synchronize()
    got_np = got.cpu().numpy()
    want = reference(x, k)
    np.testing.assert_array_equal(got_np.astype(np.float32), want.astype(np.float32))
    assert np.array_equal(np.signbit(got_np), np.signbit(want))


@pytest.mark.gpu
def test_cuda_kernel_side_stream_and_non_contiguous(cuda_library: Path) -> None:
    from sfc_deploy.ops.cuda_kernel import topk_temporal_pool_cuda

    base = torch.randn(2, 3, 5, 4, 36, device="cuda")
    x = base.permute(0, 1, 4, 2, 3)  # (2, 3, 36, 5, 4), not contiguous
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = topk_temporal_pool_cuda(x, 12, library=cuda_library)
    stream.synchronize()
    np.testing.assert_array_equal(got.cpu().numpy(), reference(x.cpu().numpy(), 12))


# --- TensorRT plugin ------------------------------------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_tensorrt_plugin_one_layer_engine(dtype) -> None:
    trt = pytest.importorskip("tensorrt", reason="TensorRT not installed (`import tensorrt` fails)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    from sfc_deploy.export import tensorrt_plugin as tp

    lib = tp.default_plugin_library_path()
    if not lib.is_file():
        pytest.skip(f"plugin library not built at {lib} (cmake -DTENSORRT_ROOT=...)")
    tp.load_plugin_library(lib)

    shape, k = (1, 4, 36, 3, 5), 18
    x = _data("tied", shape, dtype, seed=3)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    trt_dtype = trt.float32 if dtype == np.float32 else trt.float16
    inp = network.add_input("x", trt_dtype, shape)
    layer = tp.add_topk_temporal_pool(network, inp, k, name="topk")
    out = layer.get_output(0)
    out.name = "y"
    network.mark_output(out)
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    assert plan is not None, "engine build failed"
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    xt = torch.from_numpy(x).cuda()
    yt = torch.empty((1, 4, k, 3, 5), dtype=xt.dtype, device="cuda")
    context.set_tensor_address("x", xt.data_ptr())
    context.set_tensor_address("y", yt.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    np.testing.assert_array_equal(
        yt.cpu().numpy().astype(np.float32), reference(x, k).astype(np.float32)
    )


def test_tensorrt_absent_is_a_typed_error() -> None:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        from sfc_deploy.export.tensorrt_plugin import load_plugin_library

        with pytest.raises(BackendUnavailableError, match="import tensorrt"):
            load_plugin_library()
    else:
        pytest.skip("TensorRT is installed; the absent-TensorRT message is not reachable")
