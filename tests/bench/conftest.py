"""Fixtures of the bench tests: one tiny export, shared by the whole session.

The backbone is ``slow8x8_tiny`` with 32x32 crops and 32x40 frames, exported to TorchScript
only (the fastest export; the ``pytorch`` and ``torchscript`` runtimes serve it), so that building
it costs seconds and a dense video milliseconds. ONNX Runtime runs the same worker code; its
export costs too much CPU for the suite, so it is exercised by ``benchmarks/speed``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sfc_deploy.export.exporter import ExportOptions, export_model
from sfc_deploy.models import create_model, get_config

TINY_SIZE = (32, 40)
TINY_RAW_FRAMES = 64  # -> 8 sampled frames at stride 8


def tiny_model():
    config = get_config("slow8x8_tiny")
    config = dataclasses.replace(config, preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    return create_model(config, tau=2.0, split="res3", num_classes=5)


def export_tiny(out: Path, formats: tuple[str, ...] = ("torchscript",)) -> Path:
    export_model(
        tiny_model(),
        out,
        ExportOptions(formats=formats, frames=TINY_RAW_FRAMES // 8, size=TINY_SIZE, raw_frames=TINY_RAW_FRAMES),
    )
    return out


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """A TorchScript export of the tiny model (runtimes ``pytorch`` and ``torchscript``)."""
    return export_tiny(tmp_path_factory.mktemp("bench") / "tiny")
