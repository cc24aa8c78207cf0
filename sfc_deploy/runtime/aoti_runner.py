"""AOTInductor runner (``torch._inductor.aoti_load_package``)."""

from __future__ import annotations

import torch

from sfc_deploy.runtime.base import Runner


class AOTIRunner(Runner):
    """Runs a ``.pt2`` AOTInductor package (the same file the C++ runner loads); ``threads`` sets
    torch's intra-op threads (process-wide)."""

    name = "aoti"

    def __init__(self, artifact, path, *, device: str = "cpu", threads: int | None = None) -> None:
        super().__init__(artifact, path)
        self.device = device
        self.threads = threads
        self.module = None

    def activate(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module = torch._inductor.aoti_load_package(str(self.path))

    def deactivate(self) -> None:
        self.module = None

    def _infer_impl(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.module(*(feed[n].to(self.device) for n in self.input_names))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.output_names, out))
