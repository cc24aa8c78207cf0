"""Devices as users name them (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and mixed-precision modes.

One place turns ``--device`` into a concrete torch device, so every command accepts the same
words and fails the same way: on a machine without a visible CUDA device, ``--device cuda`` is a
one-line error, never a silent fall back to the CPU. ``auto`` picks CUDA when there is one and
says so (through ``announce``), because a result is read differently on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError

DEVICE_HELP = "auto (CUDA when visible), cpu, cuda or cuda:N."
AMP_MODES = ("off", "bf16", "fp16")


def cuda_unavailable_reason() -> str:
    """Why torch sees no CUDA device here, in words a user can act on."""
    if torch.version.cuda is None:
        return f"no CUDA device is visible: this torch ({torch.__version__}) is a CPU-only build"
    return (f"no CUDA device is visible (torch {torch.__version__}, CUDA {torch.version.cuda}): "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES")


def resolve_device(text: str | None = "auto", *, announce: Callable[[str], None] | None = None) -> str:
    """``auto|cpu|cuda|cuda:N`` -> ``"cpu"`` or ``"cuda:N"``.

    Raises:
        ConfigError: a word that is not a device.
        BackendUnavailableError: CUDA asked for but no CUDA device is visible, or N out of range.
    """
    name = (text or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            chosen = f"cuda:{torch.cuda.current_device()}"
            if announce is not None:
                announce(f"--device auto: using {chosen} ({torch.cuda.get_device_name(chosen)})")
            return chosen
        return "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2] or None
        if index_text is not None and not index_text.isdigit():
            raise ConfigError(f"--device {text!r} is not a device; expected {DEVICE_HELP}")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"--device {text}: {cuda_unavailable_reason()}; use --device cpu")
        index = int(index_text) if index_text is not None else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            raise BackendUnavailableError(
                f"--device {text}: only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
        return f"cuda:{index}"
    raise ConfigError(f"--device {text!r} is not a device; expected {DEVICE_HELP}")


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): timings must include the kernels."""
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


@dataclass(frozen=True)
class Amp:
    """Mixed precision of a training loop: autocast dtype and whether a gradient scaler is needed."""

    mode: str = "off"

    def __post_init__(self) -> None:
        if self.mode not in AMP_MODES:
            raise ConfigError(f"--amp {self.mode!r} is not one of {', '.join(AMP_MODES)}")

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    def check(self, device: str) -> None:
        """fp16 autocast is a CUDA feature; bf16 also runs on the CPU (slowly, but correctly)."""
        if self.mode == "fp16" and not is_cuda(device):
            raise ConfigError("--amp fp16 needs a CUDA device (it relies on a gradient scaler and fp16 "
                              "kernels); use --amp bf16 or --amp off on the CPU")

    def autocast(self, device: str) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.dtype)

    def scaler(self, device: str) -> torch.amp.GradScaler:
        """A gradient scaler that is active for fp16 only (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(torch.device(device).type, enabled=self.mode == "fp16")
