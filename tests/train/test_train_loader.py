"""train-backbone's clip loader: results independent of workers and preloading, failures as one line, devices, AMP."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.train.backbone import BackboneTrainOptions, backbone_config, draw_epoch, train_backbone
from sfc_deploy.train.common import STATE_FILE, read_metrics
from sfc_deploy.train.loader import ClipLoader
from sfc_deploy.train.views import FrameStore

TINY = dict(short_side=32, batch_size=4, lr=0.01)

runner = CliRunner()


def _weights(summary) -> dict[str, torch.Tensor]:
    return load_file(summary["weights"])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plans_are_a_function_of_seed_and_epoch_only(tiny_trained):
    videos = read_csv_list(tiny_trained["train"])
    options = BackboneTrainOptions(**TINY, clips_per_video=2)
    store = FrameStore(videos, preload=False)
    config = backbone_config(options, tuple(videos.class_names))
    first = draw_epoch(store, config, options, 0)
    assert first == draw_epoch(store, config, options, 0)
    assert first != draw_epoch(store, config, options, 1)
    plans = [p for batch in first for p in batch]
    assert [len(b) for b in first] == [4, 4, 4] and sorted(p.video for p in plans) == sorted(list(range(6)) * 2)
    span = (config.frames - 1) * config.stride
    assert all(len(p.indices) == config.frames and p.indices[-1] - p.indices[0] <= span for p in plans)


def test_the_same_weights_with_0_1_2_workers_and_with_preload(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    options = BackboneTrainOptions(**TINY, epochs=1)
    runs = {}
    for name, loading in {"w0": dict(workers=0), "w1": dict(workers=1), "w2": dict(workers=2),
                          "preload": dict(preload=True), "preload_w2": dict(preload=True, workers=2)}.items():
        runs[name] = train_backbone(videos, tmp_path / name, options, threads=1, **loading)
    reference = _weights(runs["w0"])
    for name, summary in runs.items():
        assert _same(_weights(summary), reference), name  # bit-identical: the workers draw nothing
        assert summary["last"]["loss"] == runs["w0"]["last"]["loss"], name


def test_resume_with_other_loading_options_equals_an_uninterrupted_run(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    options = BackboneTrainOptions(**TINY, epochs=2)
    full = train_backbone(videos, tmp_path / "full", options, threads=1)

    class Interrupt(Exception):
        pass

    def stop_in_epoch_2(description: str, done: int, total: int) -> None:
        if description.startswith("epoch 2/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_backbone(videos, tmp_path / "cut", options, threads=1, workers=1, progress=stop_in_epoch_2)
    resumed = train_backbone(videos, tmp_path / "cut", options, resume=True, threads=1, workers=2, preload=True)
    assert _same(_weights(resumed), _weights(full))
    assert [m["loss"] for m in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == \
        [m["loss"] for m in read_metrics(tmp_path / "full" / "metrics.jsonl")]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_video_that_becomes_unreadable_mid_training_is_one_error_naming_it(tiny_trained, tmp_path, workers):
    data = shutil.copytree(tiny_trained["data"], tmp_path / "data")
    videos = read_csv_list(data / "train.csv")
    victim = videos[0][0]

    def corrupt_after_epoch_1(description: str, done: int, total: int) -> None:
        if description.startswith("epoch 1/") and done == total:
            victim.write_bytes(b"not a video any more" * 100)

    out = tmp_path / "run"
    with pytest.raises(VideoError) as caught:
        train_backbone(videos, out, BackboneTrainOptions(**TINY, epochs=2), threads=1, workers=workers,
                       progress=corrupt_after_epoch_1)
    message = str(caught.value)
    assert "\n" not in message and str(victim) in message, message
    assert "cannot be opened as a video" in message and "training epoch 2" in message and "--resume" in message
    state = torch.load(out / STATE_FILE, weights_only=True)  # the finished epoch survives for --resume
    assert state["epoch"] == 1


def test_bf16_autocast_trains_on_the_cpu(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    summary = train_backbone(videos, tmp_path / "bf16", BackboneTrainOptions(**TINY, epochs=1), threads=1, amp="bf16")
    weights = _weights(summary)
    assert math.isfinite(summary["last"]["loss"]) and summary["amp"] == "bf16" and summary["device"] == "cpu"
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    fp32 = _weights(train_backbone(videos, tmp_path / "fp32", BackboneTrainOptions(**TINY, epochs=1), threads=1))
    assert not _same(weights, fp32)  # autocast really ran in bf16


def test_channels_last_feeds_the_same_clips_in_another_memory_layout(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    options = BackboneTrainOptions(**TINY, epochs=1)
    store = FrameStore(videos, preload=False)
    config = backbone_config(options, tuple(videos.class_names))
    batches = draw_epoch(store, config, options, 0)
    loaders = [ClipLoader(store, config.preprocess, (28, 28), channels_last=last) for last in (False, True)]
    for (x, y), (x_cl, y_cl) in zip(*(loader.epoch(batches) for loader in loaders), strict=True):
        assert torch.equal(x, x_cl) and torch.equal(y, y_cl) and x.shape == (len(y), 3, config.frames, 28, 28)
        assert x_cl.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous(
            memory_format=torch.channels_last_3d)
    # training itself differs by fp32 rounding only, which SGD on a tiny BatchNorm model amplifies; the
    # first epoch's mean loss is still the same to a few digits, and the weights are saved in the plain layout
    plain = train_backbone(videos, tmp_path / "plain", options, threads=1)
    last = train_backbone(videos, tmp_path / "cl", options, threads=1, channels_last=True)
    assert last["last"]["loss"] == pytest.approx(plain["last"]["loss"], rel=1e-3)
    assert all(v.is_contiguous() for v in _weights(last).values())


def test_library_refuses_fp16_on_the_cpu_and_unknown_modes(tiny_trained, tmp_path):
    videos = read_csv_list(tiny_trained["train"])
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA device"):
        train_backbone(videos, tmp_path / "a", BackboneTrainOptions(**TINY, epochs=1), device="cpu", amp="fp16")
    with pytest.raises(ConfigError, match="--amp 'fp8' is not one of off, bf16, fp16"):
        train_backbone(videos, tmp_path / "b", BackboneTrainOptions(**TINY, epochs=1), amp="fp8")
    with pytest.raises(ConfigError, match="workers must be >= 0"):
        train_backbone(videos, tmp_path / "c", BackboneTrainOptions(**TINY, epochs=1), workers=-1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# --- the command line --------------------------------------------------------------------------




def _cli(tiny_trained, tmp_path, *extra: str):
    from sfc_deploy.cli import app

    args = ["train-backbone", str(tiny_trained["train"]), "-o", str(tmp_path / "run"), "--short-side", "32",
            "--epochs", "1", "--batch-size", "4", "--threads", "1", *extra]
    return runner.invoke(app, args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cli_device_cuda_without_a_gpu_is_one_line(tiny_trained, tmp_path, one_line_error):
    one_line_error(_cli(tiny_trained, tmp_path, "--device", "cuda"), "--device cuda", "no CUDA device is visible",
                    "--device cpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--device", "cpu", "--amp", "fp16"], ("--amp fp16 needs a CUDA device", "--amp bf16")),
        (["--amp", "fp8"], ("--amp 'fp8' is not one of off, bf16, fp16",)),
        (["--device", "tpu"], ("--device 'tpu' is not a device",)),
        (["--workers", "-1"], ("--workers",)),
    ],
)
def test_cli_bad_device_amp_and_workers_are_one_line(tiny_trained, tmp_path, args, fragments, one_line_error):
    one_line_error(_cli(tiny_trained, tmp_path, *args), *fragments)
    assert not (tmp_path / "run").exists()


def test_cli_trains_with_workers_and_records_device_and_amp(tiny_trained, tmp_path):
    result = _cli(tiny_trained, tmp_path, "--device", "cpu", "--workers", "1", "--amp", "off")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["device"], summary["amp"], summary["workers"], summary["preload"]) == ("cpu", "off", 1, False)
    assert (tmp_path / "run" / "backbone.safetensors").is_file()


# --- on a GPU ----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("amp", "channels_last"), [("bf16", False), ("fp16", False), ("fp16", True)])
def test_one_tiny_epoch_on_cuda_with_amp(tmp_path, amp, channels_last):
    pytest.importorskip("av", reason="writing and decoding the training videos needs PyAV")
    from sfc_deploy.data.synth import SynthOptions, write_synth_dataset

    write_synth_dataset(tmp_path / "data", SynthOptions(classes=3, train_per_class=2, test_per_class=0, frames=48,
                                                        size=(32, 40), seed=5))
    videos = read_csv_list(tmp_path / "data" / "train.csv")
    summary = train_backbone(videos, tmp_path / "run", BackboneTrainOptions(**TINY, epochs=2), device="cuda",
                             amp=amp, workers=1, channels_last=channels_last)
    assert summary["device"].startswith("cuda:") and summary["amp"] == amp
    assert all(math.isfinite(m["loss"]) for m in read_metrics(tmp_path / "run" / "metrics.jsonl"))
    weights = _weights(summary)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)  # saved on the CPU: resumes anywhere
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert ("scaler" in state) == (amp == "fp16")
