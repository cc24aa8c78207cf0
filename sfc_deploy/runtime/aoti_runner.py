"""AOTInductor runner (``torch._inductor.aoti_load_package``).

An AOTInductor package holds machine code for one device type: a CPU package cannot run on a GPU
nor a CUDA one on the CPU. The manifest records which (``Artifact.device``; manifests older than
the field hold CPU packages only), and the runner refuses a mismatch before loading, in one line
naming the fix.
"""

from __future__ import annotations

import torch

from sfc_deploy.errors import ConfigError
from sfc_deploy.runtime.base import TorchModuleRunner


def package_device(artifact) -> str:
    """The device type an AOTInductor artifact was compiled for: "cpu" or "cuda"."""
    return artifact.device or "cpu"  # before the manifest recorded it, packages were compiled for the CPU


class AOTIRunner(TorchModuleRunner):
    """Runs a ``.pt2`` AOTInductor package (the same file the C++ runner loads) on the device it
    was compiled for (``device="cuda:N"`` loads a CUDA package onto GPU N)."""

    name = "aoti"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        compiled, wanted = package_device(self.artifact), torch.device(self.device)
        if compiled != wanted.type:
            raise ConfigError(
                f"{self.artifact.file} is an AOTInductor package compiled for {compiled}; it cannot run on "
                f"{wanted}: run it with --device {'cuda' if compiled == 'cuda' else 'cpu'}, or re-export with "
                f"--format aoti --device {wanted.type}"
            )

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """On the package's device and contiguous: a package trusts the strides it was compiled for and
        does not check them at run time (SFC's streamed head chunks are slices of the video)."""
        return super()._input(x).contiguous()

    def _load(self):
        device = torch.device(self.device)
        index = device.index if device.type == "cuda" and device.index is not None else -1
        return torch._inductor.aoti_load_package(str(self.path), device_index=index)
