"""AOTInductor packages (``.pt2``): exported, loaded by the runner, equal to PyTorch, verified.

Compiling a package runs a C++ compiler over Inductor's generated code: ~40-90 s per part on two
cores, so these tests are ``slow`` (``pytest -m slow tests/export/test_aoti.py``) and share one
export per session (``sfc_export_aoti``: the four parts and SFC's streaming pieces, whose streamed
pipeline ``tests/runtime/test_sfc_stream_aoti.py`` checks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.errors import ArtifactError
from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.export.parts import SFC_PIECES
from sfc_deploy.verify import verify
from sfc_deploy.runtime import load, make_runner

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sfc_one_thread")]


@pytest.fixture(scope="session")
def aoti_export(sfc_export_aoti: Path) -> Path:
    return sfc_export_aoti


def test_aoti_manifest_and_dynamic_axes(aoti_export: Path) -> None:
    manifest = load_manifest(aoti_export)
    files = {a.file: a for a in manifest.artifacts}
    pieces = {f"{p}.fp32.pt2" for p in SFC_PIECES}  # SFC streamed (tests/runtime/test_sfc_stream_aoti.py)
    assert set(files) == {"model.safetensors", "head.fp32.pt2", "sfc.fp32.pt2", "tail.fp32.pt2", "clip.fp32.pt2", *pieces}
    assert files["head.fp32.pt2"].inputs[0].shape[:3] == ("batch", 3, "time")
    assert files["sfc.fp32.pt2"].inputs[0].shape[2] == 8  # the aten TopK specialises T (see exporter)
    assert files["tail.fp32.pt2"].inputs[0].shape[2] == "k"
    theta = files["sfc_theta_k.fp32.pt2"]  # the pieces keep time dynamic: AOTInductor streams SFC with them
    assert theta.part == "sfc_theta_k" and theta.inputs[0].shape[2] == "halo_time" and theta.outputs[0].shape[2] == "time"
    assert theta.device == "cpu"
    assert manifest.parts == ["head", "sfc", "tail", "clip"]  # the pieces are artifacts of the sfc part


def test_aoti_pipeline_equals_pytorch_and_verify_passes(aoti_export: Path, sfc_tiny) -> None:
    model = sfc_tiny.model()
    frames = torch.randn(2, 3, 8, *sfc_tiny.size)
    with torch.no_grad():
        want = model(frames)
    with load(aoti_export, runtime="aoti", threads=1) as dep:
        torch.testing.assert_close(dep.predict(frames), want, rtol=1e-4, atol=1e-5)
    report = verify(load_manifest(aoti_export), dense_clips=1, threads=1)
    assert report.passed and not report.not_run
    assert {c.part for c in report.checks} >= {"head", "sfc", "tail", "sfc_pipeline", "dense_pipeline"}
    # SFC streamed on AOTInductor: each compiled piece alone (at other time lengths than its example's),
    # then the pipeline in head chunks of ceil(8 / 3) frames
    seen = {(c.part, c.input) for c in report.checks if c.passed}
    for check in [*((piece, "random") for piece in SFC_PIECES), ("sfc_pipeline", "synthetic[streamed, head_chunk=3]"),
                  ("sfc_pipeline.attention", "synthetic[streamed, head_chunk=3]")]:
        assert check in seen, (check, sorted(seen))


def test_aoti_runner_validates_and_runs_a_new_time_length(aoti_export: Path, sfc_tiny) -> None:
    manifest = load_manifest(aoti_export)
    model = sfc_tiny.model()
    with make_runner(manifest, manifest.find("head", "aoti"), "aoti") as head:
        video = torch.randn(1, 3, 5, *sfc_tiny.size)  # T=5 through the dynamic time axis
        with torch.no_grad():
            torch.testing.assert_close(head.infer({"video": video})["f_head"], model.head(video), rtol=1e-4, atol=1e-5)
        with pytest.raises(ArtifactError, match="axis 3 must be 32"):
            head.infer({"video": torch.randn(1, 3, 5, 16, 40)})


def test_aoti_runner_takes_slices_and_other_layouts(aoti_export: Path, sfc_tiny) -> None:
    """A package reads its input with the strides it was compiled for and checks none at run time: the
    runner hands it contiguous memory, so a time slice (a streamed head chunk) and a channels-last video
    give the model's values."""
    manifest = load_manifest(aoti_export)
    model = sfc_tiny.model()
    video = torch.randn(2, 3, 9, *sfc_tiny.size)
    inputs = {"time slice": video[:, :, 2:7], "channels-last": video[:, :, :5].contiguous(memory_format=torch.channels_last_3d),
              "batch slice": video[1:, :, :5].transpose(3, 4).contiguous().transpose(3, 4)}
    with make_runner(manifest, manifest.find("head", "aoti"), "aoti") as head, torch.no_grad():
        for name, x in inputs.items():
            assert not x.is_contiguous(), name
            torch.testing.assert_close(head.infer({"video": x})["f_head"], model.head(x.contiguous()), rtol=1e-4,
                                       atol=1e-5, msg=name)
