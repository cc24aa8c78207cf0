"""SFC streamed on ONNX Runtime from its exported pieces equals the unstreamed PyTorch SFC (issue 15 item 6).

Real ONNX Runtime sessions on real exported files: the shared ``sfc_export_onnx`` fixture (the SFC part
with its pieces) in the default run; the whole model (head, SFC, tail) in ``slow``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.export.parts import SFC_PIECES
from sfc_deploy.runtime import load
from sfc_deploy.verify import verify

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


def test_the_export_records_the_pieces_ort_serves(sfc_export_onnx: Path) -> None:
    manifest = load_manifest(sfc_export_onnx)
    for piece in SFC_PIECES:
        written = manifest.find(piece, "onnx", "fp32", "default")
        served = manifest.find(piece, "onnx", "fp32", "ort")
        assert served.derived_from == written.file == f"{piece}.fp32.onnx"
    assert manifest.parts == ["sfc"]  # the pieces are artifacts of the sfc part, not parts of their own
    theta = manifest.find("sfc_theta_k", "onnx", "fp32", "ort")
    assert theta.inputs[0].shape[2] == "halo_time" and theta.outputs[0].shape[2] == "time"


def test_streamed_ort_sfc_equals_unstreamed_pytorch_sfc(sfc_export_onnx: Path, sfc_tiny, streamed_sfc_matches) -> None:
    sfc = sfc_tiny.model().sfc.eval()
    torch.manual_seed(2)
    with load(sfc_export_onnx, runtime="onnxruntime", threads=1) as dep:
        stream = dep.sfc_stream()
        assert stream is not None and set(stream.runners) == set(SFC_PIECES)
        streamed_sfc_matches(stream, sfc, ((8, 3), (13, 4), (5, 2), (3, 8)))  # uneven chunks, one chunk, a last chunk of 1


def test_verify_checks_each_piece_against_pytorch(sfc_export_onnx: Path) -> None:
    report = verify(load_manifest(sfc_export_onnx), runtimes=["onnxruntime"], graphs=["portable"], dense_clips=1)
    checks = {c.part: c for c in report.checks}
    for piece in SFC_PIECES:
        assert checks[piece].passed and checks[piece].input == "random", checks[piece]
        assert checks[piece].runtime == "onnxruntime" and checks[piece].max_ref > 0
    assert report.passed


def test_an_export_without_the_pieces_runs_the_whole_sfc_graph(sfc_export_onnx: Path, without_sfc_pieces) -> None:
    old = without_sfc_pieces(sfc_export_onnx)
    with load(old, runtime="onnxruntime", head_chunk=3) as dep:
        assert dep.sfc_stream() is None
    report = verify(load_manifest(old), runtimes=["onnxruntime"], graphs=["portable"], dense_clips=1)
    assert report.passed and not any(c.part in SFC_PIECES for c in report.checks)


@pytest.fixture(scope="module")
def whole_export(sfc_one_thread, sfc_tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sfc_tiny.export(tmp_path_factory.mktemp("sfc_stream_ort") / "export", ("onnx",),
                           parts=("head", "sfc", "tail"))


@pytest.mark.slow
def test_ort_deployment_streams_head_and_sfc_together(whole_export: Path, sfc_tiny, same, whole_sfc_calls) -> None:
    model = sfc_tiny.model()
    torch.manual_seed(4)
    frames = torch.randn(1, 3, 11, *sfc_tiny.size)
    with torch.no_grad():
        logits, attention = model.forward_with_attention(frames)
    with load(whole_export, runtime="onnxruntime", threads=1, head_chunk=3, stream_sfc_from=11) as dep:  # chunks 3, 3, 3, 2
        pipe = dep.sfc_pipeline()
        assert pipe.streams_sfc and pipe.streams_sfc_at(11) and not pipe.streams_sfc_at(10)
        got = dep.predict_with_attention(frames)
        same(got[0], logits)
        same(got[1], attention)
        seen = whole_sfc_calls(dep)
        dep.predict(frames)
        assert not seen  # 11 frames, streamed: the whole-video graph did not run
        with torch.no_grad():
            short = model.forward_with_attention(frames[:, :, :10])[0]
        same(dep.predict(frames[:, :, :10]), short)
        assert len(seen) == 1  # shorter than stream_sfc_from: the whole-video graph ran, on the joined head chunks
    with load(whole_export, runtime="onnxruntime", threads=1, head_chunk=3) as dep:  # the default: from 72 frames
        assert not dep.sfc_pipeline().streams_sfc_at(11)
    with load(whole_export, runtime="onnxruntime", threads=1) as dep:  # no head_chunk: the whole-video graph
        assert not dep.sfc_pipeline().streams_sfc
        same(dep.predict(frames), logits)


@pytest.mark.slow
def test_verify_checks_the_streamed_pipeline_end_to_end(whole_export: Path) -> None:
    report = verify(load_manifest(whole_export), runtimes=["onnxruntime"], graphs=["portable"], dense_clips=1)
    streamed = [c for c in report.checks if c.input.startswith("synthetic[streamed")]
    assert {c.part for c in streamed} == {"sfc_pipeline", "sfc_pipeline.attention"}
    assert all(c.passed for c in streamed) and report.passed
    frames = load_manifest(whole_export).input.frames
    assert streamed[0].input == f"synthetic[streamed, head_chunk={max(2, math.ceil(frames / 3))}]"
