"""Backbones registered by name, in the style of timm's ``_registry``.

A backbone is a function returning a :class:`BackboneConfig`; :mod:`sfc_deploy.models.factory`
builds modules from it (timm's ``_factory``), and checkpoint import looks shapes up here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from torch import nn

from sfc_deploy.errors import ConfigError, UnknownBackboneError
from sfc_deploy.models.config import BackboneConfig, Preprocess
from sfc_deploy.models.r2plus1d import R2Plus1D
from sfc_deploy.models.resnet3d import ResNet3d
from sfc_deploy.models.tpn import TPN

_REGISTRY: dict[str, Callable[[], BackboneConfig]] = {}


def register_backbone(fn: Callable[[], BackboneConfig]) -> Callable[[], BackboneConfig]:
    """Register a config factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


@register_backbone
def slow8x8() -> BackboneConfig:
    """Slow-only I3D R50, 8 frames at stride 8 (paper Table 2 row 1)."""
    return BackboneConfig(name="slow8x8", frames=8, stride=8)


@register_backbone
def slow16x4() -> BackboneConfig:
    """Slow-only I3D R50, 16 frames at stride 4."""
    return BackboneConfig(name="slow16x4", frames=16, stride=4)


@register_backbone
def slow32x2() -> BackboneConfig:
    """Slow-only I3D R50, 32 frames at stride 2."""
    return BackboneConfig(name="slow32x2", frames=32, stride=2)


#: the widths of every ``*_tiny`` backbone: 1/8 of the R50 ones (the TPN neck's grouped convs still divide)
TINY_WIDTHS = {"stem_channels": 8, "widths": (32, 64, 128, 256), "mids": (8, 16, 32, 64)}


@register_backbone
def slow8x8_tiny() -> BackboneConfig:
    """The slow8x8 topology at 1/8 of the widths: for tests and the CPU training demo."""
    return BackboneConfig(name="slow8x8_tiny", frames=8, stride=8, **TINY_WIDTHS)


@register_backbone
def tpn50() -> BackboneConfig:
    """TPN on slow-only R50 8x8, mmaction2's tpn_slowonly_r50 (paper Table 2 row 4); 0-255 input."""
    return BackboneConfig(name="tpn50", family="tpn", frames=8, stride=8, preprocess=Preprocess.mmaction2())


@register_backbone
def tpn50_tiny() -> BackboneConfig:
    """The tpn50 topology at 1/8 of the widths (the neck's grouped convs still divide): for tests."""
    return BackboneConfig(name="tpn50_tiny", family="tpn", frames=8, stride=8, preprocess=Preprocess.mmaction2(),
                          **TINY_WIDTHS)


#: IG-65M / VMZ input: 0-1 pixels, Kinetics mean/std, short side 128, 112x112 crops (VMZ and the
#: ig65m-pytorch port: resize to 128x171, centre crop 112).
IG65M_PREPROCESS = Preprocess(
    convention="vmz",
    mean=(0.43216, 0.394666, 0.37645),
    std=(0.22803, 0.22145, 0.216989),
    short_side=128,
    crop=112,
)


@register_backbone
def r2plus1d_152() -> BackboneConfig:
    """R(2+1)D-152 of VMZ pre-trained on IG-65M, 32-frame clips at 112x112 (paper Table 2 row 5).

    Clips of 32 frames at stride 2 cover 64 raw frames, the input the paper's Table 2 gives every
    backbone ("64x30"); layer2..layer4 halve time, so SFC after res3 sees half the sampled frames.
    """
    return BackboneConfig(
        name="r2plus1d_152",
        family="r2plus1d",
        frames=32,
        stride=2,
        depths=(3, 8, 36, 3),
        temporal_kernels=(3, 3, 3, 3),
        temporal_strides=(1, 2, 2, 2),
        stem_temporal_kernel=3,
        preprocess=IG65M_PREPROCESS,
    )


@register_backbone
def r2plus1d_tiny() -> BackboneConfig:
    """The R(2+1)D-152 block design (stem, (2+1)D bottlenecks, time strides) at 1/8 of the widths and
    two blocks per stage, 8-frame clips: for tests."""
    return dataclasses.replace(r2plus1d_152(), name="r2plus1d_tiny", frames=8, depths=(2, 2, 2, 2), **TINY_WIDTHS)


#: architecture family -> module class; every class is built as ``cls(config, split=...)``
FAMILIES: dict[str, type[nn.Module]] = {"slowonly": ResNet3d, "tpn": TPN, "r2plus1d": R2Plus1D}


def build_backbone(config: BackboneConfig, *, split: str = "res3") -> nn.Module:
    """The (randomly initialised) module of ``config``'s family: the one place a config becomes a module."""
    if config.family not in FAMILIES:
        raise ConfigError(
            f"backbone {config.name!r} has family {config.family!r}, which this sfc-deploy cannot build "
            f"(known: {', '.join(sorted(FAMILIES))}); upgrade sfc-deploy or re-export with this version"
        )
    return FAMILIES[config.family](config, split=split)


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, *, num_classes: int | None = None) -> BackboneConfig:
    """The registered config of a backbone; an unknown name fails with the close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; {hint}available: {', '.join(list_backbones())}"
        )
    config = _REGISTRY[name]()
    if num_classes is not None:
        config = config.replace(num_classes=num_classes)
    return config
