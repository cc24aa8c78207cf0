"""Bench, eval and predict feed a deployment the same input and run the same pipelines.

The same video file, export and runtime: the input bench's worker builds (decoding inside its
timing loop), the one eval builds from the frames it decodes once per video, and the one predict
builds are the same tensor, and the logits from bench's pipelines, eval's and predict's are the
same. A command that fitted videos its own way (bench used to stretch frames to the export's size,
predict cropped, eval did neither) or ran its own dense loop would fail here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.bench.worker import WorkerJob, _Inputs
from sfc_deploy.data.datasets import VideoList
from sfc_deploy.data.inputs import model_input
from sfc_deploy.eval.evaluate import classify
from sfc_deploy.eval.predict import from_export, predict_video
from sfc_deploy.runtime import ClipPipeline, load
from sfc_deploy.train.views import FrameStore

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


@pytest.fixture
def wide_video(make_video) -> Path:
    # 48x80 resizes (short side 32) to 32x53: wider than the export's 32x40, so SFC input is cropped
    return make_video("wide.mp4", frames=70, size=(48, 80))


def _eval_input(path: Path, strategy: str, dep) -> torch.Tensor:
    frames = FrameStore(VideoList(items=((path, 0),), class_names=("a",)), preload=False).all_frames(0)
    return model_input(frames, strategy, dep.config, dep.input_spec).tensor


@pytest.mark.parametrize("runtime", ["torchscript", "pytorch"])
def test_bench_eval_and_predict_give_identical_sfc_logits(sfc_export_ts: Path, wide_video: Path, runtime: str) -> None:
    with load(sfc_export_ts, runtime) as dep:
        bench_x = _Inputs(WorkerJob(strategy="sfc", export_dir=str(sfc_export_ts), runtime=runtime,
                                    video_files=[str(wide_video)]), dep).next()
        eval_x = _eval_input(wide_video, "sfc", dep)
        # TorchScript's SFC graph fixes T at the exported 8 frames; PyTorch takes all 70 / 8 -> 9. Both fix HxW.
        assert bench_x.shape == (1, 3, 8 if runtime == "torchscript" else 9, 32, 40)
        assert torch.equal(bench_x, eval_x)
        bench_logits = dep.sfc_pipeline()(bench_x)[0].float()
        eval_logits = classify(dep, eval_x, "sfc")
        torch.testing.assert_close(bench_logits[0], eval_logits, rtol=0, atol=0)
    with from_export(sfc_export_ts, runtime=runtime) as predictor:
        pred = predict_video(predictor, wide_video, top=10)
    assert pred.crop == (0, 6)
    torch.testing.assert_close(pred.logits, eval_logits, rtol=0, atol=0)


def test_bench_and_eval_give_identical_dense_logits(sfc_export_ts: Path, wide_video: Path) -> None:
    with load(sfc_export_ts, "torchscript") as dep:
        bench_x = _Inputs(WorkerJob(strategy="dense", export_dir=str(sfc_export_ts), runtime="torchscript",
                                    video_files=[str(wide_video)]), dep).next()
        eval_x = _eval_input(wide_video, "dense", dep)
        assert bench_x.shape == (30, 3, 8, 32, 32)
        assert torch.equal(bench_x, eval_x)
        eval_logits = classify(dep, eval_x, "dense")
        for batch in (30, 7):  # bench's batch search runs the same pipeline at each size
            bench_logits = ClipPipeline(dep.runner("clip"), batch_size=batch)(bench_x)[0]
            torch.testing.assert_close(bench_logits, eval_logits, rtol=1e-6, atol=1e-6)
