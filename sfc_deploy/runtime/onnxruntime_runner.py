"""ONNX Runtime runner: serves the ONNX file it is given as is, on the providers installed.

The graph ONNX Runtime runs is written at export time (:mod:`sfc_deploy.export.ort_graph`: time
folded into the batch, the custom op moved into onnxruntime-extensions' domain), recorded in the
manifest with its sha256 and verified against PyTorch; nothing is rewritten here, so the bytes that
run are the bytes that were checked. The only thing added at load is the extensions' custom-op
library (and the NumPy reference op registered with it) for a graph that uses its domain.

``device`` places the session: ``"cpu"`` runs on the CPU execution provider alone, ``"cuda:N"`` on
the CUDA execution provider of GPU N (with the CPU provider for the nodes CUDA lacks) where this
onnxruntime has it, and is a one-line error naming onnxruntime-gpu where it does not; no device:
the installed providers, most preferred first. Inputs and outputs stay host tensors either way
(ONNX Runtime copies them to and from the GPU itself).

Why a session cannot be created decides what the failure means: a missing library (onnxruntime,
onnxruntime-extensions), an execution provider that is not installed or cannot start, or a kernel
ONNX Runtime lacks for a type on this provider (NOT_IMPLEMENTED) mean the backend is unavailable
here (:class:`BackendUnavailableError`: "not run"); anything else (bytes that do not parse, an
invalid graph, a failed shape inference) is a broken artifact (:class:`ArtifactError`), never a skip.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sfc_deploy.common.device import is_cuda
from sfc_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE
from sfc_deploy.runtime.base import Runner

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
OPTIMIZATION_LEVELS = ("all", "extended", "basic", "none")
_REEXPORT = "re-export it (sfc-deploy export --force)"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            f"ONNX Runtime is not installed ({exc}); pip install onnxruntime (or onnxruntime-gpu)"
        ) from exc
    return onnxruntime


def available_providers() -> list[str]:
    """The installed execution providers this project uses, most preferred first."""
    have = set(_onnxruntime().get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in have]


def check_cuda_provider(device: str) -> None:
    """A CUDA ``device`` needs an onnxruntime built with the CUDA execution provider (onnxruntime-gpu)."""
    if not is_cuda(device):
        return
    ort = _onnxruntime()
    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:
        raise BackendUnavailableError(
            f"--device {device}: this onnxruntime ({ort.__version__}) has no CUDA execution provider (it has "
            f"{', '.join(have)}); pip install onnxruntime-gpu in place of onnxruntime, or use --device cpu"
        )


def device_providers(device: str) -> list:
    """The execution providers that run a session on ``device`` ("cpu" or "cuda:N")."""
    if not is_cuda(device):
        return ["CPUExecutionProvider"]
    check_cuda_provider(device)
    index = torch.device(device).index
    return [("CUDAExecutionProvider", {"device_id": 0 if index is None else index}), "CPUExecutionProvider"]


def _provider_name(provider) -> str:
    """A provider as ONNX Runtime takes it: a name, or (name, options)."""
    return provider[0] if isinstance(provider, (tuple, list)) else provider


def _opset_domains(path: Path) -> set[str]:
    """The operator domains ``path`` imports (read without its weights' external data)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, a truncated or foreign file
        raise ArtifactError(f"{path.name} is not a readable ONNX file ({_first_line(exc)}); {_REEXPORT}") from exc
    return {imp.domain for imp in model.opset_import}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX artifact as is; a graph in onnxruntime-extensions' domain runs with its library."""

    name = "onnxruntime"
    pooled_outputs = True  # its outputs are views of the session's arena

    def __init__(self, artifact, path, *, threads: int | None = None, providers: list | None = None,
                 optimization: str = "all", shrink_arena: bool = False, cpu_arena: bool = True,
                 device: str | None = None) -> None:
        super().__init__(artifact, path)
        if device is not None and providers:
            raise ConfigError("the onnxruntime runner takes device or providers, not both; drop one")
        self.threads = threads
        #: where the session computes; inputs and outputs are host tensors whatever it is
        self.compute_device = device
        self.providers = list(providers) if providers else (device_providers(device) if device is not None else None)
        self.optimization = optimization
        # give the arena back after every run: several sessions in a row (head, SFC, tail) then peak
        # at the largest one instead of the sum of all (the bench turns it on for both strategies)
        self.shrink_arena = shrink_arena
        # no CPU arena at all: each run's buffers come from and go back to the system allocator (lower peaks,
        # memory returned at once; benchmarks/memory_streaming measures it); shrinking then has nothing to do
        self.cpu_arena = cpu_arena
        self.run_options = None
        self.session = None

    @classmethod
    def check_device(cls, device: str) -> None:
        check_cuda_provider(device)

    def _session_options(self, ort):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_cpu_mem_arena = self.cpu_arena
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        return opts

    def _providers(self, ort) -> list[str]:
        """The requested providers, all installed (ONNX Runtime itself would only warn and drop one)."""
        if not self.providers:
            return available_providers()
        have = ort.get_available_providers()
        missing = [_provider_name(p) for p in self.providers if _provider_name(p) not in have]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime {ort.__version__} here has no {', '.join(missing)}; it has {', '.join(have)}"
            )
        return self.providers

    def activate(self) -> None:
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ConfigError(f"optimization {self.optimization!r}; expected one of {', '.join(OPTIMIZATION_LEVELS)}")
        from sfc_deploy.export.ort_graph import EXTENSIONS_DOMAIN

        ort = _onnxruntime()
        opts = self._session_options(ort)
        providers = self._providers(ort)
        domains = _opset_domains(self.path)
        if DOMAIN in domains:
            raise ArtifactError(
                f"{self.path.name} holds {DOMAIN}::{OP_TYPE}, the TensorRT plugin's node, which ONNX Runtime "
                f"cannot run; ONNX Runtime serves the graph written for it at export; {_REEXPORT}"
            )
        if EXTENSIONS_DOMAIN in domains:
            from sfc_deploy.runtime.ort_custom_op import register_topk_op

            opts.register_custom_ops_library(register_topk_op())
        if self.shrink_arena and self.cpu_arena:
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        # explicitly requested providers are not silently swapped for the CPU when one fails to start
        fallback = {"enable_fallback": 0} if self.providers else {}
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers, **fallback)
        except Exception as exc:
            raise self._session_error(ort, exc, providers) from exc

    def _session_error(self, ort, exc: Exception, providers: list[str]) -> Exception:
        """BackendUnavailableError for what this machine lacks, ArtifactError for a broken artifact."""
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        names = [_provider_name(p) for p in providers]
        where = f"ONNX Runtime {ort.__version__} ({', '.join(names)})"
        # an execution provider that cannot start (its library, driver or device is missing) fails as
        # EP_FAIL or as a plain RuntimeError/ValueError; ONNX Runtime's own statuses have their own types
        provider_failed = isinstance(exc, state.EPFail) or (
            type(exc) in (RuntimeError, ValueError) and any(p != "CPUExecutionProvider" for p in names)
        )
        if isinstance(exc, state.NotImplemented) or provider_failed:
            return BackendUnavailableError(f"{where} cannot run {self.path.name}: {_first_line(exc)}")
        return ArtifactError(f"{where} cannot load {self.path.name}: {_first_line(exc)}; {_REEXPORT}")

    def deactivate(self) -> None:
        self.session = None

    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in feed.items()}
        outputs = self.session.run(self.output_names, arrays, self.run_options)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)}
