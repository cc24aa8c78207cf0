"""The runner of each runtime, looked up in the format table (no branch per backend).

:data:`sfc_deploy.export.formats.FORMATS` names each format's runner class; this module imports
it when a runner is first needed, so optional backends (TensorRT) load only when asked for, and
checks the options the runner is given against the ones the table says it takes.

Devices are one runner option, ``device`` ("cpu" or "cuda:N", resolved by
:func:`sfc_deploy.common.device.resolve_device`), that every runtime's row takes: the torch runtimes
compute there, ONNX Runtime picks the execution provider of that device, TensorRT runs on CUDA only.
:func:`check_device` says before anything loads whether this machine can do it.
"""

from __future__ import annotations

from typing import Any

import torch

from sfc_deploy.common.device import is_cuda
from sfc_deploy.common.precision import TORCH_DTYPES
from sfc_deploy.errors import ConfigError
from sfc_deploy.export.formats import format_of_runtime, resolve
from sfc_deploy.export.manifest import Artifact, Manifest
from sfc_deploy.models.inference import prepare_for_inference
from sfc_deploy.models.parts import copy_for_export, part_modules
from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.runtime.base import Runner, memory_format_of


def runner_class(runtime: str) -> type[Runner]:
    """The Runner subclass of ``runtime`` (imported now)."""
    return resolve(format_of_runtime(runtime).runner)


def check_runner_options(runtime: str, options: dict[str, Any]) -> None:
    """Options a runtime's runner does not take are an error, not silently ignored."""
    accepted = format_of_runtime(runtime).runner_options
    unknown = sorted(k for k, v in options.items() if k not in accepted and v is not None)
    if unknown:
        raise ConfigError(
            f"runtime {runtime} takes no option {', '.join(unknown)}; it takes {', '.join(accepted) or 'none'}"
        )


def check_device(runtime: str, device: str) -> None:
    """Whether ``runtime`` can run on ``device`` ("cpu"/"cuda:N") here, before any artifact loads.

    Raises:
        ConfigError: a GPU-only runtime asked for the CPU, or a runtime without a device option.
        BackendUnavailableError: ONNX Runtime asked for CUDA without its CUDA execution provider.
    """
    fmt = format_of_runtime(runtime)
    if "device" not in fmt.runner_options:
        raise ConfigError(f"runtime {runtime} has no device option; drop --device")
    if fmt.needs_gpu and not is_cuda(device):
        raise ConfigError(f"runtime {runtime} runs on a CUDA device only, not {device}; use --device cuda")
    runner_class(runtime).check_device(device)  # e.g. ONNX Runtime: is its CUDA provider installed?


def served_model(model: SFCModel, dtype: torch.dtype, *, device: str = "cpu",
                 memory_format: str | None = None, inference_rewrite: bool | None = None) -> SFCModel:
    """The model the PyTorch runtime serves: ``model`` itself when it already is what is asked for
    (its dtype, the TopK op, on ``device``, no memory format, no inference rewrite), otherwise a
    converted copy, so the caller's model is never moved, recast or rewritten. A copy remembers what
    it was made for, so the parts of one deployment share it.

    ``inference_rewrite`` (default on): the copy is rewritten for eval-only serving by
    :func:`sfc_deploy.models.inference.prepare_for_inference` (BatchNorm folded into the convs, unit-time
    3D convs run as 2D ones; channels-last activations on the CPU unless ``memory_format`` says
    "contiguous"); False serves the model as trained."""
    rewrite = inference_rewrite is not False
    key = (dtype, str(torch.device(device)), memory_format, rewrite)
    if getattr(model, "_served_as", None) == key:
        return model
    param = next(model.parameters())
    if (param.dtype == dtype and model.sfc.topk_impl == "op" and param.device == torch.device(device)
            and memory_format is None and not rewrite):
        return model
    # the rewrite folds BatchNorm in the model's own precision and casts after (one rounding to dtype)
    clone = copy_for_export(model, param.dtype if rewrite else dtype, topk_impl="op").to(device)
    fmt = memory_format_of(memory_format)
    if fmt is not None:
        clone = clone.to(memory_format=fmt)
    if rewrite:
        channels_last = (fmt is torch.channels_last_3d
                         or (fmt is None and torch.device(device).type == "cpu"))  # CUDA: layout as is (not measured)
        prepare_for_inference(clone, channels_last=channels_last, dtype=dtype)
    clone._served_as = key
    return clone


def make_runner(manifest: Manifest | None, art: Artifact, runtime: str, *, model: SFCModel | None = None,
                **options: Any) -> Runner:
    """The runner of ``runtime`` for one artifact (not yet activated).

    The PyTorch runtime serves a part of ``model`` (default: the model rebuilt from the folder's
    weights); every other runtime loads the artifact's file after checking its sha256.
    """
    check_runner_options(runtime, options)
    options = {k: v for k, v in options.items() if v is not None}
    cls = runner_class(runtime)
    if runtime == "pytorch":
        if model is None:
            from sfc_deploy.export.weights import model_from_manifest

            model = model_from_manifest(manifest)
        dtype = TORCH_DTYPES[art.inputs[0].dtype]
        served = served_model(model, dtype, device=options.get("device", "cpu"), memory_format=options.get("memory_format"),
                              inference_rewrite=options.get("inference_rewrite"))
        module = part_modules(served)[art.part]
        return cls(art, None, module=module, **options)
    return cls(art, manifest.path_of(art), **options)
