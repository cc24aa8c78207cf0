"""The four exportable parts of an SFC deployment (:mod:`sfc_deploy.models.parts`) with their I/O contracts.

``head``  video  (batch, 3, time, H, W)         -> f_head (batch, C, time, h, w)
``sfc``   f_head (batch, C, time, h, w)         -> f_sfc (batch, C, k, h, w), attention (batch, k, time)
``tail``  f_sfc  (batch, C, k, h, w)            -> logits (batch, classes)
``clip``  clip   (batch, 3, frames, crop, crop) -> logits (batch, classes)   (dense baseline)

Batch and time are dynamic wherever the graph allows it, so one export serves videos of any
length; the custom-op SFC graph is the exception (its TopK ``k`` is an attribute, so its time
axis is fixed at export).

:func:`build_sfc_pieces` adds the SFC part's weighted steps (:data:`~sfc_deploy.models.parts.SFC_PIECES`),
which a runtime serving graphs streams over time; their time axes are dynamic too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sfc_deploy.common.precision import DTYPE_NAMES
from sfc_deploy.export.manifest import TensorSpec
from sfc_deploy.models.parts import PARTS, SFC_PIECES, ClipPart, HeadPart, SFCPart, TailPart, sfc_piece_modules
from sfc_deploy.models.sfc import compressed_length
from sfc_deploy.models.sfc_model import SFCModel

MAX_BATCH = 256
MAX_TIME = 8192


@dataclass
class Part:
    """One exportable module with its I/O specs, example inputs and dynamic dims."""

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example: tuple[torch.Tensor, ...]
    dynamic: dict[str, dict[int, torch.export.Dim]]


def min_time(tau: float) -> int:
    """Smallest time length whose compressed length is >= 2 (a dim of 1 would be specialised)."""
    t = 2
    while compressed_length(t, tau) < 2:
        t += 1
    return t


def build_parts(
    model: SFCModel,
    *,
    frames: int,
    size: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    static_time: bool = False,
    example_batch: int = 2,
) -> dict[str, Part]:
    """The four parts of ``model`` as exportable modules.

    Args:
        frames: time length of the example video (sampled frames); the fixed time of a
            ``static_time`` export.
        size: (H, W) of the frames SFC reads; fixed in every graph.
        dtype: float32 or float16 weights and I/O (the attention softmax stays fp32 inside).
        static_time: fix the time axis (TorchScript traces, the custom-op ONNX graph).
    """
    cfg = model.config
    tau = model.sfc.config.tau
    c = cfg.stage_channels(model.split)
    h, w = size
    fh, fw = _head_hw(model, size)
    # A head with a temporal stride (R(2+1)D) changes the frame rate: SFC and its attention run on the
    # head's time axis, ``head_time`` steps for ``frames`` input frames (named apart from the input's).
    head_frames = cfg.head_frames(frames, model.split)
    ko = compressed_length(head_frames, tau)
    time: int | str = frames if static_time else "time"
    htime: int | str = head_frames if static_time else ("time" if head_frames == frames else "head_time")
    k: int | str = ko if static_time else "k"
    dt = DTYPE_NAMES[dtype]
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    stride = cfg.head_temporal_stride(model.split)
    t_dim = torch.export.Dim("time", min=(min_time(tau) - 1) * stride + 1, max=MAX_TIME)
    ht_dim = t_dim if stride == 1 else torch.export.Dim("head_time", min=min_time(tau), max=MAX_TIME // stride)
    k_dim = torch.export.Dim("k", min=2, max=MAX_TIME)
    crop, clip_frames = cfg.preprocess.crop, cfg.frames
    n = example_batch

    def ex(*shape):
        return torch.randn(*shape).to(dtype)

    dyn_time = {} if static_time else {2: t_dim}
    dyn_head_time = {} if static_time else {2: ht_dim}
    return {
        "head": Part(
            "head",
            HeadPart(model),
            (TensorSpec("video", ("batch", 3, time, h, w), dt),),
            (TensorSpec("f_head", ("batch", c, htime, fh, fw), dt),),
            (ex(n, 3, frames, h, w),),
            {"video": {0: batch, **dyn_time}},
        ),
        "sfc": Part(
            "sfc",
            SFCPart(model),
            (TensorSpec("f_head", ("batch", c, htime, fh, fw), dt),),
            (
                TensorSpec("f_sfc", ("batch", c, k, *_value_hw(model, fh, fw)), dt),
                TensorSpec("attention", ("batch", k, htime), "float32"),
            ),
            (ex(n, c, head_frames, fh, fw),),
            {"f_head": {0: batch, **dyn_head_time}},
        ),
        "tail": Part(
            "tail",
            TailPart(model),
            (TensorSpec("f_sfc", ("batch", c, k, *_value_hw(model, fh, fw)), dt),),
            (TensorSpec("logits", ("batch", cfg.num_classes), dt),),
            (ex(n, c, ko, *_value_hw(model, fh, fw)),),
            {"f_sfc": {0: batch, **({} if static_time else {2: k_dim})}},
        ),
        "clip": Part(
            "clip",
            ClipPart(model),
            (TensorSpec("clip", ("batch", 3, clip_frames, crop, crop), dt),),
            (TensorSpec("logits", ("batch", cfg.num_classes), dt),),
            (ex(n, 3, clip_frames, crop, crop),),
            {"clip": {0: batch}},
        ),
    }


def build_sfc_pieces(
    model: SFCModel, *, size: tuple[int, int], dtype: torch.dtype = torch.float32, example_batch: int = 2
) -> dict[str, Part]:
    """The :data:`~sfc_deploy.models.parts.SFC_PIECES` of ``model`` as exportable modules (``size``: as
    in :func:`build_parts`). Time is dynamic in every piece; theta's input is its output's time plus
    the halo, ``halo_time``."""
    sfc = model.sfc
    c = model.config.stage_channels(model.split)
    fh, fw = _head_hw(model, size)
    ah, aw = ((fh + 1) // 2, (fw + 1) // 2) if sfc.abstraction is not None else (fh, fw)
    p = sfc.theta_k.kernel_size[0] // 2
    dt, n, t, k = DTYPE_NAMES[dtype], example_batch, 6, 3
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    time = torch.export.Dim("time", min=2, max=MAX_TIME)
    halo_time = torch.export.Dim("halo_time", min=2 + 2 * p, max=MAX_TIME + 2 * p)
    k_dim = torch.export.Dim("k", min=2, max=MAX_TIME)
    modules = sfc_piece_modules(model, c * ah * aw)

    def spec(name: str, t_name: str, hw: tuple[int, int], dtype_name: str = dt) -> TensorSpec:
        return TensorSpec(name, ("batch", c, t_name, *hw), dtype_name)

    def ex(*shape):
        return torch.randn(*shape).to(dtype)

    theta = {  # name -> (input, output)
        "sfc_theta_q": ("pooled", "q"),
        "sfc_theta_k": ("f_abs", "key"),
    }
    parts = {
        name: Part(name, modules[name], (spec(i, "halo_time", (ah, aw)),), (spec(o, "time", (ah, aw)),),
                   (ex(n, c, t + 2 * p, ah, aw),), {"x": {0: batch, 2: halo_time}})  # keyed by forward()'s argument
        for name, (i, o) in theta.items()
    }
    parts["sfc_normalise"] = Part(
        "sfc_normalise", modules["sfc_normalise"],
        (TensorSpec("logits", ("batch", "k", "time"), "float32"),),
        (TensorSpec("attention", ("batch", "k", "time"), "float32"),),
        (torch.randn(n, k, t),), {"logits": {0: batch, 1: k_dim, 2: time}},
    )
    if "sfc_abs" in modules:
        parts["sfc_abs"] = Part("sfc_abs", modules["sfc_abs"], (spec("f_head", "time", (fh, fw)),),
                                (spec("f_abs", "time", (ah, aw)),), (ex(n, c, t, fh, fw),), {"f_head": {0: batch, 2: time}})
    return {name: parts[name] for name in SFC_PIECES if name in parts}


def _head_hw(model: SFCModel, size: tuple[int, int]) -> tuple[int, int]:
    import copy

    with torch.no_grad():
        meta = copy.deepcopy(model.backbone).to("meta")
        f = meta.forward_head(torch.empty(1, 3, 1, *size, device="meta"), model.split)
    return int(f.shape[3]), int(f.shape[4])


def _value_hw(model: SFCModel, fh: int, fw: int) -> tuple[int, int]:
    """Spatial size of SFC's output: the head's, unless v = F_abs (half resolution)."""
    if model.sfc.config.kqv == "abs_all":
        return (fh + 1) // 2, (fw + 1) // 2
    return fh, fw
