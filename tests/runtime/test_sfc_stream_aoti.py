"""SFC streamed on AOTInductor from its compiled pieces equals the unstreamed PyTorch model.

The pieces are compiled with a dynamic time axis from one example length
(:func:`~sfc_deploy.export.parts.build_sfc_pieces`) and must run at any other, a one-frame last chunk
included: every test here feeds them other lengths. Real packages, real runners: the shared
``sfc_export_aoti`` fixture (all four parts with SFC's pieces, fp32), whose compilation takes minutes on
2 cores, so these tests are ``slow`` (``pytest -m slow tests/runtime/test_sfc_stream_aoti.py``). Verify's
checks of the pieces and of the streamed pipeline on it: ``tests/export/test_aoti.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.errors import ArtifactError
from sfc_deploy.export.parts import SFC_PIECES
from sfc_deploy.runtime import load
from sfc_deploy.runtime.aoti_runner import AOTIRunner

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sfc_one_thread")]


def test_streamed_aoti_sfc_equals_unstreamed_pytorch_sfc(sfc_export_aoti: Path, sfc_tiny, streamed_sfc_matches) -> None:
    sfc = sfc_tiny.model().sfc.eval()
    torch.manual_seed(2)
    with load(sfc_export_aoti, runtime="aoti", threads=1) as dep:
        stream = dep.sfc_stream()
        assert stream is not None and set(stream.runners) == set(SFC_PIECES)
        assert all(isinstance(r, AOTIRunner) for r in stream.runners.values())  # compiled packages, not a fallback
        # uneven, one chunk, a last chunk of 1, long; batches of 2 and 1
        streamed_sfc_matches(stream, sfc, ((8, 3), (13, 4), (5, 2), (3, 8), (40, 16)), batches=(2, 1))


def test_aoti_deployment_streams_a_video_its_sfc_package_cannot_take(sfc_export_aoti: Path,
                                                                     streams_a_long_video) -> None:
    """The whole-video SFC package is specialised to 8 frames; streamed, a 19-frame video runs, as PyTorch does."""
    frames, _ = streams_a_long_video(sfc_export_aoti, "aoti")
    with load(sfc_export_aoti, runtime="aoti", threads=1) as whole_only:
        with pytest.raises(ArtifactError, match="axis 2 must be 8"):  # what the streamed path avoids
            whole_only.predict(frames)
