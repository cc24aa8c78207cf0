"""The TopKTemporalPool TensorRT plugin, seen from Python.

Two routes to the same op (name ``TopKTemporalPool``, namespace ``sfc``, version ``1``):

* **C++ plugin** (``csrc/trt_plugin``, IPluginV3, TensorRT >= 10.0): :func:`load_plugin_library`
  loads ``libsfc_trt_plugins.so`` so its creator registers itself, then checks the registry.
  Engines that contain it need the library loaded again wherever they are deserialized.
* **Python plugin** (``tensorrt.plugin``, TensorRT >= 10.6): :func:`register_python_plugin`
  registers the same op id with a JIT implementation that calls the project's CUDA kernel
  through torch (:mod:`sfc_deploy.ops.cuda_kernel`). It keeps Python in the inference loop;
  an ahead-of-time variant (``tensorrt.plugin.aot_impl``, TensorRT >= 10.9 per its release
  notes) would need a PTX kernel and is not provided. Use one route per process: both claim
  the same name, namespace and version.

``import tensorrt`` happens inside the functions, so this module imports everywhere; a missing
TensorRT raises :class:`~sfc_deploy.errors.BackendUnavailableError` with the reason.
None of this has run against a real TensorRT here (see SPEC.md section 5).

No ``from __future__ import annotations`` here: ``tensorrt.plugin`` reads the decorated
functions' annotations as objects, not strings.
"""

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

from sfc_deploy.errors import BackendUnavailableError, ConfigError

PLUGIN_NAME = "TopKTemporalPool"
PLUGIN_NAMESPACE = "sfc"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"  # tensorrt.plugin spelling
LIBRARY_ENV = "SFC_TRT_PLUGIN_LIB"
LIBRARY_NAME = "libsfc_trt_plugins.so"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIBRARY_PATH = REPO_ROOT / "build" / "csrc" / "trt_plugin" / LIBRARY_NAME

_lock = threading.Lock()
_loaded: dict[Path, ctypes.CDLL] = {}  # keeps the handles alive for the process lifetime
_python_plugin_registered = False


def import_tensorrt() -> Any:
    """Return the ``tensorrt`` module or raise BackendUnavailableError saying why not."""
    try:
        import tensorrt  # noqa: PLC0415 - optional backend, imported lazily
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"TensorRT is not available: `import tensorrt` failed ({type(exc).__name__}: {exc})"
        ) from exc
    return tensorrt


def default_plugin_library_path() -> Path:
    """``$SFC_TRT_PLUGIN_LIB`` if set, else ``build/csrc/trt_plugin/libsfc_trt_plugins.so``."""
    env = os.environ.get(LIBRARY_ENV)
    return Path(env).expanduser() if env else DEFAULT_LIBRARY_PATH


def get_plugin_creator(trt: Any = None) -> Any | None:
    """The registered creator of ``sfc::TopKTemporalPool`` v1, or None if none is registered."""
    trt = trt if trt is not None else import_tensorrt()
    return trt.get_plugin_registry().get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)


def _registered_elsewhere(trt: Any) -> str:
    """Where creators named TopKTemporalPool did register, to explain a failed lookup."""
    registry = trt.get_plugin_registry()
    creators = getattr(registry, "all_creators", None) or []
    found = [
        f"{getattr(c, 'plugin_namespace', '?')}::{c.name} v{c.plugin_version}"
        for c in creators
        if getattr(c, "name", None) == PLUGIN_NAME
    ]
    return ", ".join(found) if found else "none"


