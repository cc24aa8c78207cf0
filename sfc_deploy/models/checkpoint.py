"""Checkpoint import: every layout users already have, mapped onto the canonical ResNet3d names.

Layouts (see SPEC section 2), detected from key patterns, never from the file name:

* ``pytorchvideo``: ``{"model_state"}`` with ``blocks.0.conv.weight``, ``blocks.1.res_blocks.0.branch2.conv_a.weight``.
* ``pyslowfast``: ``{"epoch", "model_state", "optimizer_state", "cfg"}`` with ``s1.pathway0_stem.conv.weight``.
* ``mmaction2``: ``{"state_dict", "meta"}`` with ``backbone.conv1.conv.weight``, ``cls_head.fc_cls.weight``.
* ``tpn``: ``{"state_dict"}`` with ``backbone.conv1.weight``, ``backbone.layer1.0.downsample.0.weight``; a TPN
  model's ``necks.*`` (the decisionforce/TPN repo's temporal pyramid) imports into ``tpn50``'s ``neck.*``.
* ``plain``: a bare state dict already in canonical names (:mod:`sfc_deploy.models.resnet3d`).
* ``safetensors``: our own converted format; its metadata carries the backbone config and class names.

The mapping is one table of name templates per layout, used in both directions, so that
:func:`save_in_layout` (the inverse) cannot drift from the loader; tpn50's neck has a second such table.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.errors import CheckpointError
from sfc_deploy.models.config import BackboneConfig, Preprocess
from sfc_deploy.models.registry import build_backbone, get_config, list_backbones

FORMAT = "backbone/1"
LAYOUTS: tuple[str, ...] = ("pytorchvideo", "pyslowfast", "mmaction2", "tpn", "plain")
#: Layouts whose names are already a family's canonical ones (no renaming): ``vmz`` is torchvision's
#: ``VideoResNet`` as VMZ and the ig65m-pytorch port release R(2+1)D (``stem.0.weight``,
#: ``layer1.0.conv2.0.0.weight``, ``layer2.0.downsample.0.weight``, ``fc.weight``), bare state dicts.
IDENTITY_LAYOUTS: tuple[str, ...] = ("vmz",)

# Canonical templates, and the same seven tensors in each layout, in the same order.
# Fields: S = canonical stage number (res2..res5), L = S - 1 (layer/blocks index), j = block,
# x = a/b/c (conv of the bottleneck), n = 1/2/3 (the same conv, numbered), p = parameter/buffer.
_CANONICAL = (
    "stem.conv.weight", "stem.bn.{p}",
    "res{S}.{j}.conv_{x}.weight", "res{S}.{j}.bn_{x}.{p}",
    "res{S}.{j}.shortcut_conv.weight", "res{S}.{j}.shortcut_bn.{p}",
    "fc.{p}",
)  # fmt: skip
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "pytorchvideo": (
        "blocks.0.conv.weight", "blocks.0.norm.{p}",
        "blocks.{L}.res_blocks.{j}.branch2.conv_{x}.weight", "blocks.{L}.res_blocks.{j}.branch2.norm_{x}.{p}",
        "blocks.{L}.res_blocks.{j}.branch1_conv.weight", "blocks.{L}.res_blocks.{j}.branch1_norm.{p}",
        "blocks.5.proj.{p}",
    ),
    "pyslowfast": (
        "s1.pathway0_stem.conv.weight", "s1.pathway0_stem.bn.{p}",
        "s{S}.pathway0_res{j}.branch2.{x}.weight", "s{S}.pathway0_res{j}.branch2.{x}_bn.{p}",
        "s{S}.pathway0_res{j}.branch1.weight", "s{S}.pathway0_res{j}.branch1_bn.{p}",
        "head.projection.{p}",
    ),
    "mmaction2": (
        "backbone.conv1.conv.weight", "backbone.conv1.bn.{p}",
        "backbone.layer{L}.{j}.conv{n}.conv.weight", "backbone.layer{L}.{j}.conv{n}.bn.{p}",
        "backbone.layer{L}.{j}.downsample.conv.weight", "backbone.layer{L}.{j}.downsample.bn.{p}",
        "cls_head.fc_cls.{p}",
    ),
    "tpn": (
        "backbone.conv1.weight", "backbone.bn1.{p}",
        "backbone.layer{L}.{j}.conv{n}.weight", "backbone.layer{L}.{j}.bn{n}.{p}",
        "backbone.layer{L}.{j}.downsample.0.weight", "backbone.layer{L}.{j}.downsample.1.{p}",
        "cls_head.fc_cls.{p}",
    ),
    "plain": _CANONICAL,
}  # fmt: skip
# tpn50's neck (models/tpn.py), whose canonical names are mmaction2's, and the TPN repo's names for the same
# tensors: bare Conv3d/BatchNorm3d where mmaction2 has ConvModules, and its two level fusions the other way
# round (its forward fuses the top-down flow with ``level_fusion_op2``, the bottom-up one with
# ``level_fusion_op``; both have the same shapes, so only this table keeps them apart). Fields: i = level
# (or op index), k = spatial-modulation step, p = parameter/buffer.
_NECK_CANONICAL = (
    "neck.spatial_modulation.spatial_modulation.{i}.{k}.conv.weight",
    "neck.spatial_modulation.spatial_modulation.{i}.{k}.bn.{p}",
    "neck.temporal_modulation_ops.{i}.conv.conv.weight",
    "neck.downsample_ops.{i}.conv.conv.weight",
    "neck.level_fusion_1.downsamples.{i}.conv.conv.weight", "neck.level_fusion_1.downsamples.{i}.conv.bn.{p}",
    "neck.level_fusion_1.fusion_conv.conv.weight", "neck.level_fusion_1.fusion_conv.bn.{p}",
    "neck.level_fusion_2.downsamples.{i}.conv.conv.weight", "neck.level_fusion_2.downsamples.{i}.conv.bn.{p}",
    "neck.level_fusion_2.fusion_conv.conv.weight", "neck.level_fusion_2.fusion_conv.bn.{p}",
    "neck.pyramid_fusion.conv.weight", "neck.pyramid_fusion.bn.{p}",
)
_NECK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "mmaction2": _NECK_CANONICAL,
    "plain": _NECK_CANONICAL,
    "tpn": (
        "necks.spatial_modulation.spatial_modulation.{i}.{k}.conv.weight",
        "necks.spatial_modulation.spatial_modulation.{i}.{k}.bn.{p}",
        "necks.temporal_modulation_ops.{i}.conv.weight",
        "necks.downsampling_ops.{i}.conv.weight",
        "necks.level_fusion_op2.ops.{i}.conv.weight", "necks.level_fusion_op2.ops.{i}.norm.{p}",
        "necks.level_fusion_op2.fusion_conv.0.weight", "necks.level_fusion_op2.fusion_conv.1.{p}",
        "necks.level_fusion_op.ops.{i}.conv.weight", "necks.level_fusion_op.ops.{i}.norm.{p}",
        "necks.level_fusion_op.fusion_conv.0.weight", "necks.level_fusion_op.fusion_conv.1.{p}",
        "necks.pyramid_fusion_op.0.weight", "necks.pyramid_fusion_op.1.{p}",
    ),
}  # fmt: skip
_FIELD_RE = {
    "S": r"[2-5]", "L": r"[1-4]", "j": r"\d+", "x": r"[abc]", "n": r"[123]", "i": r"\d+", "k": r"\d+",
    "p": r"weight|bias|running_mean|running_var|num_batches_tracked",
}  # fmt: skip
# First match wins: TPN's bare ``backbone.conv1.weight`` must not be read as mmaction2's ConvModule.
_SIGNATURES = (
    ("pyslowfast", r"s1\.pathway0_stem\..*"),
    ("pytorchvideo", r"blocks\.0\.(conv|norm)\..*|blocks\.\d+\.res_blocks\..*"),
    ("mmaction2", r"backbone\.conv1\.(conv|bn)\..*"),
    ("tpn", r"backbone\.(conv1|bn1)\..*"),
    ("vmz", r"stem\.\d\.\w+|layer[1-4]\.\d+\.(conv[1-3]|downsample)\.\d\..*"),
    ("plain", r"stem\.(conv|bn)\..*|res[2-5]\.\d+\..*"),
)
# Keys that belong to neither the backbone nor its classifier, and why they may go.
_DROP = re.compile(
    r".*num_batches_tracked"  # BatchNorm step counters: unused in eval, the model keeps its own
    r"|data_preprocessor\..*"  # mmaction2 mean/std buffers: recorded as meta["preprocess"] instead
    r"|necks?\.aux_head\..*"  # TPN's auxiliary head (mmaction2 neck., TPN repo necks.): a training-only loss
)


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)
    return re.compile(
        "".join(re.escape(t) if i % 2 == 0 else f"(?P<{t}>{_FIELD_RE[t]})" for i, t in enumerate(parts))
    )


def _fields(groups: dict[str, str]) -> dict[str, str]:
    """Complete the fields so that either side's template can be formatted from either side's match."""
    f = dict(groups)
    if "L" in f:
        f["S"] = str(int(f["L"]) + 1)
    if "S" in f:
        f["L"] = str(int(f["S"]) - 1)
    if "n" in f:
        f["x"] = "abc"[int(f["n"]) - 1]
    if "x" in f:
        f["n"] = str("abc".index(f["x"]) + 1)
    return f


@lru_cache(maxsize=None)
def _rules(layout: str, *, to_canonical: bool) -> tuple[tuple[re.Pattern[str], str], ...]:
    theirs = _TEMPLATES[layout] + _NECK_TEMPLATES.get(layout, ())
    ours = _CANONICAL + (_NECK_CANONICAL if layout in _NECK_TEMPLATES else ())
    src, dst = (theirs, ours) if to_canonical else (ours, theirs)
    return tuple((_pattern(s), d) for s, d in zip(src, dst, strict=True))


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in rules:
        if m := pattern.fullmatch(key):
            return template.format(**_fields(m.groupdict()))
    return None


def detect_layout(keys: Any, *, source: str = "checkpoint") -> str:
    """The layout whose signature keys appear, so users never have to say where weights came from."""
    keys = list(keys)
    for layout, signature in _SIGNATURES:
        if any(re.fullmatch(signature, k) for k in keys):
            return layout
    raise CheckpointError(
        f"{source}: cannot tell which layout the keys are in (first keys: {_few(keys)}); expected a "
        f"slow-only ResNet3d from {', '.join(LAYOUTS)} or an R(2+1)D from {', '.join(IDENTITY_LAYOUTS)}; re-save the model's state_dict from one of them"
    )


def to_canonical(state: dict[str, torch.Tensor], layout: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a layout's keys to canonical ones; return ``(state, dropped_keys)``.

    Dropped: ``num_batches_tracked`` counters, mmaction2's ``data_preprocessor.*`` buffers and TPN's
    training-only auxiliary head (mmaction2's ``neck.aux_head.*``, the TPN repo's ``necks.aux_head.*``).
    The rest of a TPN neck becomes tpn50's ``neck.*``, so a TPN checkpoint loaded into a slow-only
    backbone fails naming tpn50 instead of running without the neck its classifier was trained on. Keys
    that match no rule are kept unchanged, so that :func:`load_into` reports them as unexpected instead
    of hiding them.
    """
    rules = () if layout in IDENTITY_LAYOUTS else _rules(layout, to_canonical=True)
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state.items():
        if _DROP.fullmatch(key):
            dropped.append(key)
            continue
        out[_rename(key, rules) or key] = value
    return out, dropped


