"""SFC streamed on TorchScript from its traced pieces equals the unstreamed PyTorch model.

The pieces are traced at one time length (:func:`~sfc_deploy.export.parts.build_sfc_pieces`'s example)
and must run at any other: every test here feeds them other lengths. Real traces, real runners: the
shared ``sfc_export_ts`` fixture (all four parts with SFC's pieces, fp32 and fp16). Verify's checks of
the pieces and of the streamed pipeline on it: ``tests/export/test_verify.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.export.parts import SFC_PIECES
from sfc_deploy.runtime import load
from sfc_deploy.verify import verify

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


def test_streamed_torchscript_sfc_equals_unstreamed_pytorch_sfc(sfc_export_ts: Path, sfc_tiny,
                                                                 streamed_sfc_matches) -> None:
    sfc = sfc_tiny.model().sfc.eval()
    torch.manual_seed(2)
    with load(sfc_export_ts, runtime="torchscript", threads=1) as dep:
        stream = dep.sfc_stream()
        assert stream is not None and set(stream.runners) == set(SFC_PIECES)
        # uneven, one chunk, a last chunk of 1, long
        streamed_sfc_matches(stream, sfc, ((8, 3), (13, 4), (5, 2), (3, 8), (40, 16)))


def test_torchscript_deployment_streams_a_video_its_sfc_graph_cannot_take(sfc_export_ts: Path, same,
                                                                          streams_a_long_video) -> None:
    """The whole-video SFC trace is fixed at 8 frames; streamed, a 19-frame video runs, as PyTorch does."""
    frames, logits = streams_a_long_video(sfc_export_ts, "torchscript")
    with load(sfc_export_ts, runtime="torchscript", precision="fp16", head_chunk=5, stream_sfc_from=9) as dep:
        same(dep.predict(frames), logits, "fp16")


def test_a_torchscript_export_without_the_pieces_runs_the_whole_sfc_graph(sfc_export_ts: Path, sfc_tiny, same,
                                                                          without_sfc_pieces) -> None:
    old = without_sfc_pieces(sfc_export_ts)
    frames = torch.randn(1, 3, 8, *sfc_tiny.size)
    with torch.no_grad():
        want = sfc_tiny.model()(frames)
    with load(old, runtime="torchscript", threads=1, head_chunk=3, stream_sfc_from=0) as dep:
        assert dep.sfc_stream() is None and not dep.sfc_pipeline().streams_sfc
        same(dep.predict(frames), want)
    report = verify(load_manifest(old), precisions=["fp32"], dense_clips=1)
    assert report.passed and not any(c.part in SFC_PIECES or "streamed" in c.input for c in report.checks)
