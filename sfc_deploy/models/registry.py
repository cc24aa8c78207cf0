"""Backbones registered by name, in the style of timm's ``_registry``.

A backbone is a function returning a :class:`BackboneConfig`; :mod:`sfc_deploy.models.factory`
builds modules from it (timm's ``_factory``), and checkpoint import looks shapes up here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from sfc_deploy.errors import UnknownBackboneError
from sfc_deploy.models.config import BackboneConfig

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


@register_backbone
def slow8x8_tiny() -> BackboneConfig:
    """The slow8x8 topology at 1/8 of the widths: for tests and the CPU training demo."""
    return BackboneConfig(
        name="slow8x8_tiny",
        frames=8,
        stride=8,
        stem_channels=8,
        widths=(32, 64, 128, 256),
        mids=(8, 16, 32, 64),
    )


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
