"""Build backbones and SFC models from registry names or configs, with checkpoints of any layout.

The factory half of timm's registry/factory pair: :mod:`sfc_deploy.models.registry` names the
configs, :mod:`sfc_deploy.models.checkpoint` maps weights onto them, and this module puts the two
together.
"""

from __future__ import annotations

from pathlib import Path

from sfc_deploy.errors import CheckpointError
from sfc_deploy.models.checkpoint import load_canonical_state_dict, load_into
from sfc_deploy.models.config import BackboneConfig, check_split
from sfc_deploy.models.registry import build_backbone, get_config
from sfc_deploy.models.resnet3d import ResNet3d
from sfc_deploy.models.sfc import SFC, SFCConfig
from sfc_deploy.models.sfc_model import SFCModel, read_sfc_checkpoint


def create_backbone(
    name: str | BackboneConfig,
    *,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    split: str = "res3",
    trust_checkpoint: bool = False,
) -> ResNet3d:
    """Build a backbone, optionally with pretrained weights in any supported checkpoint layout.

    Args:
        name: registry name or a config (e.g. read back from a manifest).
        checkpoint: PyTorchVideo, PySlowFast, mmaction2, TPN or plain/safetensors weights. The
            class count comes from the checkpoint's classifier unless ``num_classes`` says otherwise.
        num_classes: classifier size without a checkpoint (default: the config's).
        split: where ``forward_head`` stops.
        trust_checkpoint: allow unpickling arbitrary objects (only for files you trust).

    Returns:
        The module in eval mode.
    """
    config = name if isinstance(name, BackboneConfig) else get_config(name)
    state = None
    if checkpoint is not None:
        state, meta = load_canonical_state_dict(checkpoint, trust=trust_checkpoint, backbone=config.name)
        ckpt_classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else None
        if num_classes is None and ckpt_classes is not None:
            num_classes = ckpt_classes
        if meta.get("class_names"):
            config = config.replace(class_names=tuple(meta["class_names"]))
        if meta.get("preprocess") is not None:
            config = config.replace(preprocess=meta["preprocess"])
    if num_classes is not None:
        config = config.replace(num_classes=num_classes)
    model = build_backbone(config, split=split)
    if state is not None:
        load_into(model, state, source=str(checkpoint))
    return model.eval()


def create_model(
    backbone: str | BackboneConfig = "slow8x8",
    *,
    tau: float = 2.0,
    split: str = "res3",
    checkpoint: str | Path | None = None,
    sfc_checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    **sfc_options,
) -> SFCModel:
    """Build head -> SFC -> tail.

    Args:
        backbone: registry name or config.
        tau: compression ratio (k = round(T / tau)).
        split: the head ends after this stage ("res3" in the paper).
        checkpoint: pretrained backbone weights in any supported layout.
        sfc_checkpoint: trained SFC weights; they carry their own SFC config and split, and are
            refused when they belong to another backbone.
        num_classes: classifier size when there is no checkpoint.
        **sfc_options: other :class:`SFCConfig` fields (pool, kqv, theta_kernel, logit_scale, prior).
    """
    check_split(split)
    sfc_state = None
    if sfc_checkpoint is not None:
        sfc_state, meta = read_sfc_checkpoint(sfc_checkpoint)
        sfc_config = SFCConfig.from_dict(meta["sfc_config"])
        split = meta["split"]
        if num_classes is None and checkpoint is None:
            num_classes = meta["backbone_config"]["num_classes"]
    model_backbone = create_backbone(
        backbone, checkpoint=checkpoint, num_classes=num_classes, split=split, trust_checkpoint=trust_checkpoint
    )
    if sfc_state is None:
        sfc_config = SFCConfig(channels=model_backbone.config.stage_channels(split), tau=tau, **sfc_options)
    else:
        _check_sfc_belongs(meta, model_backbone.config, sfc_checkpoint)
    model = SFCModel(model_backbone, SFC(sfc_config), split=split)
    if sfc_state is not None:
        expected = {k: tuple(v.shape) for k, v in model.sfc.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in sfc_state.items()}
        missing = [k for k in expected if k not in got]
        unexpected = [k for k in got if k not in expected]
        wrong = [f"{k}: file {got[k]} vs model {expected[k]}" for k in expected if k in got and got[k] != expected[k]]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"{sfc_checkpoint}: SFC weights do not fit the SFC module its own metadata describes (missing "
                f"{len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]}, mis-shaped "
                f"{len(wrong)}: {wrong[:2]}); the file is damaged or was edited: use the sfc.safetensors "
                "`sfc-deploy train` wrote, or train again"
            )
        model.sfc.load_state_dict(sfc_state)
    return model.eval()


def _check_sfc_belongs(meta: dict, config: BackboneConfig, path) -> None:
    """Refuse SFC weights trained on a backbone with another structure or class count."""
    saved = BackboneConfig.from_dict(meta["backbone_config"])
    fields = ("family", "frames", "stride", "stem_channels", "widths", "mids", "depths", "temporal_kernels", "num_classes")
    if any(getattr(saved, f) != getattr(config, f) for f in fields):
        raise CheckpointError(
            f"{path} was trained for backbone {saved.name!r} ({saved.num_classes} classes) but the model "
            f"is {config.name!r} ({config.num_classes} classes); pass --backbone {saved.name} and the checkpoint it was trained on"
        )
