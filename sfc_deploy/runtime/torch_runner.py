"""PyTorch eager runner: the reference every export is compared with, and a serving option itself."""

from __future__ import annotations

from torch import nn

from sfc_deploy.runtime.base import TorchModuleRunner


class PyTorchRunner(TorchModuleRunner):
    """Runs one part of the model rebuilt from ``model.safetensors`` in eager mode."""

    name = "pytorch"

    def __init__(self, artifact, path, *, module: nn.Module, device: str = "cpu", threads: int | None = None,
                 memory_format: str | None = None) -> None:
        super().__init__(artifact, path, device=device, threads=threads, memory_format=memory_format)
        self.part_module = module

    def _load(self):
        # a no-op for the model a Deployment prepared (registry.served_model: already there, in dtype)
        return self.part_module.eval().to(self.device)
