"""TensorRT runner: one serialized engine, I/O on PyTorch CUDA tensors (no pycuda).

UNVERIFIED AGAINST A REAL TENSORRT: written against the TensorRT 10/11 Python tensor API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); TensorRT cannot be installed
where it was written (SPEC section 5). The engine runs on torch's current CUDA stream, so it is
ordered with the torch work around it and the caching allocator's stream semantics keep the
input and output buffers alive for as long as the engine uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sfc_deploy.errors import ArtifactError, BackendUnavailableError
from sfc_deploy.export.manifest import Artifact
from sfc_deploy.runtime.base import Runner


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT DataType (the engine's I/O types decide the buffers)."""
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, tdt in (("int64", torch.int64), ("bfloat16", torch.bfloat16)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = tdt
    if dtype not in table:
        raise ArtifactError(f"engine tensor type {dtype} has no torch equivalent; expected float32/float16/int")
    return table[dtype]


def check_in_profile(name: str, shape: tuple[int, ...], profile: tuple[Any, Any, Any], where: str) -> None:
    """A shape outside the engine's optimisation profile fails here with the allowed range."""
    lo, _, hi = (tuple(int(d) for d in s) for s in profile)
    if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
        raise ArtifactError(
            f"{where}: input {name!r} has shape {shape}, outside the engine's profile min {lo} .. max {hi}; "
            "rebuild the engine with a larger max_batch/max_time (TensorRTOptions)"
        )


class TensorRTRunner(Runner):
    """Runs one engine of an export folder (``format == "tensorrt"``)."""

    name = "tensorrt"

    def __init__(
        self,
        artifact: Artifact,
        path: Path | None,
        *,
        device: str = "cuda",
        plugin_library: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(artifact, path)
        self.device = torch.device(device)
        self.plugin_library = plugin_library
        self.threads = threads  # accepted for interface parity; TensorRT runs on the GPU
        self._trt: Any = None
        self._runtime: Any = None
        self.engine: Any = None
        self.context: Any = None

    def activate(self) -> None:
        from sfc_deploy.export.tensorrt_plugin import import_tensorrt, load_plugin_library  # noqa: PLC0415

        trt = import_tensorrt()
        if not torch.cuda.is_available() or self.device.type != "cuda":
            raise BackendUnavailableError(
                f"the TensorRT runner needs a CUDA device, got device={self.device} "
                f"(torch.cuda.is_available() is {torch.cuda.is_available()})"
            )
        built_with = self.artifact.extra.get("tensorrt")
        if built_with and built_with != trt.__version__:
            raise ArtifactError(
                f"{self.path} was built with TensorRT {built_with}, this is {trt.__version__}; engines are "
                "not portable across versions: rebuild with sfc-deploy export --format onnx,tensorrt"
            )
        if self.artifact.extra.get("plugin"):  # the custom-op SFC engine holds the plugin layer
            load_plugin_library(self.plugin_library or self.artifact.extra["plugin"])
        self._trt = trt
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self._runtime.deserialize_cuda_engine(Path(self.path).read_bytes())
            if self.engine is None:
                raise ArtifactError(
                    f"TensorRT could not deserialize {self.path} (built on another GPU or TensorRT version?); "
                    "rebuild it on this machine"
                )
            self.context = self.engine.create_execution_context()
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        missing = set(self.input_names + self.output_names) - names
        if missing:
            raise ArtifactError(f"{self.path} lacks the I/O tensors {sorted(missing)} its manifest record names")

    def deactivate(self) -> None:
        self.context = None
        self.engine = None
        self._runtime = None

    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        trt, engine, context = self._trt, self.engine, self.context
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            keep = []  # inputs moved or made contiguous here live until the call returns
            for name in self.input_names:
                tensor = feed[name].to(self.device, non_blocking=True).contiguous()
                want = torch_dtype(trt, engine.get_tensor_dtype(name))
                if tensor.dtype != want:
                    raise ArtifactError(f"{self.describe()}: engine input {name!r} is {want}, got {tensor.dtype}")
                shape = tuple(tensor.shape)
                check_in_profile(name, shape, engine.get_tensor_profile_shape(name, 0), self.describe())
                if not context.set_input_shape(name, shape):
                    raise ArtifactError(f"{self.describe()}: TensorRT refused shape {shape} for input {name!r}")
                context.set_tensor_address(name, tensor.data_ptr())
                keep.append(tensor)
            outputs: dict[str, torch.Tensor] = {}
            for name in self.output_names:
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ArtifactError(f"{self.describe()}: output {name!r} shape {shape} is unresolved")
                out = torch.empty(shape, dtype=torch_dtype(trt, engine.get_tensor_dtype(name)), device=self.device)
                context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.describe()}: execute_async_v3 failed (see the TensorRT log)")
            del keep
        return outputs
