"""The runner of each runtime, looked up in the format table (no branch per backend).

:data:`sfc_deploy.export.formats.FORMATS` names each format's runner class; this module imports
it when a runner is first needed, so optional backends (TensorRT) load only when asked for, and
checks the options the runner is given against the ones the table says it takes.
"""

from __future__ import annotations

from typing import Any

from sfc_deploy.common.precision import TORCH_DTYPES
from sfc_deploy.errors import ConfigError
from sfc_deploy.export.formats import format_of_runtime, resolve
from sfc_deploy.export.manifest import Artifact, Manifest
from sfc_deploy.models.parts import copy_for_export, part_modules
from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.runtime.base import Runner


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
        same = next(model.parameters()).dtype == dtype and model.sfc.topk_impl == "op"
        module = part_modules(model if same else copy_for_export(model, dtype, topk_impl="op"))[art.part]
        return cls(art, None, module=module, **options)
    return cls(art, manifest.path_of(art), **options)
