"""``sfc-deploy predict --explain``: the picture is read back and checked against the prediction
(heatmap cells against M, outlines against the most attended frames, strip frames against the
frames they claim to be), the folder appears whole or not at all, and an existing one is refused."""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.synth import read_counter, write_counter_video
from sfc_deploy.eval.explain import DPI, FIGSIZE, MAX_STRIP, explain_video, png_names, strip_positions
from sfc_deploy.eval.predict import from_checkpoints, from_export, predict_video
from sfc_deploy.models import create_model, get_config
from sfc_deploy.models.sfc_model import save_sfc_checkpoint
from sfc_deploy.train.backbone import save_backbone

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

runner = CliRunner()
CLASSES = ("walk", "run", "jump", "sit", "wave", "clap")
SIZE = (32, 40)
PEAKS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded tiny SFC model with sharpened attention, its checkpoints and counter videos."""
    root = tmp_path_factory.mktemp("explain")
    config = get_config("slow8x8_tiny", num_classes=len(CLASSES))
    config = config.replace(preprocess=dataclasses.replace(config.preprocess, short_side=32, crop=32), class_names=CLASSES)
    torch.manual_seed(0)
    model = create_model(config, tau=2.0)
    with torch.no_grad():  # a fresh SFC looks almost everywhere alike: sharpen it so the peaks are clear
        for conv in (model.sfc.theta_q, model.sfc.theta_k):
            conv.weight.mul_(30)
    (root / "a").mkdir()
    (root / "b").mkdir()
    videos = {
        "long": write_counter_video(root / "long.mp4", 100, SIZE, 25),  # 13 sampled frames: all in the strip
        "many": write_counter_video(root / "many.mp4", 200, SIZE, 25),  # 25 sampled frames: 16 in the strip
        "a/clip": write_counter_video(root / "a" / "clip.mp4", 40, SIZE, 10),  # same stem as b/clip
        "b/clip": write_counter_video(root / "b" / "clip.mp4", 48, SIZE, 10),
        "amp": write_counter_video(root / "x&<y>.mp4", 56, SIZE, 25),  # a name HTML must escape
    }
    return {"root": root, "model": model, "videos": videos,
            "backbone": save_backbone(model.backbone, root / "backbone.safetensors"),
            "sfc": save_sfc_checkpoint(model, root / "sfc.safetensors")}


def _weights(setup: dict) -> list[str]:
    return ["--backbone", "slow8x8_tiny", "--checkpoint", str(setup["backbone"]), "--sfc-checkpoint", str(setup["sfc"])]


def _predictor(setup: dict):
    return from_checkpoints("slow8x8_tiny", checkpoint=setup["backbone"], sfc_checkpoint=setup["sfc"])


def _read_png(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a PNG."""
    image = matplotlib.image.imread(path)
    assert image.dtype == np.float32 and image.shape[2] in (3, 4)
    return (image[..., :3] * 255).round().astype(np.uint8)


def _heatmap_values(image: np.ndarray, box, k: int, t: int) -> np.ndarray:
    """(k, T) values in [0, 1] read back from the centre pixel of each heatmap cell through viridis."""
    lut = (matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    left, top, right, bottom = box
    out = np.empty((k, t), dtype=np.float32)
    for i in range(k):
        y = int(top + (i + 0.5) * (bottom - top) / k)
        for j in range(t):
            x = int(left + (j + 0.5) * (right - left) / t)
            distance = ((lut - image[y, x].astype(np.float32)) ** 2).sum(1)
            assert distance.min() < 30, f"cell ({i}, {j}) at pixel ({x}, {y}) is not a viridis colour: {image[y, x]}"
            out[i, j] = distance.argmin() / 255
    return out


def _is_outline(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 0] > 230) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)


def _outlined_in_picture(image: np.ndarray, boxes) -> list[bool]:
    """Whether the outline colour runs along the left and right edges of each strip frame."""
    found = []
    for left, top, right, bottom in boxes:
        rows = slice(int(top + 0.3 * (bottom - top)), int(top + 0.7 * (bottom - top)))
        edges = [image[rows, max(0, int(x) - 3): int(x) + 4] for x in (left, right)]
        found.append(all(_is_outline(e).any(axis=1).all() for e in edges))
    return found


@pytest.mark.parametrize("video", ["long", "many"])
def test_picture_draws_m_over_time_and_outlines_the_most_attended_frames(setup: dict, tmp_path: Path, video: str) -> None:
    path = setup["videos"][video]
    with _predictor(setup) as predictor:
        pred = predict_video(predictor, path)
    info = explain_video(pred, tmp_path / "x.png", top_frames=PEAKS)
    image = _read_png(info.path)
    assert (info.width, info.height) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert image.shape[:2] == (info.height, info.width)
    assert not [p for p in tmp_path.iterdir() if p.name != "x.png"]  # written atomically: no temporary left

    attention = pred.attention
    k, t = attention.shape
    mass = attention.sum(0)
    expected = torch.argsort(mass, descending=True)[:PEAKS].tolist()  # computed here, not by pred.peaks
    assert mass[expected[0]] > 1.2 * mass[expected[-1]] or t <= PEAKS  # distinct peaks: the test can tell
    assert info.outlined == tuple(expected)

    drawn = _heatmap_values(image, info.map_box, k, t)  # fails if M were drawn transposed or out of order
    np.testing.assert_allclose(drawn, (attention / attention.max()).numpy(), atol=0.01)
    column_mass = drawn.sum(0)
    assert column_mass.argmax() == int(mass.argmax()) and column_mass.argmin() == int(mass.argmin())

    shown = list(info.shown)
    assert shown == sorted(set(shown)) and set(expected) <= set(shown)
    assert len(shown) == min(t, MAX_STRIP) and shown[0] <= t // MAX_STRIP and shown[-1] >= t - 1 - t // MAX_STRIP
    assert _outlined_in_picture(image, info.frame_boxes) == [p in expected for p in shown]
    for pos, (left, top, right, bottom) in zip(shown, info.frame_boxes):  # the strip shows the frames it says
        inner = image[int(top) + 4: int(bottom) - 3, int(left) + 4: int(right) - 3]
        frame = torch.from_numpy(inner).permute(2, 0, 1)[:, None]
        assert read_counter(frame) == [pred.frame_indices[pos]]


