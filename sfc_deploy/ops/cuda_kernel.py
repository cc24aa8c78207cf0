"""The TopKTemporalPool CUDA kernel (``csrc/topk_kernel``) called from PyTorch through ctypes.

The kernel is the one the TensorRT plugin enqueues, so running it here checks the plugin's
arithmetic on machines that have a GPU but no TensorRT. It is a plain shared library with a C
entry point rather than a torch extension: no build at import time, no dependency on the torch
C++ ABI, and the same ``.so`` serves ctypes, the plugin and the C++ runner.

Everything is lazy: importing this module never touches CUDA or the library. Missing pieces
raise :class:`~sfc_deploy.errors.BackendUnavailableError` with a one-line reason.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError

LIBRARY_ENV = "SFC_TOPK_KERNEL_LIB"
LIBRARY_NAME = "libsfc_topk_kernel.so"
REPO_ROOT = Path(__file__).resolve().parents[2]
CSRC_DIR = REPO_ROOT / "csrc"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "csrc"

# Mirrors SFC_TOPK_DTYPE_* in csrc/topk_kernel/topk_temporal_pool.h.
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1}
# cudaError_t values that mean "this machine cannot run the library", not "the call was wrong".
_UNAVAILABLE_CODES = {
    35: "the NVIDIA driver is older than the CUDA runtime the library was built with",
    100: "no CUDA device is visible",
    209: "the library has no kernel image for this GPU (rebuild with its CUDA architecture)",
    222: "the driver cannot JIT the library's PTX (driver older than the build's CUDA toolkit)",
}

_lock = threading.Lock()
_libraries: dict[Path, ctypes.CDLL] = {}


def default_library_path() -> Path:
    """``$SFC_TOPK_KERNEL_LIB`` if set, else where :func:`build_kernel` puts the library."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_BUILD_DIR / "topk_kernel" / LIBRARY_NAME


