"""Frame indices, crops and shapes of every sampling strategy, on tensors and on real files."""

from __future__ import annotations

import pytest
import torch

from sfc_deploy.data.samplers import SAMPLERS, get_sampler, sample_tensor, sample_video
from sfc_deploy.data.synth import read_counter
from sfc_deploy.data.video import DecodeStats, read_frames
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import Preprocess
from sfc_deploy.models.registry import get_config

CFG = get_config("slow8x8_tiny").replace(preprocess=Preprocess(short_side=32, crop=32))
#: No resize (48x64 files), no normalisation: output pixels are the decoded ones, so counters survive.
IDENTITY = get_config("slow8x8_tiny").replace(
    preprocess=Preprocess(convention="identity", scale=1.0, mean=(0, 0, 0), std=(1, 1, 1), short_side=48, crop=32)
)


def labelled(t: int, h: int = 32, w: int = 48) -> torch.Tensor:
    """A 'preprocessed' float video: channel 0 = frame index, 1 = row, 2 = column."""
    video = torch.empty(3, t, h, w)
    video[0] = torch.arange(t, dtype=torch.float32).view(t, 1, 1)
    video[1] = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    video[2] = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    return video


def check_rows(sample) -> None:
    """Each row holds exactly the frames and the crop it claims."""
    for row, frames, crop in zip(sample.tensor, sample.frame_indices, sample.crops):
        assert row[0, :, 0, 0].long().tolist() == list(frames)
        top, left = crop if crop is not None else (0, 0)
        assert (row[1, 0, 0, 0].item(), row[2, 0, 0, 0].item()) == (top, left)


def test_registry_lists_every_strategy():
    assert {"single", "uniform", "dense", "sfc", "segments"} <= set(SAMPLERS)
    assert get_sampler("dense").options == {"num_clips": 10, "num_crops": 3}


def test_single_is_centre_clip_centre_crop():
    s = sample_tensor(labelled(300), "single", CFG)
    assert s.tensor.shape == (1, 3, 8, 32, 32) and s.strategy == "single" and s.num_frames == 300
    assert s.frame_indices == (tuple(range(118, 118 + 64, 8)),)  # start (300 - 64) // 2
    assert s.crops == ((0, 8),)
    check_rows(s)


def test_uniform_clips_are_evenly_spaced():
    s = sample_tensor(labelled(300), "uniform", CFG, num_clips=5)
    assert s.tensor.shape == (5, 3, 8, 32, 32)
    assert [f[0] for f in s.frame_indices] == [0, 59, 118, 177, 236]
    assert set(s.crops) == {(0, 8)}
    check_rows(s)


def test_dense_rows_are_the_clips_and_crops_and_evenly_spaced():
    video = labelled(300)
    s = sample_tensor(video, "dense", CFG)
    assert s.tensor.shape == (30, 3, 8, 32, 32)
    for row, frames, (top, left) in zip(s.tensor, s.frame_indices, s.crops):  # each row, gathered by hand
        want = video[:, list(frames), top : top + 32, left : left + 32]
        torch.testing.assert_close(row, want.float(), rtol=0, atol=0)
    starts = [f[0] for f in s.frame_indices[::3]]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert starts[0] == 0 and starts[-1] == 300 - 64 and max(gaps) - min(gaps) <= 1
    assert s.crops[:3] == ((0, 0), (0, 8), (0, 16))  # left / centre / right along the long side
    check_rows(s)


def test_portrait_dense_crops_go_top_to_bottom():
    s = sample_tensor(labelled(80, h=48, w=32), "dense", CFG)
    assert s.crops[:3] == ((0, 0), (8, 0), (16, 0))
    check_rows(s)


def test_short_video_repeats_its_last_frame():
    s = sample_tensor(labelled(20), "dense", CFG)
    assert set(s.frame_indices) == {(0, 8, 16, 19, 19, 19, 19, 19)}
    check_rows(s)
    s = sample_tensor(labelled(20), "sfc", CFG)
    assert s.frame_indices == ((0, 8, 16, 16, 16, 16, 16, 16),)  # padded to one clip's frames
    assert sample_tensor(labelled(20), "sfc", CFG, min_frames=1).frame_indices == ((0, 8, 16),)


def test_sfc_takes_every_stride_frame_uncropped():
    s = sample_tensor(labelled(100, 32, 48), "sfc", CFG)
    assert s.tensor.shape == (1, 3, 13, 32, 48) and s.crops == (None,)
    assert s.frame_indices == (tuple(range(0, 100, 8)),)
    check_rows(s)