def test_strip_keeps_every_peak_and_spreads_the_rest(setup: dict) -> None:
    with _predictor(setup) as predictor:
        pred = predict_video(predictor, setup["videos"]["many"])
    t = len(pred.frame_indices)
    for top, most in ((3, 16), (5, 6), (2, 2)):
        shown = strip_positions(pred, top_frames=top, max_frames=most)
        peaks = torch.argsort(pred.mass, descending=True)[:top].tolist()
        assert len(shown) == most and shown == sorted(set(shown)) and set(peaks) <= set(shown)
        assert max(b - a for a, b in zip([-1, *shown], [*shown, t])) <= 2 * t / most + 1
    assert png_names(["a/clip.mp4", "b/clip.mp4", "c/CLIP.avi", "clip-2.mp4"]) == ["clip.png", "clip-2.png", "CLIP-3.png",
                                                                                    "clip-2-2.png"]
    long = png_names(["é" * 300 + ".mp4"])[0]  # cut to fit a file name with its temporary's prefix and suffix
    assert long == "é" * 100 + ".png"


def _invoke(args: list[str]):
    return runner.invoke(app, ["predict", *args])


def test_cli_writes_a_picture_per_video_and_an_index(setup: dict, tmp_path: Path) -> None:
    v = setup["videos"]
    paths = [v["long"], v["a/clip"], v["b/clip"], v["amp"]]
    out = tmp_path / "explain"
    result = _invoke([*map(str, paths), *_weights(setup), "--explain", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["clip-2.png", "clip.png", "index.html", "long.png", "x&<y>.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["explain"]  # no temporary folder, no lock file
    page = (out / "index.html").read_text(encoding="utf-8")
    for path, png in zip(paths, ["long.png", "clip.png", "clip-2.png", "x%26%3Cy%3E.png"]):
        assert f"<h2>{html.escape(str(path))}</h2>" in page and f'src="{png}"' in page
    assert "x&<y>" not in page and page.count("<section>") == 4 and page.count("most attended:") == 4
    with _predictor(setup) as predictor:
        pred = predict_video(predictor, v["long"])
        info = explain_video(pred, tmp_path / "library.png", top_frames=PEAKS)
    assert f"{pred.top[0].name} ({pred.top[0].prob:.1%})" in page
    assert f"{pred.timestamps[info.outlined[0]]:.2f} s (frame {pred.frame_indices[info.outlined[0]]}" in page
    np.testing.assert_array_equal(_read_png(out / "long.png"), _read_png(info.path))  # the CLI draws what the library draws


def test_cli_explains_an_export_with_one_picture(setup: dict, tmp_path: Path) -> None:
    from sfc_deploy.export.exporter import ExportOptions, export_model

    export = tmp_path / "export"
    export_model(setup["model"], export, ExportOptions(
        formats=("torchscript",), parts=("head", "sfc", "tail"), frames=8, size=SIZE, raw_frames=64,
        random_weights=False, checkpoint=str(setup["backbone"]), sfc_checkpoint=str(setup["sfc"])))
    out = tmp_path / "explain"
    result = _invoke([str(setup["videos"]["many"]), "--export", str(export), "--runtime", "torchscript", "--explain", str(out)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["many.png"]  # one video: no index.html
    with from_export(export, runtime="torchscript") as predictor:
        pred = predict_video(predictor, setup["videos"]["many"])
    info = explain_video(pred, tmp_path / "library.png", top_frames=PEAKS)
    assert len(pred.frame_indices) == 8 and info.shown == tuple(range(8))  # the export's fixed time axis
    image = _read_png(out / "many.png")
    np.testing.assert_array_equal(image, _read_png(info.path))
    expected = torch.argsort(pred.attention.sum(0), descending=True)[:PEAKS].tolist()
    assert _outlined_in_picture(image, info.frame_boxes) == [p in expected for p in range(8)]


def test_existing_folder_is_refused_before_the_model_loads_and_force_replaces_it(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "explain"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    missing = tmp_path / "no-such-weights.safetensors"  # would fail if the model loaded first
    result = _invoke([str(setup["videos"]["long"]), "--checkpoint", str(missing), "--explain", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "already exists; pass --force" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["explain", "keep.txt"]

    result = _invoke([str(setup["videos"]["long"]), *_weights(setup), "--explain", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["explain", "long.png"]

    result = _invoke([str(setup["videos"]["long"]), *_weights(setup), "--force"])
    assert result.exit_code == 2 and "add --explain DIR or drop --force" in result.stderr


def test_failure_mid_way_leaves_no_folder(setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sfc_deploy.cli.predict as cli_predict

    calls = []

    def fail_second(pred, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return explain_video(pred, path, **kwargs)

    monkeypatch.setattr(cli_predict, "explain_video", fail_second)
    out = tmp_path / "explain"
    v = setup["videos"]
    result = _invoke([str(v["long"]), str(v["a/clip"]), *_weights(setup), "--explain", str(out)])
    assert result.exit_code == 70 and "disk on fire" in result.stderr, result.output
    assert len(calls) == 2 and calls[0].is_relative_to(tmp_path) and calls[0].name == "long.png"
    assert list(tmp_path.iterdir()) == []  # the first PNG went with its temporary folder; no lock file
