"""Every format in the default run, one small export each: the parts the slower suites leave out.

``test_aoti.py`` (all four AOTInductor parts) is ``slow``; the shared ONNX fixture holds only the
SFC graphs. Here the AOTInductor SFC package (the aten TopK, compiled; ~20 s; without SFC's streaming
pieces, which compile in ``slow`` tests: ``tests/runtime/test_sfc_stream_aoti.py``) and the ONNX head,
tail and clip graphs (~20 s) are exported once and compared with PyTorch part by part.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.runtime import load, make_runner

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


@pytest.fixture(scope="module")
def aoti_sfc(tmp_path_factory: pytest.TempPathFactory, sfc_tiny) -> Path:
    return sfc_tiny.export(tmp_path_factory.mktemp("fast_aoti") / "export", ("aoti",), parts=("sfc",), sfc_pieces=False)


@pytest.fixture(scope="module")
def onnx_parts(tmp_path_factory: pytest.TempPathFactory, sfc_tiny) -> Path:
    return sfc_tiny.export(tmp_path_factory.mktemp("fast_onnx") / "export", ("onnx",), parts=("head", "tail", "clip"))


def test_aoti_sfc_package_matches_pytorch(aoti_sfc: Path, sfc_tiny) -> None:
    manifest = load_manifest(aoti_sfc)
    model = sfc_tiny.model()
    f_head = torch.randn(2, 64, 8, *[s // 8 for s in sfc_tiny.size])
    with torch.no_grad():
        want, want_m = model.sfc(f_head, return_attention=True)
    with make_runner(manifest, manifest.find("sfc", "aoti"), "aoti") as runner:
        got = runner.infer({"f_head": f_head})
    torch.testing.assert_close(got["f_sfc"], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["attention"], want_m, rtol=1e-4, atol=1e-6)


def test_an_export_without_sfc_pieces_writes_none_and_does_not_stream(aoti_sfc: Path) -> None:
    """``sfc_pieces=False`` (``export --no-sfc-pieces``): only the whole ``sfc`` package, and a deployment
    of it runs that graph even with ``head_chunk``."""
    manifest = load_manifest(aoti_sfc)
    assert {a.file for a in manifest.artifacts} == {"model.safetensors", "sfc.fp32.pt2"}
    with load(aoti_sfc, runtime="aoti", threads=1, head_chunk=3, stream_sfc_from=0) as dep:
        assert dep.sfc_stream() is None


@pytest.mark.parametrize(
    ("part", "name", "shape"),
    [("head", "video", (2, 3, 5, 32, 40)), ("tail", "f_sfc", (3, 64, 4, 4, 5)), ("clip", "clip", (2, 3, 8, 32, 32))],
)
def test_onnx_parts_match_pytorch_on_dynamic_axes(onnx_parts: Path, sfc_tiny, part: str, name: str, shape) -> None:
    manifest = load_manifest(onnx_parts)
    model = sfc_tiny.model()
    x = torch.randn(*shape)  # batch and time differ from the export's example
    reference = {"head": model.head, "tail": model.tail, "clip": model.backbone}[part]
    with make_runner(manifest, manifest.find(part, "onnx"), "onnxruntime", threads=1) as runner:
        got = next(iter(runner.infer({name: x}).values()))
    with torch.no_grad():
        torch.testing.assert_close(got, reference(x), rtol=1e-4, atol=1e-5)
