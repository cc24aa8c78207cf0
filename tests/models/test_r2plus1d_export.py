"""R(2+1)D's time axis through the export: the head's output and SFC's input are the head's time
(half the frames after res3), and an ONNX Runtime deployment of r2plus1d_tiny passes verify."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import sfc_deploy
from sfc_deploy.export.parts import build_parts
from sfc_deploy.models import get_config
from sfc_deploy.models.sfc import compressed_length

TINY = "r2plus1d_tiny"


def _tiny_model():
    config = get_config(TINY, num_classes=6)
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    return sfc_deploy.create_model(config, tau=2.0)


def test_part_specs_use_the_head_time_axis() -> None:
    model = _tiny_model()
    dynamic = build_parts(model, frames=9, size=(32, 40), example_batch=1)
    assert dynamic["head"].inputs[0].shape[2] == "time" and dynamic["head"].outputs[0].shape[2] == "head_time"
    assert dynamic["sfc"].inputs[0].shape[2] == "head_time" and dynamic["sfc"].outputs[1].shape == ("batch", "k", "head_time")
    assert dynamic["sfc"].example[0].shape[2] == 5  # 9 frames -> 5 head steps
    static = build_parts(model, frames=9, size=(32, 40), static_time=True, example_batch=1)
    assert static["head"].outputs[0].shape[2] == 5 and static["sfc"].inputs[0].shape[2] == 5
    assert static["tail"].example[0].shape[2] == compressed_length(5, 2.0) == 3  # k from the head's 5 steps, not 9 frames
    with torch.no_grad():  # the head module really produces what its spec says
        assert dynamic["head"].module(dynamic["head"].example[0]).shape[2] == 5


@pytest.mark.slow
def test_onnx_export_of_r2plus1d_passes_verify(tmp_path: Path, sfc_one_thread) -> None:
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.export.manifest import load_manifest
    from sfc_deploy.runtime import load
    from sfc_deploy.verify import verify

    out = tmp_path / "export"
    options = ExportOptions(formats=("onnx",), precisions=("fp32",), parts=("head", "sfc", "tail", "clip"),
                            frames=16, size=(32, 40), raw_frames=32)
    export_model(_tiny_model(), out, options)
    report = verify(load_manifest(out), runtimes=["onnxruntime"], dense_clips=1)
    assert report.passed and len(report.checks) > 10, report.to_dict()
    checked = {c.part for c in report.checks}
    assert {"head", "sfc", "tail", "clip", "sfc_pipeline", "dense_pipeline"} <= checked
    with load(out, "onnxruntime", sfc_variant="custom") as dep:  # fixed time: 8 head steps = 16 frames
        assert dep.input_spec.frames == 16