def load_plugin_library(path: str | os.PathLike[str] | None = None) -> Path:
    """Load the C++ plugin library into this process and check that its creator registered.

    The library is opened with ``RTLD_GLOBAL`` after ``import tensorrt`` so its static
    registrar finds TensorRT's plugin registry (the one this Python process uses).

    Args:
        path: the ``.so``; default :func:`default_plugin_library_path`.

    Returns:
        The resolved path of the loaded library.

    Raises:
        BackendUnavailableError: no TensorRT, no library file, a library that does not load,
            or a library that loaded but registered no ``sfc::TopKTemporalPool`` v1 creator.
    """
    trt = import_tensorrt()
    lib_path = Path(path).expanduser() if path is not None else default_plugin_library_path()
    lib_path = lib_path.resolve()
    with _lock:
        if lib_path not in _loaded:
            if not lib_path.is_file():
                raise BackendUnavailableError(
                    f"TensorRT plugin library not found at {lib_path}; build it with "
                    "`cmake -S csrc -B build/csrc -DTENSORRT_ROOT=<TensorRT prefix> && "
                    f"cmake --build build/csrc`, or set {LIBRARY_ENV}"
                )
            try:
                _loaded[lib_path] = ctypes.CDLL(str(lib_path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise BackendUnavailableError(f"cannot load {lib_path}: {exc}") from exc
    if get_plugin_creator(trt) is None:
        raise BackendUnavailableError(
            f"{lib_path} loaded, but TensorRT {trt.__version__} has no creator "
            f"{PLUGIN_ID} v{PLUGIN_VERSION} (creators named {PLUGIN_NAME}: "
            f"{_registered_elsewhere(trt)})"
        )
    return lib_path


def create_plugin(k: int, *, axis: int = 2, trt: Any = None) -> Any:
    """Create a TopKTemporalPool IPluginV3 for the build phase (needs a registered creator)."""
    import numpy as np  # noqa: PLC0415

    trt = trt if trt is not None else import_tensorrt()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an int >= 1, got {k!r}")
    if axis != 2:
        raise ConfigError(
            f"TopKTemporalPool pools the T axis of (N, C, T, H, W): axis must be 2, got {axis}"
        )
    creator = get_plugin_creator(trt)
    if creator is None:
        raise BackendUnavailableError(
            f"no {PLUGIN_ID} v{PLUGIN_VERSION} creator registered; call load_plugin_library() "
            "or register_python_plugin() first"
        )
    fields = trt.PluginFieldCollection(
        [
            trt.PluginField("k", np.array([k], dtype=np.int32), trt.PluginFieldType.INT32),
            trt.PluginField("axis", np.array([axis], dtype=np.int32), trt.PluginFieldType.INT32),
        ]
    )
    plugin = creator.create_plugin(PLUGIN_NAME, fields, trt.TensorRTPhase.BUILD)
    if plugin is None:
        raise ConfigError(f"the {PLUGIN_ID} creator rejected k={k}, axis={axis} (see its log)")
    return plugin


def add_topk_temporal_pool(network: Any, x: Any, k: int, *, name: str | None = None) -> Any:
    """Add a TopKTemporalPool layer on ``x`` (an ITensor of shape (N, C, T, H, W)) to ``network``.

    Returns:
        The IPluginV3Layer; its output 0 is (N, C, k, H, W) of x's dtype.
    """
    trt = import_tensorrt()
    layer = network.add_plugin_v3([x], [], create_plugin(k, trt=trt))
    if layer is None:
        raise ConfigError(f"TensorRT refused the {PLUGIN_ID} layer for input {x.name!r}")
    if name:
        layer.name = name
    return layer


def register_python_plugin() -> None:
    """Register ``sfc::TopKTemporalPool`` through ``tensorrt.plugin`` (TensorRT >= 10.6).

    The implementation runs the project's CUDA kernel via torch on TensorRT's stream, so it
    also needs a CUDA torch and ``libsfc_topk_kernel.so``. Idempotent within a process.

    Raises:
        BackendUnavailableError: no TensorRT, or one without ``tensorrt.plugin``.
    """
    global _python_plugin_registered
    trt = import_tensorrt()
    try:
        import tensorrt.plugin as trtp  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailableError(
            f"tensorrt.plugin needs TensorRT >= 10.6, this is {trt.__version__} ({exc})"
        ) from exc
    with _lock:
        if _python_plugin_registered:
            return
        if get_plugin_creator(trt) is not None:
            raise ConfigError(
                f"{PLUGIN_ID} v{PLUGIN_VERSION} is already registered (the C++ plugin library "
                "is loaded); use one route per process"
            )

        @trtp.register(PLUGIN_ID)
        def _describe(x: trtp.TensorDesc, k: int, axis: int) -> trtp.TensorDesc:
            dims = list(x.shape_expr)
            dims[2] = k
            return trtp.from_shape_expr(trtp.ShapeExprs.from_tuple(tuple(dims)), dtype=x.dtype)

        @trtp.impl(PLUGIN_ID)
        def _run(
            x: trtp.Tensor, k: int, axis: int, outputs: tuple[trtp.Tensor], stream: int
        ) -> None:
            import torch  # noqa: PLC0415

            from sfc_deploy.ops.cuda_kernel import topk_temporal_pool_cuda  # noqa: PLC0415

            xt = torch.as_tensor(x, device="cuda")
            yt = torch.as_tensor(outputs[0], device="cuda")
            topk_temporal_pool_cuda(xt, k, out=yt, stream=stream)

        _python_plugin_registered = True
