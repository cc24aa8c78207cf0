"""PyTorch eager runner: the reference every export is compared with, and a serving option itself."""

from __future__ import annotations

import torch
from torch import nn

from sfc_deploy.runtime.base import Runner


class PyTorchRunner(Runner):
    """Runs one part of the model rebuilt from ``model.safetensors`` in eager mode; ``threads`` sets
    torch's intra-op threads (process-wide)."""

    name = "pytorch"

    def __init__(self, artifact, path, *, module: nn.Module, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(artifact, path)
        self.module = module
        self.device = device
        self.threads = threads

    def activate(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module = self.module.eval().to(self.device)

    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.module(*(feed[n].to(self.device) for n in self.input_names))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.output_names, out))
