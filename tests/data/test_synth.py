"""The synthetic dataset: determinism, the action window, class motions, the written files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.data.synth import (
    ACTION_MIN_BRIGHTNESS,
    MOTIONS,
    SynthOptions,
    VideoSpec,
    parse_size,
    render_video,
    video_specs,
    write_synth_dataset,
)
from sfc_deploy.data.video import probe_video, read_frames, write_video
from sfc_deploy.errors import ConfigError

TINY = SynthOptions(classes=3, train_per_class=2, test_per_class=1, frames=32, size=(32, 48), seed=3)


def bright_mask(frames: np.ndarray) -> np.ndarray:
    """(T, H, W): pixels only the action object reaches."""
    return frames.astype(np.float32).mean(-1) >= ACTION_MIN_BRIGHTNESS - 20


def spec_for(motion: str, seed: int = 0) -> VideoSpec:
    return VideoSpec(motion, frames=96, size=(64, 80), start=20, end=80, seed=(seed, 9), distractors=5)


def test_render_is_deterministic_by_seed():
    a, b = render_video(spec_for("zigzag")), render_video(spec_for("zigzag"))
    assert a.dtype == np.uint8 and a.shape == (96, 64, 80, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_video(spec_for("zigzag", seed=1)))


@pytest.mark.parametrize("motion", MOTIONS)
def test_action_appears_only_inside_its_window(motion):
    mask = bright_mask(render_video(spec_for(motion))).any(axis=(1, 2))
    assert not mask[:20].any() and not mask[80:].any()
    if motion == "blink":
        assert 0.3 < mask[20:80].mean() < 0.8
    else:
        assert mask[20:80].all()


def _track(motion: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid y, x and area of the action object over its window."""
    mask = bright_mask(render_video(spec_for(motion)))[20:80]
    yy, xx = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]]
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    return (mask * yy).sum(axis=(1, 2)) / area, (mask * xx).sum(axis=(1, 2)) / area, area


@pytest.mark.parametrize(
    ("motion", "check"),
    [
        ("move_right", lambda y, x, a: x[-1] - x[0] > 20 and abs(y[-1] - y[0]) < 3),
        ("move_left", lambda y, x, a: x[0] - x[-1] > 20 and abs(y[-1] - y[0]) < 3),
        ("move_up", lambda y, x, a: y[0] - y[-1] > 20 and abs(x[-1] - x[0]) < 3),
        ("move_down", lambda y, x, a: y[-1] - y[0] > 20 and abs(x[-1] - x[0]) < 3),
        ("grow", lambda y, x, a: a[-1] > 3 * a[0]),
        ("shrink", lambda y, x, a: a[0] > 3 * a[-1]),
        ("zigzag", lambda y, x, a: abs(x[-1] - x[0]) > 20 and np.ptp(y) > 8),
    ],
)
def test_each_class_has_its_motion(motion, check):
    assert check(*_track(motion))


@pytest.mark.parametrize(("motion", "sign"), [("orbit_cw", 1), ("orbit_ccw", -1)])
def test_orbits_turn_the_right_way(motion, sign):
    y, x, _ = _track(motion)
    angle = np.unwrap(np.arctan2(y - y.mean(), x - x.mean()))  # image y points down: + is clockwise
    assert sign * (angle[-1] - angle[0]) > np.pi


def test_video_specs_windows_and_labels():
    specs = video_specs(SynthOptions(classes=4, train_per_class=5, frames=256), "train")
    assert len(specs) == 20 and specs == video_specs(SynthOptions(classes=4, train_per_class=5, frames=256), "train")
    for rel, spec in specs:
        assert rel.startswith(f"videos/train/{spec.motion}/")
        assert 0.25 * 256 - 1 <= spec.end - spec.start <= 0.45 * 256 + 1 and 0 <= spec.start < spec.end <= 256
    assert {s.motion for _, s in specs} == set(MOTIONS[:4])
    assert len({(s.start, s.end) for _, s in specs}) > 10  # windows differ per video


def test_written_dataset_is_deterministic_and_readable(tmp_path):
    a = write_synth_dataset(tmp_path / "a", TINY)
    write_synth_dataset(tmp_path / "b", TINY)
    assert a.num_train == 6 and a.num_test == 3 and a.class_names == MOTIONS[:3]
    for name in ("train.csv", "test.csv", "classes.txt", "synth.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    train = read_csv_list(tmp_path / "a" / "train.csv")
    assert train.class_names == MOTIONS[:3] and train.labels == [0, 0, 1, 1, 2, 2]
    for (path, _), extra in zip(train, train.extras):
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        frames = read_frames(path, range(32))
        assert frames.equal(read_frames(twin, range(32)))
        assert probe_video(path).fps == 25
        start, end = int(extra["start"]), int(extra["end"])
        bright = bright_mask(frames.permute(1, 2, 3, 0).numpy()).any(axis=(1, 2))
        assert not bright[:start].any() and not bright[end:].any() and bright[start:end].any()
    other = write_synth_dataset(tmp_path / "c", dataclasses.replace(TINY, seed=4))
    assert (other.out / "train.csv").read_text() != (tmp_path / "a" / "train.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp dirs left


def test_parallel_workers_give_the_same_files(tmp_path):
    small = dataclasses.replace(TINY, classes=2, train_per_class=1, test_per_class=1)
    write_synth_dataset(tmp_path / "one", small)
    write_synth_dataset(tmp_path / "two", small, workers=2)
    for path in sorted((tmp_path / "one" / "videos").rglob("*.mp4")):
        twin = tmp_path / "two" / path.relative_to(tmp_path / "one")
        assert read_frames(path, range(32)).equal(read_frames(twin, range(32)))


def test_existing_output_refused_then_forced(tmp_path):
    small = dataclasses.replace(TINY, classes=2, train_per_class=1, test_per_class=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists.*--force"):
        write_synth_dataset(out, small)
    write_synth_dataset(out, small, force=True)
    assert not (out / "old.txt").exists() and (out / "test.csv").read_text() == "path,label,start,end\n"


def test_failure_leaves_nothing_behind(tmp_path):
    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_synth_dataset(tmp_path / "out", TINY, progress=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": 1}, "classes must be 2..10"),
        ({"classes": 11}, "classes must be 2..10"),
        ({"frames": 8}, "frames must be >= 16"),
        ({"size": (33, 48)}, "size must be even"),
        ({"window": (0.5, 0.3)}, "window fractions"),
        ({"train_per_class": 0, "test_per_class": 0}, "not both 0"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_invalid_options(change, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        write_synth_dataset(tmp_path / "out", dataclasses.replace(TINY, **change))
    assert not (tmp_path / "out").exists()


def test_parse_size():
    assert parse_size("64x80") == (64, 80) and parse_size("32X40") == (32, 40)
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        parse_size("64")


def test_encoding_the_same_frames_gives_the_same_bytes(tmp_path):
    # Regression: x264's mb-tree rate control read uninitialised memory on small frames, so the
    # same frames encoded to different bytes now and then (about 1 encode in 12 here).
    for _, spec in video_specs(TINY, "train"):
        frames = render_video(spec)
        first = write_video(tmp_path / "first.mp4", frames).read_bytes()
        for _ in range(3):
            assert write_video(tmp_path / "again.mp4", frames).read_bytes() == first
