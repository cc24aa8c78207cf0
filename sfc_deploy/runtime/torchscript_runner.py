"""TorchScript runner (``torch.jit.load``): the same file the C++ runner loads."""

from __future__ import annotations

import warnings

import torch

from sfc_deploy.runtime.base import TorchModuleRunner


class TorchScriptRunner(TorchModuleRunner):
    """Runs a ``.ts`` trace."""

    name = "torchscript"

    def _load(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript stays: C++ loads it
            return torch.jit.load(str(self.path), map_location=self.device).eval()