def from_canonical(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_canonical` (counters included, so files look like the real thing)."""
    if layout in IDENTITY_LAYOUTS:
        return dict(state)
    if layout not in _TEMPLATES:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    rules = _rules(layout, to_canonical=False)
    out, unknown = {}, []
    for key, value in state.items():
        new = _rename(key, rules)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} keys are not canonical ResNet3d names ({_few(unknown)}); pass model.state_dict() "
            "of a sfc_deploy ResNet3d"
        )
    return out


# ---------------------------------------------------------------------------------------------- load


def load_canonical_state_dict(
    path: str | Path, *, trust: bool = False, backbone: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read any supported checkpoint and return its weights under canonical names.

    Args:
        path: ``.pyth``/``.pth``/``.pt``/``.ckpt`` (torch.save) or ``.safetensors``.
        trust: allow full unpickling when weights-only loading refuses the file. Unpickling can run
            arbitrary code, so this is never the default.
        backbone: the backbone the caller will load into. A converted ``.safetensors`` file records the
            backbone it was converted for; a different name (e.g. slow16x4 for a slow8x8 file, whose
            shapes are identical) loads, with a warning, since frames x stride may not match training.

    Returns:
        ``(state, meta)``: ``meta`` has ``layout``, ``dropped`` (keys removed, see :func:`to_canonical`)
        and, where the file says, ``class_names``, ``preprocess`` (a :class:`Preprocess`: mmaction2/TPN
        imply 0-255 input, PyTorchVideo/PySlowFast 0-1), ``config`` and ``source_layout``.

    Raises:
        CheckpointError: missing file, not a checkpoint, unsafe pickle without ``trust``, unknown layout.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a weights file; pass the .pyth/.pth/.pt/.safetensors file")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; check the path (sfc-deploy never downloads weights: fetch the "
            ".pyth/.pth/.safetensors file first)"
        )
    if path.suffix == ".safetensors":
        raw, meta = _read_safetensors(path)
    else:
        raw, meta = _unwrap(_torch_load(path, trust=trust), path)
    layout = meta.get("layout") or detect_layout(raw, source=f"{path} (loading {backbone})" if backbone else str(path))
    state, dropped = to_canonical(raw, "plain" if layout == "safetensors" else layout)
    meta = {"layout": layout, **meta, "dropped": dropped}
    if layout in ("mmaction2", "tpn"):
        meta["preprocess"] = _mmaction2_preprocess(raw)
    elif layout in ("pytorchvideo", "pyslowfast"):
        meta["preprocess"] = Preprocess()
    names, fc = meta.get("class_names"), state.get("fc.weight")
    if names and fc is not None and len(names) != fc.shape[0]:
        raise CheckpointError(
            f"{path} names {len(names)} classes but its classifier has {fc.shape[0]} outputs; fix the "
            "class list in the checkpoint metadata"
        )
    config = meta.get("config")
    if backbone is not None and config is not None and config.name != backbone:
        warnings.warn(
            f"{path} was converted for backbone {config.name}, loading it as {backbone}; check that the "
            "clip length and stride match what the weights were trained with",
            stacklevel=2,
        )
    return state, meta


def _torch_load(path: Path, *, trust: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        try:
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # legacy (non-zip) files cannot be listed; the error names the first global
            unsafe = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))[:1]
        if not unsafe:  # nothing unsafe to trust: the file itself is not a torch.save checkpoint
            first = _first_line(exc)
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint ({first}); expected a file written by torch.save "
                "(.pyth/.pth/.pt/.ckpt) or a .safetensors file"
            ) from None
        if not trust:
            raise CheckpointError(
                f"{path} pickles objects other than tensors ({', '.join(unsafe)}) and unpickling "
                "them can run code, so weights-only loading refused it; if you trust its origin pass "
                "--trust-checkpoint, then `sfc-deploy convert` it to .safetensors once"
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"{path} could not be unpickled even with trust ({_first_line(exc)}); the classes it pickles must "
            "be importable here, or re-save only model.state_dict() where they are"
        ) from None


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Find the state dict inside the container and any class names the container records."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    inner: Any = obj
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj.get(key), dict):
            inner = obj[key]
            break
    state = {str(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(
            f"{path} holds no tensors (top-level keys: {_few(list(obj))}); expected a state dict, bare or "
            "under 'model_state'/'state_dict'"
        )
    if all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    meta: dict[str, Any] = {}
    info = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    dataset_meta = info.get("dataset_meta") if isinstance(info.get("dataset_meta"), dict) else {}
    names = obj.get("class_names") or dataset_meta.get("classes") or info.get("CLASSES")
    if isinstance(names, (list, tuple)) and names:
        meta["class_names"] = [str(n) for n in names]
    return state, meta


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(exc)})") from None
    fmt = metadata.get("sfc_deploy_format")
    if fmt is None:  # someone else's safetensors: the keys tell the layout
        return state, {}
    if fmt != FORMAT:
        raise CheckpointError(f"{path} is in format {fmt!r}, this sfc-deploy reads {FORMAT!r}; upgrade sfc-deploy")
    config = BackboneConfig.from_dict(json.loads(metadata["backbone_config"]))
    meta: dict[str, Any] = {
        "layout": "safetensors",
        "source_layout": metadata.get("source_layout"),
        "config": config,
        "preprocess": config.preprocess,
    }
    if config.class_names:
        meta["class_names"] = list(config.class_names)
    return state, meta


def _mmaction2_preprocess(raw: dict[str, torch.Tensor]) -> Preprocess:
    """mmaction2 models take 0-255 RGB; use the mean/std buffers when the file carries them."""
    mean, std = raw.get("data_preprocessor.mean"), raw.get("data_preprocessor.std")
    if mean is None or std is None or mean.numel() != 3 or std.numel() != 3:
        return Preprocess.mmaction2()
    as3 = lambda t: tuple(round(float(v), 4) for v in t.flatten())  # noqa: E731  float32 -> the decimal in configs
    return Preprocess(convention="mmaction2", scale=1.0, mean=as3(mean), std=as3(std))


# ------------------------------------------------------------------------------------- match a model


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load canonical weights strictly (``num_batches_tracked`` aside), or say exactly why not.

    Strict because a silently half-loaded backbone still runs and just classifies badly.

    Raises:
        CheckpointError: one line with the missing/unexpected/mis-shaped keys and, by comparing
            shapes with every registered backbone, the ``--backbone`` the checkpoint looks like.
    """
    expected = _shapes(model.state_dict())
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    check_state(state, expected, source=source, backbone=name)
    model.load_state_dict({k: v for k, v in state.items() if not _is_counter(k)}, strict=False)


def check_state(
    state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], *, source: str, backbone: str
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes ``expected``."""
    got = _shapes(state)
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys missing ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
    if wrong:
        shown = ", ".join(f"{k}: checkpoint {got[k]} vs model {expected[k]}" for k in wrong[:3])
        parts.append(f"{len(wrong)} shape mismatches ({shown}{', ...' if len(wrong) > 3 else ''})")
    if not (missing or unexpected) and all(k.startswith("fc.") for k in wrong):
        rows = got["fc.weight"][0]
        hint = (
            f"only the classifier differs: the checkpoint has {rows} classes; drop --num-classes (the classifier "
            "is then sized from the checkpoint) or pass the checkpoint trained for your classes"
        )
    else:
        hint = _suggest(got, backbone)
    raise CheckpointError(f"checkpoint {source} does not fit backbone {backbone}: {'; '.join(parts)}; {hint}")


def _suggest(got: dict[str, tuple[int, ...]], requested: str | None = None) -> str:
    """Name the registered backbone(s) whose canonical shapes the checkpoint has, and the fix."""
    registered = _registered_shapes(tuple(list_backbones()))
    scores = {name: _agreement(got, shapes) for name, shapes in registered.items()}
    exact = [name for name, (same, total) in scores.items() if same == total == len(got)]
    if len(exact) > 1:
        return (
            f"the keys and shapes match {', '.join(exact)} (identical shapes: they differ only in frames x stride, "
            "so pass the --backbone the checkpoint was trained with)"
        )
    if exact:
        return f"the keys and shapes match {exact[0]}: pass --backbone {exact[0]}"
    best = max(scores, key=lambda n: scores[n][0])
    same, total = scores[best]
    if same == 0:
        return (f"no registered backbone ({', '.join(list_backbones())}) has these shapes; pass a checkpoint of one "
                "of them or register a backbone with these shapes")
    if best == requested:
        return (f"it is closest to {best} itself ({same} of {total} tensors match), so it was trained with another "
                f"configuration of {best} (widths, depths, kernels); pass a checkpoint of this {best}, or register "
                "a backbone with the checkpoint's configuration")
    return f"closest registered backbone: {best} ({same} of {total} tensors match); try --backbone {best}"


def _agreement(got: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """Tensors with the same shape (the classifier compared by input width only), and the total."""
    same = sum(
        k in got and (got[k][1:] == s[1:] if k == "fc.weight" else k == "fc.bias" or got[k] == s)
        for k, s in shapes.items()
    )
    return same, len(shapes)


@lru_cache(maxsize=4)
def _registered_shapes(names: tuple[str, ...]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Canonical shapes of the registered backbones, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return {name: _shapes(build_backbone(get_config(name)).state_dict()) for name in names}


# ---------------------------------------------------------------------------------------------- save


def save_in_layout(
    state: dict[str, torch.Tensor], path: str | Path, layout: str, *, config: BackboneConfig | None = None
) -> Path:
    """Write canonical weights in a toolbox's own layout and container (the inverse of loading).

    Used by the tests to produce realistic files of every layout, and by users taking weights back to
    their toolbox. Containers hold only tensors, dicts, lists, strings and ints, so the files load
    with ``weights_only=True``. mmaction2 files get ``data_preprocessor.mean/std`` and TPN files a
    ``necks.aux_head`` head, as real ones do, so the loader's dropping is exercised.

    Args:
        state: canonical state dict (e.g. ``model.state_dict()``).
        path: destination; written atomically.
        layout: one of :data:`LAYOUTS`.
        config: recorded where the container has a place for it (class names, frames, preprocessing).
    """
    mapped = from_canonical(state, layout)
    if "fc.weight" not in state:
        raise CheckpointError("the state dict has no classifier (fc.weight); pass a whole ResNet3d's state_dict()")
    classes = int(state["fc.weight"].shape[0])
    names = list(config.class_names) if config is not None and config.class_names else None
    obj: dict[str, Any]
    if layout == "pytorchvideo":
        obj = {"model_state": mapped}
    elif layout == "pyslowfast":
        obj = {
            "epoch": 0,
            "model_state": mapped,
            "optimizer_state": {"state": {}, "param_groups": []},
            "cfg": _slowfast_cfg(config, classes),
        }
    elif layout == "mmaction2":
        pre = config.preprocess if config is not None else Preprocess.mmaction2()
        # mmaction2 normalises 0-255 pixels: express our mean/std in those units.
        mapped["data_preprocessor.mean"] = torch.tensor([m / pre.scale for m in pre.mean]).view(3, 1, 1, 1)
        mapped["data_preprocessor.std"] = torch.tensor([s / pre.scale for s in pre.std]).view(3, 1, 1, 1)
        meta: dict[str, Any] = {"experiment_name": "sfc_deploy_export"}
        if names:
            meta["dataset_meta"] = {"classes": names}
        obj = {"state_dict": mapped, "meta": meta}
    elif layout == "tpn":
        width = 2 * int(state["res4.0.conv_c.weight"].shape[0])  # TPN's aux head sits on res4, doubles it
        mapped["necks.aux_head.convs.bn.weight"] = torch.ones(width)
        mapped["necks.aux_head.fc.weight"] = torch.zeros(classes, width)
        mapped["necks.aux_head.fc.bias"] = torch.zeros(classes)
        obj = {"state_dict": mapped}
    else:
        obj = mapped
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
    return path


def _slowfast_cfg(config: BackboneConfig | None, classes: int) -> str:
    """A PySlowFast ``cfg.dump()``-style YAML string (a string, so weights-only loading accepts it)."""
    lines = ["MODEL:", "  ARCH: slow", "  MODEL_NAME: ResNet", f"  NUM_CLASSES: {classes}", "RESNET:", "  DEPTH: 50"]
    if config is not None:
        lines += ["DATA:", f"  NUM_FRAMES: {config.frames}", f"  SAMPLING_RATE: {config.stride}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote, for the CLI to report."""

    path: Path
    layout: str
    config: BackboneConfig
    dropped: tuple[str, ...]


def convert(checkpoint: str | Path, out_path: str | Path, *, backbone: str, trust: bool = False) -> ConvertResult:
    """Re-save any supported checkpoint as canonical safetensors with its config in the metadata.

    Converting once means later loads need no unpickling (no ``--trust-checkpoint``) and no layout
    guessing, and the file says which backbone, classes and preprocessing it belongs to. The weights
    are checked against ``backbone`` first, so a wrong ``--backbone`` fails here, not at deploy time.
    """
    from safetensors.torch import save_file

    state, meta = load_canonical_state_dict(checkpoint, trust=trust, backbone=backbone)
    config = get_config(backbone)
    if "fc.weight" in state:
        config = config.replace(num_classes=int(state["fc.weight"].shape[0]))
    if meta.get("class_names"):
        config = config.replace(class_names=tuple(meta["class_names"]))
    if meta.get("preprocess") is not None:
        config = config.replace(preprocess=meta["preprocess"])
    with torch.device("meta"):  # shapes only: no memory for full-size weights
        expected = _shapes(build_backbone(config).state_dict())
    check_state(state, expected, source=str(checkpoint), backbone=backbone)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if not _is_counter(k)}
    source_layout = meta.get("source_layout") or meta["layout"]
    metadata = {"sfc_deploy_format": FORMAT, "backbone_config": config.to_json(), "source_layout": source_layout}
    out = Path(out_path)
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return ConvertResult(out, meta["layout"], config, tuple(meta["dropped"]))


def summarise_dropped(keys: list[str] | tuple[str, ...]) -> list[str]:
    """Group dropped keys into patterns (``*.num_batches_tracked``, ``necks.aux_head.*``) for a report."""
    groups: dict[str, None] = {}
    for key in keys:
        parts = key.split(".")
        group = ".".join(parts[: 2 if len(parts) > 2 else 1]) + ".*"
        groups["*.num_batches_tracked" if _is_counter(key) else group] = None
    return list(groups)


# ------------------------------------------------------------------------------------------- helpers


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not _is_counter(k)}


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception (torch's weights-only errors bury it under advice)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
