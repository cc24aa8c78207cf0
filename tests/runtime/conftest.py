"""Checks shared by the tests of SFC streamed on exported pieces (ONNX Runtime, TorchScript, AOTInductor)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sfc_deploy.export.parts import SFC_PIECES
from sfc_deploy.runtime import load
from sfc_deploy.verify import compare


def _same(got: torch.Tensor, want: torch.Tensor, precision: str = "fp32") -> None:
    assert got.shape == want.shape
    stats = compare(got, want, precision)
    assert stats["passed"], stats


@pytest.fixture
def same() -> Callable[..., None]:
    """``same(got, want, precision="fp32")``: equal shapes, values within verify's tolerance for ``precision``."""
    return _same


@pytest.fixture
def streamed_sfc_matches() -> Callable[..., None]:
    """``check(stream, sfc, cases, batches=(2,))``: for each (time, chunk) of ``cases`` and each batch
    size, random head features of 32x40 frames streamed in chunks through ``stream`` (a
    :class:`~sfc_deploy.runtime.sfc_stream.StreamedSFC`) give ``sfc``'s output and attention."""

    def check(stream, sfc: torch.nn.Module, cases, batches=(2,)) -> None:
        for t, chunk in cases:
            for n in batches:
                f_head = torch.randn(n, 64, t, 4, 5)  # the head output of 32x40 frames
                with torch.no_grad():
                    want = sfc(f_head, return_attention=True)
                got = stream(iter(f_head.split(chunk, dim=2)), chunk=chunk)
                for g, w in zip(got, want):
                    _same(g, w)

    return check


@pytest.fixture
def without_sfc_pieces(tmp_path: Path) -> Callable[[Path], Path]:
    """``copy(export)``: a copy of ``export`` whose manifest lists no SFC pieces (an export made before them)."""

    def copy(export: Path) -> Path:
        old = tmp_path / "old"
        shutil.copytree(export, old)
        manifest = json.loads((old / "manifest.json").read_text())
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a["part"] not in SFC_PIECES]
        (old / "manifest.json").write_text(json.dumps(manifest))
        return old

    return copy


@pytest.fixture
def whole_sfc_calls() -> Callable[..., list]:
    """``calls(dep)``: a list that records every run of the deployment's whole-video ``sfc`` runner from now on."""

    def watch(dep) -> list:
        seen: list = []
        whole = dep.runner("sfc")
        infer = whole.infer
        whole.infer = lambda feed: seen.append(feed) or infer(feed)
        return seen

    return watch


@pytest.fixture
def streams_a_long_video(sfc_tiny, whole_sfc_calls) -> Callable[[Path, str], tuple[torch.Tensor, torch.Tensor]]:
    """``check(export, runtime)``: loaded to stream SFC from 9 frames on head chunks of 5, the deployment
    gives a 19-frame video PyTorch's logits and attention without running its whole-video ``sfc``
    artifact, and an 8-frame video PyTorch's logits by running that artifact once on the joined head
    chunks. Returns the 19-frame video and PyTorch's logits for it."""

    def check(export: Path, runtime: str) -> tuple[torch.Tensor, torch.Tensor]:
        model = sfc_tiny.model()
        torch.manual_seed(4)
        frames = torch.randn(1, 3, 19, *sfc_tiny.size)
        with torch.no_grad():
            logits, attention = model.forward_with_attention(frames)
            short = model.forward_with_attention(frames[:, :, :8])[0]
        with load(export, runtime=runtime, threads=1, head_chunk=5, stream_sfc_from=9) as dep:  # 5, 5, 5, 4
            pipe = dep.sfc_pipeline()
            assert pipe.streams_sfc and pipe.streams_sfc_at(19) and not pipe.streams_sfc_at(8)
            seen = whole_sfc_calls(dep)
            got = dep.predict_with_attention(frames)
            _same(got[0], logits)
            _same(got[1], attention)
            assert not seen  # streamed: the whole-video artifact did not run
            _same(dep.predict(frames[:, :, :8]), short)
            assert len(seen) == 1  # shorter than stream_sfc_from: the whole-video artifact ran on the joined head chunks
        return frames, logits

    return check
