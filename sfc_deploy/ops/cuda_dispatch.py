"""Which implementation ``torch.ops.sfc.topk_temporal_pool`` runs on CUDA tensors: the project's
CUDA kernel (``csrc/topk_kernel``, through :mod:`sfc_deploy.ops.cuda_kernel`) or the aten one.

The kernel is registered for the op's CUDA dispatch key when its library is found: at import of
:mod:`sfc_deploy.ops` if ``libsfc_topk_kernel.so`` exists where :func:`default_library_path`
looks (``$SFC_TOPK_KERNEL_LIB``, else ``build/csrc``), or later by :func:`use_cuda_kernel`. Import
only looks for the file: it never loads the library, builds anything or touches CUDA, so a CPU
machine (and a process that forks before using CUDA) pays nothing. The library is loaded when a
CUDA tensor first reaches the op or :func:`cuda_implementation` is asked.

``SFC_TOPK_CUDA`` chooses:
  ``auto`` (default)  the kernel where its library loads and a GPU is visible; aten otherwise,
                      with the reason in :func:`cuda_implementation_record` (and a warning once
                      if a library was found but cannot be loaded);
  ``kernel``          the kernel or a :class:`~sfc_deploy.errors.BackendUnavailableError` (a device
                      check that must not quietly measure aten);
  ``aten``            never the kernel.

float32 and float16 go to the kernel; other dtypes (bfloat16, float64) to aten. The backward is
the op's own (aten indices, the same tie rule), whichever forward ran. The kernel launches on
torch's current stream without a host synchronisation, so it can be captured in CUDA graphs.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.ops.cuda_kernel import _DTYPE_CODES, default_library_path, load_library, topk_temporal_pool_cuda
from sfc_deploy.ops.topk_temporal_pool import _check_k, topk_temporal_pool, topk_temporal_pool_aten

IMPL_ENV = "SFC_TOPK_CUDA"
MODES = ("auto", "kernel", "aten")
KERNEL, ATEN = "kernel", "aten"


@dataclass
class _State:
    mode: str = "auto"  # auto | kernel | aten (env, or set by use_cuda_kernel / use_aten)
    library: Path | None = None  # the library asked for (None: default_library_path())
    registered: bool = False  # the CUDA dispatch key has our implementation
    resolved: str | None = None  # "kernel" | "aten" once decided
    reason: str = ""  # why aten, when it is


_lock = threading.RLock()
_state = _State()


def _env_mode() -> str:
    mode = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(f"{IMPL_ENV}={mode!r}; expected one of {', '.join(MODES)}")
    return mode


def _cuda_impl(x: torch.Tensor, k: int) -> torch.Tensor:
    """The op on a CUDA tensor: the kernel for float32/float16 when chosen, aten otherwise."""
    if x.dtype in _DTYPE_CODES and _resolve() == KERNEL:
        _check_k(x, k)  # the aten path's messages for a bad k
        return topk_temporal_pool_cuda(x, k, library=_state.library)
    return topk_temporal_pool_aten(x, k)


def _register() -> None:
    with _lock:
        if not _state.registered:
            topk_temporal_pool.register_kernel("cuda", _cuda_impl)
            _state.registered = True


def _resolve() -> str:
    """Decide (once) between kernel and aten; load the library if it is the kernel."""
    if _state.resolved is not None:
        return _state.resolved
    with _lock:
        if _state.resolved is not None:
            return _state.resolved
        if _state.mode == ATEN:
            _state.resolved, _state.reason = ATEN, f"{IMPL_ENV}=aten or use_aten()"
            return ATEN
        try:
            if not torch.cuda.is_available():
                raise BackendUnavailableError("no CUDA device is visible (torch.cuda.is_available() is False)")
            load_library(_state.library)
        except BackendUnavailableError as exc:
            if _state.mode == KERNEL:
                raise BackendUnavailableError(f"the TopK CUDA kernel was required ({IMPL_ENV}=kernel or "
                                              f"use_cuda_kernel(required=True)) but {exc}") from exc
            _state.resolved, _state.reason = ATEN, str(exc)
            found = (_state.library or default_library_path()).is_file()
            if found and torch.cuda.is_available():  # a library was found but cannot be used
                warnings.warn(f"TopK on CUDA falls back to aten: {exc}", RuntimeWarning, stacklevel=2)
            return ATEN
        _state.resolved, _state.reason = KERNEL, ""
        return KERNEL


def use_cuda_kernel(library: str | os.PathLike[str] | None = None, *, required: bool = False) -> str:
    """Register the CUDA kernel for the op's CUDA dispatch key and say what CUDA tensors now run.

    Args:
        library: ``libsfc_topk_kernel.so``; default :func:`~sfc_deploy.ops.cuda_kernel.default_library_path`.
        required: raise instead of falling back to aten when the kernel cannot be used.

    Returns:
        "kernel", or "aten" (no library, no GPU; the reason is in :func:`cuda_implementation_record`).

    Raises:
        BackendUnavailableError: ``required`` and the kernel cannot be used here.
    """
    with _lock:
        _state.mode = KERNEL if required else "auto"
        _state.library = Path(library).expanduser() if library is not None else None
        _state.resolved, _state.reason = None, ""
        impl = _resolve()  # raises when required and unusable
        if impl == KERNEL:
            _register()
        return impl


def use_aten() -> str:
    """Run the op on CUDA tensors with aten (e.g. to compare with the kernel). Returns "aten"."""
    with _lock:
        _state.mode, _state.resolved, _state.reason = ATEN, ATEN, "use_aten()"
        return ATEN


def cuda_implementation() -> str:
    """What a float32/float16 CUDA tensor runs in ``torch.ops.sfc.topk_temporal_pool``: "kernel" or "aten".

    Loads the library if it was found and not yet loaded (never builds it).
    """
    if not _state.registered:
        return ATEN
    return _resolve()


def cuda_implementation_record(dtype: torch.dtype | None = None) -> dict[str, str | None]:
    """For environment records: ``{"impl": "kernel"|"aten", "library": path|None, "reason": ...}``; with
    ``dtype``, what a CUDA tensor of that dtype runs (the kernel takes float32 and float16 only)."""
    if dtype is not None and dtype not in _DTYPE_CODES:
        return {"impl": ATEN, "library": None,
                "reason": f"the CUDA kernel takes float32 and float16, not {str(dtype).removeprefix('torch.')}"}
    if not _state.registered:
        reason = _state.reason or (f"{IMPL_ENV}=aten" if _state.mode == ATEN
                                   else f"no kernel library at {default_library_path()}")
        return {"impl": ATEN, "library": None, "reason": reason}
    impl = _resolve()
    if impl == KERNEL:
        return {"impl": KERNEL, "library": str((_state.library or default_library_path()).resolve()), "reason": None}
    return {"impl": ATEN, "library": None, "reason": _state.reason}


def _register_if_found() -> None:
    """At import: register when the library exists (a stat, nothing loaded) or the kernel is required."""
    _state.mode = _env_mode()
    if _state.mode == KERNEL or (_state.mode == "auto" and default_library_path().is_file()):
        _register()


def _reset_for_tests() -> None:
    """Back to the import-time decision (tests that switch implementations restore it)."""
    with _lock:
        _state.library, _state.resolved, _state.reason = None, None, ""
        _state.mode = _env_mode()


_register_if_found()
