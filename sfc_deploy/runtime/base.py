"""The one Runner interface every backend implements (in the style of Polygraphy's runners).

A runner is a context manager: ``activate`` loads the artifact (session, engine, module),
``infer`` checks input names, dtypes and shapes against the artifact's manifest record and then
calls the backend's ``_infer_impl``. Inputs and outputs are torch tensors, so the SFC pipeline and
the dense baseline run on identical machinery whatever the backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from sfc_deploy.common.precision import TORCH_DTYPES
from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.export.manifest import Artifact, TensorSpec

#: ``memory_format`` runner option -> torch memory format of 5D inputs and weights
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def memory_format_of(name: str | None) -> torch.memory_format | None:
    """The torch memory format called ``name`` (None: leave tensors as they are), or a one-line error."""
    if name is None:
        return None
    if name not in MEMORY_FORMATS:
        raise ConfigError(f"memory_format {name!r}; expected one of {', '.join(MEMORY_FORMATS)}")
    return MEMORY_FORMATS[name]


class Runner(ABC):
    """Runs one exported part. Subclasses implement ``activate``, ``_infer_impl`` and ``deactivate``."""

    #: runtime name as used on the command line
    name: str = "abstract"
    #: whether outputs live in the backend's own memory pool (ONNX Runtime's arena), so that a caller
    #: keeping one while later runs go on pins that pool's region; such a caller copies it out first
    pooled_outputs: bool = False

    def __init__(self, artifact: Artifact, path: Path | None) -> None:
        self.artifact = artifact
        self.path = path
        self.active = False

    # context manager -------------------------------------------------------------------------
    def __enter__(self) -> "Runner":
        if not self.active:
            self.activate()
            self.active = True
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self.deactivate()
            self.active = False

    @classmethod
    def check_device(cls, device: str) -> None:
        """Raise if this machine cannot run this backend on ``device`` (checked before anything loads)."""

    def activate(self) -> None:
        """Load the artifact."""

    def deactivate(self) -> None:
        """Release the session / engine."""

    # inference -------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.artifact.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.artifact.outputs]

    def infer(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validate ``feed`` against the artifact's inputs, run, return outputs by name."""
        if not self.active:
            raise ArtifactError(f"{self.describe()} is not active; use it as a context manager (with runner: ...)")
        check_feed(feed, self.artifact.inputs, where=self.describe())
        return self._infer_impl(feed)

    @abstractmethod
    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the backend. ``feed`` has been validated."""

    def describe(self) -> str:
        return f"{self.name} runner for {self.artifact.part} ({self.artifact.file})"

    @property
    def input_device(self) -> torch.device:
        """Where this runner takes its inputs and leaves its outputs, so a pipeline keeps tensors there
        between runners and copies to the host once (a runner with a ``device`` computes on it)."""
        return torch.device(getattr(self, "device", "cpu"))


class TorchModuleRunner(Runner):
    """A runner whose backend is a torch callable (eager module, TorchScript, AOTInductor package):
    ``threads`` sets torch's intra-op threads (process-wide); ``device`` is where it computes (inputs
    are moved there, outputs stay there); ``memory_format="channels_last_3d"`` converts the module's
    5D weights and 5D inputs (NDHWC: what cuDNN's fastest 3D convolutions read); subclasses set
    ``self.module``."""

    def __init__(self, artifact: Artifact, path: Path | None, *, device: str = "cpu", threads: int | None = None,
                 memory_format: str | None = None) -> None:
        super().__init__(artifact, path)
        self.device = device
        self.threads = threads
        self.memory_format = memory_format_of(memory_format)
        self.module = None

    def activate(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        module = self._load()
        if self.memory_format is not None:
            module = module.to(memory_format=self.memory_format)
        self.module = module

    def _load(self):
        """The callable for ``activate``."""
        raise NotImplementedError

    def deactivate(self) -> None:
        self.module = None

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on this runner's device (a no-op where it is already there) in its memory format."""
        # async from pinned host memory to a GPU (never towards the host: that would race the reader)
        x = x.to(self.device, non_blocking=torch.device(self.device).type == "cuda")  # on the CPU: x itself
        if self.memory_format is not None and x.dim() == 5:
            x = x.contiguous(memory_format=self.memory_format)
        return x

    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.module(*(self._input(feed[n]) for n in self.input_names))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.output_names, out))


def check_feed(feed: dict[str, torch.Tensor], specs: tuple[TensorSpec, ...], *, where: str) -> None:
    """Names, dtypes, ranks, static dims, and consistency of symbolic dims across inputs."""
    expected = [s.name for s in specs]
    if sorted(feed) != sorted(expected):
        raise ArtifactError(f"{where}: inputs {sorted(feed)} given, expected {expected}")
    symbols: dict[str, int] = {}
    for spec in specs:
        tensor = feed[spec.name]
        want = TORCH_DTYPES[spec.dtype]
        if tensor.dtype != want:
            raise ArtifactError(f"{where}: input {spec.name!r} is {tensor.dtype}, expected {want}; cast it first")
        if tensor.dim() != len(spec.shape):
            raise ArtifactError(
                f"{where}: input {spec.name!r} has shape {tuple(tensor.shape)}, expected rank {len(spec.shape)} {spec.shape}"
            )
        for axis, (got, dim) in enumerate(zip(tensor.shape, spec.shape)):
            if isinstance(dim, int) and got != dim:
                raise ArtifactError(
                    f"{where}: input {spec.name!r} has shape {tuple(tensor.shape)} but axis {axis} must be {dim} "
                    f"(expected {spec.shape}); resize the input or re-export with matching --frames/--size"
                )
            if isinstance(dim, str) and symbols.setdefault(dim, got) != got:
                raise ArtifactError(f"{where}: dimension {dim!r} is {symbols[dim]} in one input and {got} in another")


def bind_symbols(specs: tuple[TensorSpec, ...], feed: dict[str, torch.Tensor]) -> dict[str, int]:
    """Values of the symbolic dims in a validated feed (used to size outputs)."""
    out: dict[str, int] = {}
    for spec in specs:
        for got, dim in zip(feed[spec.name].shape, spec.shape):
            if isinstance(dim, str):
                out[dim] = int(got)
    return out
