"""The exact weights every artifact of an export came from, and the model rebuilt from them.

``model.safetensors`` travels in every export folder: it is the PyTorch runtime's artifact and the
reference every other artifact is verified against. It lives beside the manifest because both
sides of the artifact boundary need it: the exporter writes it, runtimes and verification read it.
"""

from __future__ import annotations

from pathlib import Path

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.errors import ArtifactError
from sfc_deploy.export.manifest import Manifest
from sfc_deploy.models.registry import build_backbone
from sfc_deploy.models.sfc import SFC
from sfc_deploy.models.sfc_model import SFCModel


def save_weights(model: SFCModel, path: Path) -> None:
    """Write the model's state dict with its configs in the safetensors metadata (atomically)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "backbone_config": model.config.to_json(),
        "sfc_config": model.sfc.config.to_json(),
        "split": model.split,
    }
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta), suffix=".safetensors")


def model_from_manifest(manifest: Manifest, *, check: bool = True) -> SFCModel:
    """Rebuild the exact PyTorch model an export folder was made from (the verification reference)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = manifest.path_of(manifest.find("weights", "pytorch"), check=check)
    model = SFCModel(build_backbone(manifest.backbone, split=manifest.split), SFC(manifest.sfc), split=manifest.split)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path} cannot be read ({exc}); re-run sfc-deploy export --force") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(
            f"{path} does not match the model its manifest describes (missing {len(missing)}, unexpected "
            f"{len(unexpected)} tensors); re-run sfc-deploy export --force"
        )
    return model.eval()
