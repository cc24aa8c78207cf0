"""PyTorch eager runner: the reference every export is compared with, and a serving option itself."""

from __future__ import annotations

from torch import nn

from sfc_deploy.runtime.base import TorchModuleRunner


class PyTorchRunner(TorchModuleRunner):
    """Runs one part of the model rebuilt from ``model.safetensors`` in eager mode.

    ``module`` is a part of the model :func:`~sfc_deploy.runtime.registry.served_model` prepared:
    by default rewritten for inference (:mod:`sfc_deploy.models.inference`: BatchNorm folded, unit-time
    3D convs as 2D ones); ``inference_rewrite=False`` serves the model as trained, for comparison.
    """

    name = "pytorch"

    def __init__(self, artifact, path, *, module: nn.Module, device: str = "cpu", threads: int | None = None,
                 memory_format: str | None = None, inference_rewrite: bool = True) -> None:
        super().__init__(artifact, path, device=device, threads=threads, memory_format=memory_format)
        self.part_module = module
        self.inference_rewrite = inference_rewrite  # applied by served_model, where the parts share one copy

    def _load(self):
        # a no-op for the model a Deployment prepared (registry.served_model: already there, in dtype)
        return self.part_module.eval().to(self.device)
