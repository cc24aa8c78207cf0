"""The SFC and dense pipelines from runners equal the PyTorch model's forward and dense logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.data.samplers import sample_tensor
from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.runtime import ClipPipeline, SFCPipeline, load, make_runner


pytestmark = pytest.mark.usefixtures("sfc_one_thread")

@pytest.fixture(scope="module")
def reference(sfc_one_thread, sfc_tiny):
    """Model, an 8-frame batch of 2, a 64-raw-frame video at the crop size, and their logits."""
    torch.manual_seed(1)
    model = sfc_tiny.model()
    frames = torch.randn(2, 3, 8, *sfc_tiny.size)
    video = torch.randn(1, 3, sfc_tiny.raw_frames, 32, 40)  # short side = the 32-pixel crop
    crops = sample_tensor(video, "dense", model.config).tensor
    with torch.no_grad():  # the dense reference: every crop through the backbone alone, then the mean
        dense = torch.stack([model.backbone(c[None])[0] for c in crops]).mean(0, keepdim=True)
        return model, frames, model(frames), video, dense


@pytest.mark.parametrize("runtime", ["pytorch", "torchscript"])
def test_predict_and_predict_dense_equal_pytorch(sfc_export_ts: Path, reference, runtime: str) -> None:
    model, frames, logits, video, dense = reference
    with load(sfc_export_ts, runtime=runtime, threads=1) as dep:
        torch.testing.assert_close(dep.predict(frames), logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dep.predict_dense(video), dense, rtol=1e-4, atol=1e-5)
        _, attention = dep.predict_with_attention(frames)
        assert attention.shape == (2, 4, 8)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4))


def test_fp16_deployment_is_close_to_the_fp32_model(sfc_export_ts: Path, reference) -> None:
    _, frames, logits, video, dense = reference
    with load(sfc_export_ts, runtime="torchscript", precision="fp16") as dep:
        assert dep.runner("head").artifact.file == "head.fp16.ts"
        got = dep.predict(frames)
        assert got.dtype == torch.float32
        scale = logits.abs().max()
        assert (got - logits).abs().max() < 0.02 * scale
        assert (dep.predict_dense(video) - dense).abs().max() < 0.02 * dense.abs().max()


def test_head_chunk_streams_the_head_with_identical_logits(sfc_export_ts: Path, reference) -> None:
    _, frames, logits, _, _ = reference
    with load(sfc_export_ts, runtime="torchscript", head_chunk=3) as dep:  # chunks 3, 3, 2
        torch.testing.assert_close(dep.predict(frames), logits, rtol=1e-4, atol=1e-5)


def test_dense_batch_size_does_not_change_the_logits(sfc_export_ts: Path, reference) -> None:
    model, _, _, video, dense = reference
    manifest = load_manifest(sfc_export_ts)
    with make_runner(manifest, manifest.find("clip", "torchscript"), "torchscript") as clip:
        crops = sample_tensor(video, "dense", model.config).tensor
        assert crops.shape[0] == 30
        for batch in (7, 30):
            pipe = ClipPipeline(clip, batch_size=batch)
            torch.testing.assert_close(pipe(crops), dense, rtol=1e-4, atol=1e-5)


def test_sfc_pipeline_mixes_runners_of_any_backend(sfc_export_ts: Path, sfc_export_onnx: Path, reference) -> None:
    """head and tail on TorchScript, SFC on ONNX Runtime (either graph): the same logits."""
    _, frames, logits, _, _ = reference
    ts, onnx_dir = load_manifest(sfc_export_ts), load_manifest(sfc_export_onnx)
    for variant in ("ort", "ort-custom"):  # the graphs ONNX Runtime serves, from the portable and custom graphs
        with (
            make_runner(ts, ts.find("head", "torchscript"), "torchscript") as head,
            make_runner(onnx_dir, onnx_dir.find("sfc", "onnx", variant=variant), "onnxruntime", threads=1) as sfc,
            make_runner(ts, ts.find("tail", "torchscript"), "torchscript") as tail,
        ):
            got, attention = SFCPipeline(head, sfc, tail)(frames)
        torch.testing.assert_close(got, logits, rtol=1e-4, atol=1e-5)
        assert attention.shape == (2, 4, 8)


def test_onnx_deployment_without_head_names_what_is_missing(sfc_export_onnx: Path) -> None:
    from sfc_deploy.errors import ArtifactError

    with load(sfc_export_onnx, runtime="onnxruntime") as dep:
        assert dep.has("sfc") and not dep.has("head")
        with pytest.raises(ArtifactError, match="has no head artifact in onnx/fp32"):
            dep.predict(torch.randn(1, 3, 8, 32, 40))
