"""``verify``: per-part and end-to-end parity with PyTorch, explicit tolerances, honest "not run"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.export.manifest import load_manifest, sha256_of
from sfc_deploy.export.parts import SFC_PIECES
from sfc_deploy.verify import TOLERANCES, compare, topk_agreement, verify


pytestmark = pytest.mark.usefixtures("sfc_one_thread")

@pytest.fixture(scope="module")
def ts_report(sfc_one_thread, sfc_export_ts: Path):
    return verify(load_manifest(sfc_export_ts), dense_clips=1)


def test_verify_passes_every_part_end_to_end_in_both_precisions(ts_report) -> None:
    report = ts_report.to_dict()
    assert report["passed"] and not report["not_run"]
    assert report["tolerances"] == {p: {"rtol": r, "atol_scaled": a} for p, (r, a) in TOLERANCES.items()}
    seen = {(c["precision"], c["part"], c["input"]) for c in report["checks"]}
    for precision in ("fp32", "fp16"):
        for part, inp in [
            ("head", "random"), ("sfc", "random"), ("sfc", "synthetic"), ("sfc.attention", "synthetic"),
            ("tail", "random"), ("tail", "synthetic"), ("sfc_pipeline", "synthetic"),
            ("dense_pipeline", "synthetic[1x3 crops]"),
            # SFC streamed on TorchScript: each traced piece alone (at other time lengths than its trace's), then
            # the pipeline in head chunks of ceil(8 / 3) frames (tests/runtime/test_sfc_stream_ts.py)
            *((piece, "random") for piece in SFC_PIECES),
            ("sfc_pipeline", "synthetic[streamed, head_chunk=3]"),
            ("sfc_pipeline.attention", "synthetic[streamed, head_chunk=3]"),
        ]:
            assert (precision, part, inp) in seen, (precision, part, inp)
    for c in report["checks"]:
        assert c["runtime"] == "torchscript" and c["variant"] == "default"
        if c["part"] in ("tail", "sfc_pipeline", "dense_pipeline"):
            assert c["top1_agree"] == 1.0
            if c["precision"] == "fp32":  # fp16 may swap near-equal 5th/6th logits; fp32 must not
                assert c["top5_agree"] == 1.0, c
    fp32 = [c for c in report["checks"] if c["precision"] == "fp32"]
    assert max(c["max_abs"] for c in fp32) < 1e-3


def test_compare_fails_outside_tolerance_and_on_shape_or_nan() -> None:
    ref = torch.tensor([1.0, -2.0, 4.0])
    rtol, atol = TOLERANCES["fp32"]
    assert compare(ref * (1 + rtol / 2), ref, "fp32")["passed"]
    bad = ref.clone()
    bad[0] += 0.01
    stats = compare(bad, ref, "fp32")
    assert not stats["passed"] and stats["max_abs"] == pytest.approx(0.01, rel=1e-3)
    assert stats["max_rel"] == pytest.approx(0.01, rel=1e-3)
    assert compare(bad, ref, "fp16")["passed"]  # within the fp16 tolerance
    assert not compare(ref[:2], ref, "fp32")["passed"]
    assert not compare(torch.tensor([float("nan"), -2.0, 4.0]), ref, "fp32")["passed"]


def test_topk_agreement_counts_rows() -> None:
    ref = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0]])
    same = ref.clone()
    swapped = ref.clone()
    swapped[0, 5], swapped[0, 4] = 4.0, 5.0  # top-1 changes, the top-5 set does not
    assert topk_agreement(same, ref) == (1.0, 1.0)
    assert topk_agreement(swapped, ref) == (0.5, 1.0)
    swapped[1, 5] = 9.0
    assert topk_agreement(swapped, ref) == (0.0, 0.5)


def test_an_artifact_from_other_weights_fails(sfc_export_ts: Path, tmp_path: Path, sfc_tiny) -> None:
    """Swap the tail for one traced from perturbed weights (sha256 updated): verify must fail it."""
    import json

    from sfc_deploy.models.parts import copy_for_export
    from sfc_deploy.export.parts import build_parts
    from sfc_deploy.export.torchscript import export_torchscript

    folder = tmp_path / "export"
    shutil.copytree(sfc_export_ts, folder)
    model = sfc_tiny.model()
    with torch.no_grad():
        model.backbone.fc.bias.add_(0.5 * model.backbone.fc.bias.abs().max() + 0.1)
    part = build_parts(copy_for_export(model, torch.float32, topk_impl="aten"), frames=8, size=sfc_tiny.size)["tail"]
    export_torchscript(part, folder / "tail.fp32.ts")
    data = json.loads((folder / "manifest.json").read_text())
    for art in data["artifacts"]:
        if art["file"] == "tail.fp32.ts":
            art["sha256"] = sha256_of(folder / "tail.fp32.ts")
    (folder / "manifest.json").write_text(json.dumps(data))
    report = verify(load_manifest(folder), precisions=["fp32"], dense_clips=1)
    assert not report.passed
    failed = {(c.part, c.input) for c in report.checks if not c.passed}
    assert ("tail", "random") in failed and ("sfc_pipeline", "synthetic") in failed
    assert all(c.passed for c in report.checks if c.part in ("head", "sfc", "dense_pipeline"))


def test_a_runtime_that_cannot_run_is_not_run_never_passed(
    sfc_export_ts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sfc_deploy.runtime.torchscript_runner import TorchScriptRunner

    real = TorchScriptRunner.activate

    def activate(self):
        if self.artifact.precision == "fp16":
            raise BackendUnavailableError("fp16 convolution is not implemented on this CPU")
        real(self)

    monkeypatch.setattr(TorchScriptRunner, "activate", activate)
    manifest = load_manifest(sfc_export_ts)
    report = verify(manifest, dense_clips=1)
    (entry,) = report.not_run
    assert entry.precision == "fp16" and "not implemented on this CPU" in entry.reason
    assert {c.precision for c in report.checks} == {"fp32"}  # nothing fp16 is reported as passed
    assert report.passed  # what did run passed; the CLI prints the not-run line with its reason

    def unavailable(self):
        raise BackendUnavailableError("no backend")

    monkeypatch.setattr(TorchScriptRunner, "activate", unavailable)
    nothing = verify(manifest, precisions=["fp32"], dense_clips=1)
    assert nothing.checks == [] and not nothing.passed  # nothing ran: never a pass


def test_bad_verify_options_are_refused(sfc_export_ts: Path) -> None:
    manifest = load_manifest(sfc_export_ts)
    with pytest.raises(ConfigError, match="custom-op SFC graph is ONNX-only"):
        verify(manifest, runtimes=["torchscript"], graphs=["custom"])
    with pytest.raises(ConfigError, match="unknown SFC graph 'fast'"):
        verify(manifest, graphs=["fast"])
    with pytest.raises(ConfigError, match="unknown runtime 'tvm'"):
        verify(manifest, runtimes=["tvm"])
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        verify(manifest, precisions=["fp8"])
    with pytest.raises(ConfigError, match="precision bf16 has no files to check.*add --runtime pytorch"):
        verify(manifest, precisions=["bf16"])  # the exported runtimes only: nothing serves bf16


def test_the_pytorch_runtime_is_checked_in_bf16_and_against_the_model_as_trained(sfc_export_ts: Path) -> None:
    """``verify -r pytorch -p fp32,bf16``: the runtime's inference rewrite and its bf16 weights (converted
    at load, no file) against the reference, which is the model as trained on every path, dense included."""
    report = verify(load_manifest(sfc_export_ts), runtimes=["pytorch"], precisions=["fp32", "bf16"], dense_clips=1).to_dict()
    assert report["passed"] and not report["not_run"]
    seen = {(c["precision"], c["part"]) for c in report["checks"]}
    assert {(p, part) for p in ("fp32", "bf16") for part in ("head", "sfc", "tail", "sfc_pipeline", "dense_pipeline")} <= seen
    dense = {c["precision"]: c for c in report["checks"] if c["part"] == "dense_pipeline"}
    assert dense["fp32"]["max_abs"] > 0  # BatchNorm folded vs as trained: rounding differs, the reference is not the served model
    assert all(c["top1_agree"] == 1.0 for c in report["checks"] if c["part"] in ("sfc_pipeline", "dense_pipeline"))