def test_sfc_long_video_becomes_uniform_segments():
    s = sample_tensor(labelled(2000, 8, 8), "sfc", CFG, max_frames=64, segments=4)
    idx = s.frame_indices[0]
    assert len(idx) == 64 and s.tensor.shape[2] == 64
    segs = [idx[i : i + 16] for i in range(0, 64, 16)]
    assert all(b - a == 8 for seg in segs for a, b in zip(seg, seg[1:]))  # consecutive sampled frames
    assert [seg[0] for seg in segs] == [0, 624, 1248, 1872]  # evenly spaced, first at 0, last at the end
    assert segs[-1][-1] + 8 > 2000 - 8
    assert sample_tensor(labelled(2000, 8, 8), "sfc", CFG, max_frames=None).tensor.shape[2] == 250


def test_segments_strategy_has_fixed_size():
    long = sample_tensor(labelled(2000, 8, 8), "segments", CFG, segments=8, frames_per_segment=4)
    short = sample_tensor(labelled(50, 8, 8), "segments", CFG, segments=8, frames_per_segment=4)
    assert long.tensor.shape[2] == short.tensor.shape[2] == 32
    assert short.frame_indices[0][:4] == (0, 8, 16, 24) and short.frame_indices[0][-4:] == (18, 26, 34, 42)


def test_uint8_input_is_resized_and_normalised_after_picking_frames():
    raw = torch.randint(0, 256, (3, 100, 48, 64), dtype=torch.uint8)
    s = sample_tensor(raw, "single", CFG)
    assert s.tensor.shape == (1, 3, 8, 32, 32) and s.tensor.dtype == torch.float32
    from sfc_deploy.data.video import preprocess_frames

    frames = preprocess_frames(raw[:, list(s.frame_indices[0])], CFG.preprocess)  # 32x42, centre crop at 5
    torch.testing.assert_close(s.tensor[0], frames[..., 5:37])
    assert s.crops == ((0, 5),)


def test_bad_strategy_and_options():
    with pytest.raises(ConfigError, match="did you mean dense"):
        get_sampler("dens")
    with pytest.raises(ConfigError, match="takes no option max_frames; accepted options: num_clips"):
        sample_tensor(labelled(50), "uniform", CFG, max_frames=3)
    with pytest.raises(ConfigError, match="num_clips must be an integer >= 1"):
        sample_tensor(labelled(50), "uniform", CFG, num_clips=0)
    with pytest.raises(ConfigError, match="max_frames must be an integer >= 8"):
        sample_tensor(labelled(50), "sfc", CFG, max_frames=4)
    with pytest.raises(VideoError, match=r"shape \(3, T, H, W\)"):
        sample_tensor(torch.zeros(10, 32, 32, 3), "single", CFG)
    with pytest.raises(VideoError, match="resize the short side"):
        sample_tensor(labelled(50, 16, 16), "single", CFG)


@pytest.mark.parametrize("strategy", ["single", "uniform", "dense", "sfc"])
def test_sample_video_reads_exactly_the_planned_frames(make_video, strategy):
    path = make_video(frames=150, size=(48, 64), gop=16)
    stats = DecodeStats()
    s = sample_video(path, strategy, IDENTITY, stats=stats)
    for row, frames in zip(s.tensor, s.frame_indices):
        assert read_counter(row) == list(frames)
    if strategy == "single":  # frames 43..99: jumps over the beginning and the gaps between keyframes
        assert stats.seeks >= 1 and stats.decoded < 75


@pytest.mark.parametrize("strategy", ["single", "dense", "sfc"])
def test_sample_video_equals_sample_tensor_on_the_decoded_video(make_video, strategy):
    path = make_video(frames=90, size=(48, 64))
    from_file = sample_video(path, strategy, CFG)
    from_tensor = sample_tensor(read_frames(path, range(90)), strategy, CFG)
    assert from_file.frame_indices == from_tensor.frame_indices
    expected = {"single": (1, 3, 8, 32, 32), "dense": (30, 3, 8, 32, 32), "sfc": (1, 3, 12, 32, 42)}
    assert from_file.tensor.shape == expected[strategy]
    torch.testing.assert_close(from_file.tensor, from_tensor.tensor, rtol=0, atol=1e-5)


def test_default_preprocessing_shapes(make_video):
    path = make_video(frames=24, size=(48, 64))
    assert sample_video(path, "single", "slow8x8_tiny").tensor.shape == (1, 3, 8, 256, 256)
    sfc = sample_video(path, "sfc", "slow8x8_tiny", min_frames=1)
    assert sfc.tensor.shape == (1, 3, 3, 256, 341) and sfc.frame_indices == ((0, 8, 16),)
