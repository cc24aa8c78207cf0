"""AOTInductor packages (``.pt2``): exported, loaded by the runner, equal to PyTorch, verified.

Compiling a package runs a C++ compiler over Inductor's generated code: ~40-90 s per part on two
cores, so these tests are ``slow`` (``pytest -m slow tests/export/test_aoti.py``) and share one
export per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.errors import ArtifactError
from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.verify import verify
from sfc_deploy.runtime import load, make_runner

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sfc_one_thread")]


@pytest.fixture(scope="session")
def aoti_export(tmp_path_factory: pytest.TempPathFactory, sfc_tiny) -> Path:
    return sfc_tiny.export(tmp_path_factory.mktemp("sfc_aoti") / "export", ("aoti",))


def test_aoti_manifest_and_dynamic_axes(aoti_export: Path) -> None:
    manifest = load_manifest(aoti_export)
    files = {a.file: a for a in manifest.artifacts}
    assert {"head.fp32.pt2", "sfc.fp32.pt2", "tail.fp32.pt2", "clip.fp32.pt2"} <= set(files)
    assert files["head.fp32.pt2"].inputs[0].shape[:3] == ("batch", 3, "time")
    assert files["sfc.fp32.pt2"].inputs[0].shape[2] == 8  # the aten TopK specialises T (see exporter)
    assert files["tail.fp32.pt2"].inputs[0].shape[2] == "k"


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


def test_aoti_runner_validates_and_runs_a_new_time_length(aoti_export: Path, sfc_tiny) -> None:
    manifest = load_manifest(aoti_export)
    model = sfc_tiny.model()
    with make_runner(manifest, manifest.find("head", "aoti"), "aoti") as head:
        video = torch.randn(1, 3, 5, *sfc_tiny.size)  # T=5 through the dynamic time axis
        with torch.no_grad():
            torch.testing.assert_close(head.infer({"video": video})["f_head"], model.head(video), rtol=1e-4, atol=1e-5)
        with pytest.raises(ArtifactError, match="axis 3 must be 32"):
            head.infer({"video": torch.randn(1, 3, 5, 16, 40)})