def load_library(path: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """Load (once per path) the kernel library and declare its C signatures.

    Raises:
        BackendUnavailableError: the file is missing or cannot be loaded.
    """
    lib_path = Path(path).expanduser() if path is not None else default_library_path()
    lib_path = lib_path.resolve()
    with _lock:
        if lib_path in _libraries:
            return _libraries[lib_path]
        if not lib_path.is_file():
            raise BackendUnavailableError(
                f"TopK CUDA kernel library not found at {lib_path}; build it with "
                f"`cmake -S csrc -B build/csrc && cmake --build build/csrc` (or "
                f"sfc_deploy.ops.cuda_kernel.build_kernel()), or set {LIBRARY_ENV}"
            )
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError as exc:
            raise BackendUnavailableError(f"cannot load {lib_path}: {exc}") from exc
        lib.sfc_topk_temporal_pool_launch.restype = ctypes.c_int
        lib.sfc_topk_temporal_pool_launch.argtypes = [
            ctypes.c_void_p,  # x
            ctypes.c_void_p,  # y
            ctypes.c_int,  # dtype
            ctypes.c_int64,  # n
            ctypes.c_int64,  # c
            ctypes.c_int64,  # t
            ctypes.c_int64,  # hw
            ctypes.c_int64,  # k
            ctypes.c_void_p,  # stream
        ]
        lib.sfc_topk_error_string.restype = ctypes.c_char_p
        lib.sfc_topk_error_string.argtypes = [ctypes.c_int]
        _libraries[lib_path] = lib
        return lib


def _check_input(x: torch.Tensor, k: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ConfigError(
            f"expected a 5-D (N, C, T, H, W) tensor, got shape {tuple(x.shape)}"
        )
    if x.dtype not in _DTYPE_CODES:
        raise ConfigError(
            f"the CUDA kernel supports float32 and float16, got {x.dtype}; cast with .float()"
        )
    t = x.shape[2]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= t:
        raise ConfigError(f"k must be an int in [1, T={t}], got {k!r}")


def topk_temporal_pool_cuda(
    x: torch.Tensor,
    k: int,
    *,
    out: torch.Tensor | None = None,
    stream: int | None = None,
    library: str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """TopKTemporalPool of a CUDA tensor by the project's CUDA kernel.

    Args:
        x: (N, C, T, H, W) float32 or float16 tensor on a CUDA device (made contiguous here).
        k: how many time steps to keep, 1 <= k <= T.
        out: optional contiguous (N, C, k, H, W) output of x's dtype and device.
        stream: raw ``cudaStream_t`` to launch on; default torch's current stream of x's
            device, so the call orders correctly with surrounding torch work.
        library: path of ``libsfc_topk_kernel.so``; default :func:`default_library_path`.

    Returns:
        (N, C, k, H, W): the k largest values of each (n, c, h, w) along T, in time order.

    Raises:
        BackendUnavailableError: no CUDA device, no library, or a library this GPU/driver
            cannot run.
        ConfigError: a wrong shape, dtype, device or k.
    """
    _check_input(x, k)
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'})"
        )
    if not x.is_cuda:
        raise ConfigError(f"expected a CUDA tensor, got one on {x.device}; move it with .cuda()")
    lib = load_library(library)
    x = x.contiguous()
    n, c, t, h, w = x.shape
    shape = (n, c, k, h, w)
    if out is None:
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
    elif tuple(out.shape) != shape or out.dtype != x.dtype or out.device != x.device:
        raise ConfigError(
            f"out must be {shape} {x.dtype} on {x.device}, got {tuple(out.shape)} "
            f"{out.dtype} on {out.device}"
        )
    elif not out.is_contiguous():
        raise ConfigError("out must be contiguous")
    with torch.cuda.device(x.device):
        if stream is None:
            stream = torch.cuda.current_stream(x.device).cuda_stream
        code = lib.sfc_topk_temporal_pool_launch(
            x.data_ptr(), out.data_ptr(), _DTYPE_CODES[x.dtype], n, c, t, h * w, k, stream
        )
    if code != 0:
        message = lib.sfc_topk_error_string(code).decode(errors="replace")
        if code in _UNAVAILABLE_CODES:
            raise BackendUnavailableError(
                f"TopK CUDA kernel cannot run: {_UNAVAILABLE_CODES[code]} "
                f"(cudaError {code}: {message})"
            )
        raise RuntimeError(f"TopK CUDA kernel launch failed: cudaError {code}: {message}")
    return out


def _default_cuda_arch() -> str:
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return f"{major}{minor}"
    return "80"  # SASS for sm_80 plus PTX that newer GPUs JIT


def build_kernel(
    build_dir: str | os.PathLike[str] | None = None,
    *,
    cuda_arch: str | None = None,
    tensorrt_root: str | os.PathLike[str] | None = None,
    build_type: str = "Release",
    jobs: int | None = None,
) -> Path:
    """Configure and build ``csrc/`` with CMake; return the path of ``libsfc_topk_kernel.so``.

    Args:
        build_dir: CMake binary dir; default ``build/csrc`` (where :func:`load_library` looks).
        cuda_arch: ``CMAKE_CUDA_ARCHITECTURES``; default this GPU's capability, else ``80``.
        tensorrt_root: also build the TensorRT plugin against this install.
        build_type: CMake build type.
        jobs: parallel build jobs; default the CPU count.

    Raises:
        BackendUnavailableError: no cmake, no CUDA compiler, or the build failed (the last
            lines of its log are in the message).
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BackendUnavailableError("cmake is not on PATH; install cmake >= 3.18")
    out_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    configure = [
        cmake,
        "-S",
        str(CSRC_DIR),
        "-B",
        str(out_dir),
        f"-DCMAKE_BUILD_TYPE={build_type}",
        f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch or _default_cuda_arch()}",
        "-DSFC_WITH_TORCH_RUNNER=OFF",  # the libtorch C++ runner is not needed for the kernel
    ]
    if tensorrt_root is not None:
        configure.append(f"-DTENSORRT_ROOT={Path(tensorrt_root)}")
    build = [cmake, "--build", str(out_dir), "-j", str(jobs or os.cpu_count() or 1)]
    for step in (configure, build):
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BackendUnavailableError(
                f"`{' '.join(step)}` failed (exit {proc.returncode}):\n{tail}"
            )
    lib_path = out_dir / "topk_kernel" / LIBRARY_NAME
    if not lib_path.is_file():
        raise BackendUnavailableError(
            f"CMake built no {LIBRARY_NAME} in {lib_path.parent}: no CUDA compiler was found "
            "(put nvcc on PATH or pass -DCMAKE_CUDA_COMPILER)"
        )
    return lib_path
