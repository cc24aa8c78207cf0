"""``sfc-deploy predict`` through CliRunner: the output contract against the model run directly,
exported artifacts against PyTorch, and every bad input as one line, exit 2 and no JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.samplers import sample_video
from sfc_deploy.data.synth import write_counter_video
from sfc_deploy.eval.predict import from_checkpoints, predict_video
from sfc_deploy.models import create_model, get_config
from sfc_deploy.models.sfc import compressed_length
from sfc_deploy.models.sfc_model import save_sfc_checkpoint
from sfc_deploy.train.backbone import save_backbone

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

runner = CliRunner()
CLASSES = ("walk", "run", "jump", "sit", "wave", "clap")
SIZE = (32, 40)  # HxW of the videos, of the frames the model reads and of the exports


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded tiny SFC model (class names stored, short side 32), its two checkpoints and three videos."""
    root = tmp_path_factory.mktemp("predict")
    config = get_config("slow8x8_tiny", num_classes=len(CLASSES))
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32), class_names=CLASSES)
    torch.manual_seed(0)
    model = create_model(config, tau=2.0)
    with torch.no_grad():  # sharpen the attention: a fresh SFC looks almost everywhere alike
        for conv in (model.sfc.theta_q, model.sfc.theta_k):
            conv.weight.mul_(30)
    videos = {
        "long": write_counter_video(root / "long.mp4", 100, SIZE, 25),  # 13 sampled frames
        "slow": write_counter_video(root / "slow.mp4", 70, SIZE, 10),  # 9 sampled frames, 10 fps
        "wide": write_counter_video(root / "wide.mp4", 64, (32, 48), 25),  # wider than the exports
    }
    return {
        "root": root,
        "model": model,
        "backbone": save_backbone(model.backbone, root / "backbone.safetensors"),
        "sfc": save_sfc_checkpoint(model, root / "sfc.safetensors"),
        "videos": videos,
    }


def _weights(setup: dict) -> list[str]:
    return ["--backbone", "slow8x8_tiny", "--checkpoint", str(setup["backbone"]), "--sfc-checkpoint", str(setup["sfc"])]


def _export(setup: dict, fmt: str) -> Path:
    """head, SFC and tail of the model in ``fmt`` (fp32, 8 frames of 32x40), cached per module."""
    from sfc_deploy.export.exporter import ExportOptions, export_model

    out = setup["root"] / f"export_{fmt}"
    if not out.exists():
        options = ExportOptions(formats=(fmt,), parts=("head", "sfc", "tail"), frames=8, size=SIZE, raw_frames=64,
                                random_weights=False, checkpoint=str(setup["backbone"]),
                                sfc_checkpoint=str(setup["sfc"]))
        export_model(setup["model"], out, options)
    return out


