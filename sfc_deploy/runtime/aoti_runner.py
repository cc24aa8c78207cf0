"""AOTInductor runner (``torch._inductor.aoti_load_package``)."""

from __future__ import annotations

import torch

from sfc_deploy.runtime.base import TorchModuleRunner


class AOTIRunner(TorchModuleRunner):
    """Runs a ``.pt2`` AOTInductor package (the same file the C++ runner loads)."""

    name = "aoti"

    def _load(self):
        return torch._inductor.aoti_load_package(str(self.path))
