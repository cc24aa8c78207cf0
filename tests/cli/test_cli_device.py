"""``--device`` on ``predict`` and ``eval``: cpu and auto change no result here; CUDA on this CPU
machine, a word that is not a device, and ONNX Runtime without its CUDA provider are each one
line and exit 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.synth import SynthOptions, write_counter_video, write_synth_dataset
from sfc_deploy.models import create_model, get_config
from sfc_deploy.models.sfc_model import save_sfc_checkpoint
from sfc_deploy.train.backbone import save_backbone

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

runner = CliRunner()
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour; a CUDA device is visible")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded 2-class tiny SFC model's two checkpoints, one video, and a 2-class labelled set of 2 videos."""
    root = tmp_path_factory.mktemp("device")
    config = get_config("slow8x8_tiny", num_classes=2)
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32))
    torch.manual_seed(0)
    model = create_model(config, tau=2.0)
    write_synth_dataset(root / "data", SynthOptions(classes=2, train_per_class=1, test_per_class=1, frames=40,
                                                    size=(32, 40), seed=1))
    return {
        "weights": ["--backbone", "slow8x8_tiny", "--checkpoint", str(save_backbone(model.backbone, root / "bb.safetensors")),
                    "--sfc-checkpoint", str(save_sfc_checkpoint(model, root / "sfc.safetensors"))],
        "video": write_counter_video(root / "v.mp4", 72, (32, 40), 25),
        "data": root / "data" / "test.csv",
    }


def _predict(setup: dict, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["predict", str(setup["video"]), *setup["weights"], "--json", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _eval(setup: dict, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["eval", str(setup["data"]), "--out", str(out), *setup["weights"][:4],
                                 "--strategies", "single,uniform", "--num-clips", "2", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "eval.json").read_text())


def _one_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_predict_device_cpu_and_auto_give_the_same_result(setup: dict, tmp_path: Path) -> None:
    plain = _predict(setup, tmp_path / "plain.json", "--attention-matrix")
    words = ["cpu"] if torch.cuda.is_available() else ["cpu", "auto"]
    for word in words:
        got = _predict(setup, tmp_path / f"{word}.json", "--attention-matrix", "--device", word)
        assert got["videos"] == plain["videos"]  # probabilities and attention, to the last digit
    assert plain["model"]["device"] == "cpu"


def test_eval_device_cpu_and_auto_give_the_same_result(setup: dict, tmp_path: Path) -> None:
    plain = _eval(setup, tmp_path / "plain")
    words = ["cpu"] if torch.cuda.is_available() else ["cpu", "auto"]
    for word in words:
        got = _eval(setup, tmp_path / word, "--device", word)
        assert got["results"] == plain["results"] and got["predictions"] == plain["predictions"]
    assert plain["device"] == "cpu"


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line(setup: dict, tmp_path: Path, device: str) -> None:
    result = runner.invoke(app, ["predict", str(setup["video"]), *setup["weights"], "--device", device])
    _one_line(result, "no CUDA device is visible", "--device cpu")
    result = runner.invoke(app, ["eval", str(setup["data"]), "--out", str(tmp_path / "ev"), "-b", "slow8x8_tiny",
                                 "--strategies", "single", "--device", device])
    _one_line(result, "no CUDA device is visible", "--device cpu")
    assert not (tmp_path / "ev" / "eval.json").exists()


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_word_that_is_not_a_device_is_one_line(setup: dict, tmp_path: Path, command: str) -> None:
    args = ([str(setup["video"]), *setup["weights"]] if command == "predict"
            else [str(setup["data"]), "--out", str(tmp_path / "ev"), "-b", "slow8x8_tiny"])
    _one_line(runner.invoke(app, [command, *args, "--device", "gpu0"]), "'gpu0' is not a device", "cuda:N")


def test_onnxruntime_on_cuda_without_its_provider_is_one_line(sfc_export_onnx: Path, setup: dict,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU machine with the CPU-only onnxruntime (the device machine is one): pretend torch sees a
    GPU, so the check that follows is ONNX Runtime's own, on the onnxruntime installed here."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    result = runner.invoke(app, ["predict", str(setup["video"]), "--export", str(sfc_export_onnx),
                                 "--runtime", "onnxruntime", "--device", "cuda"])
    _one_line(result, "no CUDA execution provider", "onnxruntime-gpu", "--device cpu")


def test_bf16_on_an_exported_runtime_is_one_line(sfc_export_onnx: Path, setup: dict) -> None:
    result = runner.invoke(app, ["predict", str(setup["video"]), "--export", str(sfc_export_onnx),
                                 "--precision", "bf16"])
    _one_line(result, "bf16 is served by the pytorch runtime only")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_and_eval_on_cuda(setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfc_deploy.verify import compare

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 for the comparison
    plain = _predict(setup, tmp_path / "plain.json", "--attention-matrix")
    result = runner.invoke(app, ["predict", str(setup["video"]), *setup["weights"], "--json", str(tmp_path / "auto.json"),
                                 "--attention-matrix", "--device", "auto"])
    assert result.exit_code == 0, result.output
    assert "--device auto: using cuda:" in result.stderr  # auto says where it runs
    got = json.loads((tmp_path / "auto.json").read_text())
    assert got["model"]["device"].startswith("cuda:")
    for key in ("mass", "matrix"):
        want, have = (torch.tensor(v["videos"][0]["attention"][key]) for v in (plain, got))
        assert compare(have, want, "fp32")["passed"], key
    want, have = (torch.tensor([c["prob"] for c in v["videos"][0]["top"]]) for v in (plain, got))
    assert compare(have, want, "fp32")["passed"]
    report = _eval(setup, tmp_path / "ev", "--device", "cuda")
    assert report["device"].startswith("cuda:") and report["environment"]["gpu"]["name"]