def _predict(args: list[str], json_path: Path) -> dict:
    result = runner.invoke(app, ["predict", *args, "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # checkpoints given: no note about random weights
    return {"stdout": result.stdout, **json.loads(json_path.read_text())}


def _direct(model, path: Path, **opts) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Probabilities, attention (k, T) and source frames of the model called on eval's SFC input."""
    sampled = sample_video(path, "sfc", model.config, **opts)
    with torch.no_grad():
        logits, attention = model.forward_with_attention(sampled.tensor)
    return logits[0].softmax(-1), attention[0], sampled.frame_indices[0]


def test_predict_matches_the_model_called_directly(setup: dict, tmp_path: Path) -> None:
    paths = [setup["videos"]["long"], setup["videos"]["slow"]]
    out = _predict([*map(str, paths), *_weights(setup), "--top", "3", "--attention-matrix"], tmp_path / "p.json")
    assert out["class_names_from"] == "weights" and out["model"]["tau"] == 2.0
    assert [v["path"] for v in out["videos"]] == [str(p) for p in paths]
    for path, video in zip(paths, out["videos"]):
        probs, attention, frames = _direct(setup["model"], path)
        expected = probs.topk(3)
        top = video["top"]
        assert [c["index"] for c in top] == expected.indices.tolist()
        assert [c["name"] for c in top] == [CLASSES[i] for i in expected.indices.tolist()]
        assert [c["prob"] for c in top] == sorted((c["prob"] for c in top), reverse=True)
        torch.testing.assert_close(torch.tensor([c["prob"] for c in top]), expected.values, rtol=0, atol=1e-5)
        assert sum(c["prob"] for c in top) <= 1.0
        att = video["attention"]
        k, t = attention.shape
        assert att["k"] == k == compressed_length(t, 2.0) and att["frames"] == t == len(att["mass"]) == len(att["source_frames"])
        assert att["source_frames"] == list(frames)
        assert sum(att["mass"]) == pytest.approx(k, abs=1e-4)
        torch.testing.assert_close(torch.tensor(att["mass"]), attention.sum(0), rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.tensor(att["matrix"]), attention, rtol=0, atol=1e-5)
        assert max(att["mass"]) > 1.5 * min(att["mass"])  # not uniform: the peaks below mean something
        stamps = att["timestamps_s"]
        assert all(a < b for a, b in zip(stamps, stamps[1:]))
        assert stamps == pytest.approx([i / video["fps"] for i in frames])
        assert f"{path}: {video['num_frames']} frames" in out["stdout"]
    assert out["videos"][1]["fps"] == 10.0 and out["videos"][1]["attention"]["timestamps_s"][1] == pytest.approx(0.8)
    assert out["stdout"].count("where SFC looked:") == 2 and "most attended:" in out["stdout"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_library_prediction_equals_the_model_logits(setup: dict) -> None:
    path = setup["videos"]["long"]
    with from_checkpoints("slow8x8_tiny", checkpoint=setup["backbone"], sfc_checkpoint=setup["sfc"]) as predictor:
        pred = predict_video(predictor, path, top=10)
    x = sample_video(path, "sfc", setup["model"].config).tensor
    with torch.no_grad():
        logits = setup["model"](x)[0]
    torch.testing.assert_close(pred.logits, logits, rtol=0, atol=1e-5)
    assert len(pred.top) == len(CLASSES)  # --top past the class count shows them all
    assert pred.peaks(1) == [int(pred.mass.argmax())]


def test_classes_file_and_tau_apply(setup: dict, tmp_path: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(n.upper() for n in CLASSES) + "\n")
    path = setup["videos"]["long"]
    out = _predict([str(path), *_weights(setup), "--classes", str(names), "--tau", "4", "--top", "2"], tmp_path / "p.json")
    assert out["class_names_from"] == "file" and out["model"]["tau"] == 4.0
    top = out["videos"][0]["top"]
    assert len(top) == 2 and all(c["name"] == CLASSES[c["index"]].upper() for c in top)
    assert out["videos"][0]["attention"]["k"] == compressed_length(13, 4.0)
    assert top[0]["name"] in out["stdout"]


@pytest.mark.slow  # 16 s (an ONNX export); ONNX Runtime parity is in tests/export and tests/runtime in the default suite
def test_onnxruntime_export_agrees_with_pytorch(setup: dict, tmp_path: Path) -> None:
    export = _export(setup, "onnx")
    paths = [str(setup["videos"]["long"]), str(setup["videos"]["wide"])]
    ref = _predict([*paths, *_weights(setup)], tmp_path / "ref.json")
    out = _predict([*paths, "--export", str(export), "--runtime", "onnxruntime"], tmp_path / "ort.json")
    assert out["model"]["kind"] == "export" and out["class_names_from"] == "weights"  # names travel in the manifest
    long, wide = out["videos"]
    assert long["crop"] is None and long["input_size"] == list(SIZE)
    assert wide["crop"] == [0, 4] and wide["input_size"] == list(SIZE)  # 32x48 centre-cropped to the export's 32x40
    torch.testing.assert_close(torch.tensor([c["prob"] for c in long["top"]]),
                               torch.tensor([c["prob"] for c in ref["videos"][0]["top"]]), rtol=0, atol=1e-4)
    assert [c["index"] for c in long["top"]][:1] == [c["index"] for c in ref["videos"][0]["top"]][:1]
    torch.testing.assert_close(torch.tensor(long["attention"]["mass"]),
                               torch.tensor(ref["videos"][0]["attention"]["mass"]), rtol=0, atol=1e-4)
    assert ref["videos"][1]["input_size"] == [32, 48]  # PyTorch reads the whole frame...
    x = sample_video(setup["videos"]["wide"], "sfc", setup["model"].config).tensor[..., 4:44]
    with torch.no_grad():  # ...but the export's equals the model on the same centre crop
        cropped = setup["model"](x)[0].softmax(-1)
    torch.testing.assert_close(torch.tensor(wide["top"][0]["prob"]), cropped.max(), rtol=0, atol=1e-4)


def test_fixed_time_axis_export_samples_its_length(setup: dict, tmp_path: Path) -> None:
    export = _export(setup, "torchscript")  # a traced SFC takes exactly the exported 8 frames
    path = setup["videos"]["long"]
    out = _predict([str(path), "--export", str(export), "--runtime", "torchscript"], tmp_path / "ts.json")
    att = out["videos"][0]["attention"]
    probs, attention, frames = _direct(setup["model"], path, max_frames=8, min_frames=8)  # 13 -> 8 segments of 1
    assert att["frames"] == 8 and att["source_frames"] == list(frames) and att["k"] == 4
    torch.testing.assert_close(torch.tensor(att["mass"]), attention.sum(0), rtol=0, atol=1e-4)
    torch.testing.assert_close(torch.tensor(out["videos"][0]["top"][0]["prob"]), probs.max(), rtol=0, atol=1e-4)


def _header_only_mkv(tmp_path: Path) -> Path:
    data = write_counter_video(tmp_path / "full.mkv", 10, SIZE, 25).read_bytes()
    path = tmp_path / "empty.mkv"
    path.write_bytes(data[: data.find(bytes.fromhex("1F43B675")) + 9])  # cut inside the first cluster: 0 frames
    return path


BAD = {
    "missing file": (lambda s, d: [str(d / "nope.mp4"), *_weights(s)], ("nope.mp4", "file not found", "check the path")),
    "missing second file": (lambda s, d: [str(s["videos"]["long"]), str(d / "gone.mp4"), *_weights(s)],
                            ("gone.mp4", "file not found")),
    "corrupt video": (lambda s, d: [str(_write(d / "junk.mp4", b"\x00" * 512 + b"not a video" * 50)), *_weights(s)],
                      ("junk.mp4", "corrupt", "re-encode")),
    "too few frames": (lambda s, d: [str(_header_only_mkv(d)), *_weights(s)], ("empty.mkv", "0 frames", "re-encode")),
    "sfc checkpoint with export": (lambda s, d: [str(s["videos"]["long"]), "--export", str(d), "--sfc-checkpoint", str(s["sfc"])],
                                   ("--sfc-checkpoint does not apply with --export", "drop --sfc-checkpoint")),
    "precision without export": (lambda s, d: [str(s["videos"]["long"]), *_weights(s), "--precision", "fp16"],
                                 ("--precision fp16 applies to exported artifacts", "pass --export DIR")),
    "runtime without export": (lambda s, d: [str(s["videos"]["long"]), *_weights(s), "--runtime", "onnxruntime"],
                               ("--runtime onnxruntime runs exported artifacts", "pass --export DIR")),
    "not an export folder": (lambda s, d: [str(s["videos"]["long"]), "--export", str(d)], ("no manifest.json", "sfc-deploy export")),
    "class count": (lambda s, d: [str(s["videos"]["long"]), *_weights(s), "--classes", str(_write(d / "c.txt", b"a\nb\n"))],
                    ("lists 2 class names but the model has 6 classes",)),
    "max frames on a fixed time axis": (
        lambda s, d: [str(s["videos"]["long"]), "--export", str(_export(s, "torchscript")), "--runtime", "torchscript",
                      "--max-frames", "5"],
        ("takes exactly 8 frames", "drop --max-frames 5")),
    "frames smaller than the export": (
        lambda s, d: [str(write_counter_video(d / "tall.mp4", 16, (40, 32), 25)), "--export", str(_export(s, "torchscript")),
                      "--runtime", "torchscript"],
        ("tall.mp4", "resize to 40x32 but the export takes 32x40", "re-export with --size")),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_json(setup: dict, tmp_path: Path, case: str) -> None:
    make_args, fragments = BAD[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["predict", *make_args(setup, inputs), "--json", str(out / "p.json")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert list(out.iterdir()) == []  # no JSON, no temp file


def test_a_video_that_cannot_be_classified_is_said_the_others_go_on_and_nothing_is_written(setup: dict,
                                                                                          tmp_path: Path) -> None:
    """Many files decode ahead on the prefetcher; the tall one (smaller than the export once resized) fails
    alone: the videos before and after it are still classified and shown, then exit 2 naming it, no JSON."""
    tall = write_counter_video(tmp_path / "tall.mp4", 16, (40, 32), 25)
    videos = [setup["videos"]["long"], tall, setup["videos"]["wide"]]
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["predict", *map(str, videos), "--export", str(_export(setup, "torchscript")),
                                 "--runtime", "torchscript", "--workers", "2", "--prefetch", "1",
                                 "--json", str(out / "p.json")])
    assert result.exit_code == 2, result.output
    stdout = " ".join(result.stdout.split())
    assert stdout.index("long.mp4") < stdout.index("tall.mp4: not classified") < stdout.index("wide.mp4")
    assert stdout.count("most attended:") == 2  # both other videos were classified and shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "1 of 3 videos could not be classified" in lines[0] and "tall.mp4" in lines[0]
    assert list(out.iterdir()) == []
