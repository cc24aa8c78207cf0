"""Decoding real files: frame counts, exact frame indices, frugal reading, preprocessing, errors."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
import torch

from sfc_deploy.data.synth import counter_frames, read_counter
from sfc_deploy.data.video import (
    DecodeStats,
    h264_disposable,
    load_video,
    normalize,
    output_size,
    preprocess_frames,
    probe_video,
    read_frames,
    resize_short_side,
    write_video,
)
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import Preprocess


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".webm"])
def test_probe_and_read_exact_frames(make_video, suffix):
    path = make_video(f"clip{suffix}", frames=40, size=(48, 64), fps=30, gop=10)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (40, 48, 64)
    assert info.fps == pytest.approx(30)
    assert info.keyframes[0] == 0
    wanted = [0, 1, 17, 39, 5, 5, 22]
    frames = read_frames(path, wanted, info=info)
    assert frames.dtype == torch.uint8 and frames.shape == (3, len(wanted), 48, 64)
    assert read_counter(frames) == wanted


def test_read_all_frames_in_order(make_video):
    path = make_video(frames=60)
    assert read_counter(read_frames(path, range(60))) == list(range(60))


def test_decoding_stops_after_last_needed_frame(make_video):
    path = make_video(frames=60, gop=100)
    stats = DecodeStats()
    read_frames(path, [2, 9], stats=stats)
    assert stats.seeks == 0 and stats.decoded <= 12  # a frame-threaded decoder may run a frame or two ahead


def test_sparse_reads_seek_to_the_keyframe_before(make_video):
    path = make_video(frames=120, gop=10)
    info = probe_video(path)
    assert len(info.keyframes) > 5
    far = info.keyframes[-1] + 2
    stats = DecodeStats()
    assert read_counter(read_frames(path, [far], info=info, stats=stats)) == [far]
    assert stats.seeks == 1 and stats.decoded < 20  # not the ~far frames a decode from 0 would take
    stats = DecodeStats()
    assert read_counter(read_frames(path, [3, 60, 110], info=info, stats=stats)) == [3, 60, 110]
    assert stats.seeks == 2 and stats.decoded < 40


def test_index_out_of_range_is_a_video_error(make_video):
    path = make_video(frames=20)
    with pytest.raises(VideoError, match="frame 20 requested but the video has 20 frames"):
        read_frames(path, [0, 20])


def test_too_few_decodable_frames(make_video):
    path = make_video(frames=20)
    stale = dataclasses.replace(probe_video(path), num_frames=30, frame_pts=None)
    with pytest.raises(VideoError, match=r"too few frames: frame 25 requested but only 20 of the 30"):
        read_frames(path, [1, 25], info=stale)


def _one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_missing_file(tmp_path):
    with pytest.raises(VideoError) as exc:
        probe_video(tmp_path / "nope.mp4")
    _one_line(exc, "nope.mp4", "not found", "check the path")


@pytest.mark.parametrize("content", [b"", b"\x00" * 512 + b"not a video" * 50])
def test_corrupt_or_empty_file(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError) as exc:
        load_video(path, Preprocess())
    _one_line(exc, "broken.mp4")
    assert "corrupt" in str(exc.value) or "empty" in str(exc.value)


def test_truncated_mp4_is_corrupt(make_video, tmp_path):
    data = make_video(frames=30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov atom) is at the end: gone
    with pytest.raises(VideoError) as exc:
        probe_video(cut)
    _one_line(exc, "cut.mp4", "corrupt or truncated", "re-encode")


def test_zero_frames(make_video, tmp_path):
    data = make_video("clip.mkv", frames=10).read_bytes()
    header_only = tmp_path / "header.mkv"
    header_only.write_bytes(data[: data.find(bytes.fromhex("1F43B675")) + 9])  # cut inside the first cluster
    with pytest.raises(VideoError) as exc:
        probe_video(header_only)
    _one_line(exc, "header.mkv", "0 frames")


def test_output_size_keeps_aspect_ratio():
    assert output_size(48, 64, 256) == (256, 341)
    assert output_size(64, 48, 32) == (42, 32)
    assert output_size(256, 340, 256) == (256, 340)


def test_resize_is_antialiased_bilinear():
    frames = torch.randint(0, 256, (3, 2, 64, 80), dtype=torch.uint8)
    out = resize_short_side(frames, 32)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 32, 40)
    x = frames.permute(1, 0, 2, 3).float()
    ref = torch.nn.functional.interpolate(x, size=(32, 40), mode="bilinear", align_corners=False, antialias=True)
    ref = ref.permute(1, 0, 2, 3)
    torch.testing.assert_close(resize_short_side(frames.float(), 32), ref)  # float frames: the float resize
    # uint8 frames: resized in uint8, i.e. the float resize rounded to whole grey levels
    assert out.equal(out.round()) and (out - ref).abs().max() <= 1.0
    assert (out - ref).abs().mean() < 0.5
    # the same whatever the frames' memory layout (read_frames gives a view of channels-last memory)
    assert resize_short_side(frames.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2), 32).equal(out)
    assert out.is_contiguous()
    # antialiasing: a 2x2 checkerboard averages out instead of aliasing
    board = ((torch.arange(64)[:, None] + torch.arange(80)) % 2 * 255).to(torch.uint8).expand(3, 1, 64, 80)
    assert resize_short_side(board, 32).std() < 1.0
    assert resize_short_side(frames, 64).equal(frames.float())  # already at size: only cast


@pytest.mark.parametrize(
    "pre",
    [Preprocess(short_side=32, crop=32), dataclasses.replace(Preprocess.mmaction2(), short_side=32, crop=32)],
    ids=["pytorchvideo", "mmaction2"],
)
def test_normalisation_both_conventions(pre):
    colour = torch.tensor([200, 100, 30], dtype=torch.uint8)
    frames = colour.view(3, 1, 1, 1).expand(3, 2, 48, 64).clone()
    out = preprocess_frames(frames, pre)
    assert out.shape == (3, 2, 32, 42) and out.dtype == torch.float32
    for c in range(3):
        expected = (float(colour[c]) * pre.scale - pre.mean[c]) / pre.std[c]
        torch.testing.assert_close(out[c], torch.full_like(out[c], expected), rtol=0, atol=1e-4)
    torch.testing.assert_close(normalize(frames, pre), normalize(frames.float(), pre))


def test_load_video_end_to_end(make_video):
    path = make_video(frames=12, size=(48, 64))
    video = load_video(path, Preprocess(short_side=24, crop=24), [0, 11])
    assert video.shape == (3, 2, 24, 32) and video.dtype == torch.float32
    raw = read_frames(path, [11]).float().mean()
    assert video[:, 1].mean().item() == pytest.approx(((raw / 255 - 0.45) / 0.225).item(), abs=0.05)


def test_write_video_rejects_odd_sizes_and_bad_arrays(tmp_path):
    with pytest.raises(ConfigError, match="even height and width"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 33, 40, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"uint8 \(T, H, W, 3\)"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 40, 3), np.float32))


def test_wrong_timestamps_fall_back_to_decoding_in_order(make_video):
    path = make_video(frames=60, gop=10)
    info = probe_video(path)
    shifted = dataclasses.replace(info, frame_pts=tuple(p + 1 for p in info.frame_pts))  # a seek cannot be trusted
    assert read_counter(read_frames(path, [45, 2, 58], info=shifted)) == [45, 2, 58]


def _nearest(decoded: list[int], wanted: int) -> int:
    """The decoded index nearest ``wanted``, the earlier on a tie."""
    return min(decoded, key=lambda d: (abs(d - wanted), d))


def _b_frame_counter_video(path, frames: int, gop: int):
    """A counter video with two non-reference B-frames between references (the counter's jumps in brightness
    would make x264 cut scenes at every frame, so scene cuts are off and the B-frames forced)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1
        stream.options = {"crf": "17", "preset": "veryfast", "x264-params": "mbtree=0:bframes=2:b-adapt=0:b-pyramid=none:scenecut=0"}
        for frame in counter_frames(frames, (48, 64)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


def test_reference_only_decodes_the_references_and_takes_the_nearest_frame(tmp_path):
    path = _b_frame_counter_video(tmp_path / "b.mp4", 120, gop=60)
    info = probe_video(path)
    full, fast = DecodeStats(), DecodeStats()
    assert read_counter(read_frames(path, range(120), info=info, stats=full)) == list(range(120))
    every = read_counter(read_frames(path, range(120), info=info, stats=fast, reference_only=True))
    decoded = sorted(set(every))
    assert full.decoded == 120 and fast.decoded == len(decoded) < 0.45 * 120  # skipped frames are never produced
    assert 0 in decoded and 60 in decoded  # the keyframes
    assert every == [_nearest(decoded, w) for w in range(120)]
    assert max(abs(got - w) for w, got in enumerate(every)) == 1
    wanted = [100, 3, 3, 57, 119, 8]  # any order, repeats; sparse reads seek as in the exact mode
    stats = DecodeStats()
    assert read_counter(read_frames(path, wanted, info=info, stats=stats, reference_only=True)) == [
        _nearest(decoded, w) for w in wanted]
    assert stats.seeks == 1


def test_exact_reads_never_decode_unneeded_non_reference_frames(tmp_path):
    """The B-frames nothing asked for are never sent to the decoder, and every returned frame is
    bit-identical to the same frame of a plain full decode."""
    path = _b_frame_counter_video(tmp_path / "b.mp4", 120, gop=60)
    info = probe_video(path)
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for wanted in ([*range(0, 120, 3)], [*range(1, 120, 8)], [100, 4, 4, 57, 119, 8], [*range(120)]):
        stats = DecodeStats()
        frames = read_frames(path, wanted, info=info, stats=stats)
        assert read_counter(frames) == wanted
        assert all(np.array_equal(frames[:, k].permute(1, 2, 0).numpy(), reference[i]) for k, i in enumerate(wanted))
        if len(set(wanted)) < 120:
            assert stats.skipped > 0
    stats = DecodeStats()
    read_frames(path, range(0, 120, 3), info=info, stats=stats)  # the I/P frames only: every B-frame is spared
    assert (stats.decoded, stats.skipped) == (40, 78)  # 39 pairs of B-frames up to 117, the last one needed
    stats = DecodeStats()
    read_frames(path, range(120), info=info, stats=stats)
    assert (stats.skipped, stats.decoded) == (0, 120)


def test_other_codecs_and_frames_without_timestamps_are_decoded_in_full(make_video):
    path = make_video("clip.avi", frames=30, gop=10)  # MPEG-4 part 2: no reference flags are read
    stats = DecodeStats()
    assert read_counter(read_frames(path, [2, 29], stats=stats)) == [2, 29]
    assert stats.skipped == 0


@pytest.mark.parametrize("length_size", [4, 2, None])
def test_h264_disposable_reads_nal_ref_idc_of_every_slice(length_size):
    def nal(ref_idc: int, kind: int, payload: bytes = b"\x88\x84\x00\x10") -> bytes:
        body = bytes([ref_idc << 5 | kind]) + payload
        return (len(body).to_bytes(length_size, "big") if length_size else b"\x00\x00\x00\x01") + body

    assert h264_disposable(nal(0, 1), length_size)  # a non-reference slice
    assert h264_disposable(nal(0, 6) + nal(0, 1) + nal(0, 1), length_size)  # SEI, then two such slices
    assert not h264_disposable(nal(2, 1), length_size)  # a reference slice
    assert not h264_disposable(nal(3, 5), length_size)  # IDR
    assert not h264_disposable(nal(0, 1) + nal(2, 1), length_size)  # one slice is referenced: keep the packet
    assert not h264_disposable(nal(0, 6), length_size)  # no slice at all
    assert not h264_disposable(b"", length_size)


def test_reference_only_without_timestamps_decodes_exactly(make_video):
    path = make_video(frames=30)
    bare = dataclasses.replace(probe_video(path), frame_pts=None)  # frames could not be identified when skipped
    stats = DecodeStats()
    assert read_counter(read_frames(path, [1, 7, 29], info=bare, stats=stats, reference_only=True)) == [1, 7, 29]
    assert stats.decoded == 30


def test_reference_only_still_reports_a_truncated_file(make_video):
    path = make_video(frames=20)
    stale = dataclasses.replace(probe_video(path), num_frames=60)  # the last 40 listed frames never decode
    with pytest.raises(VideoError, match="too few frames: frame 59 requested"):
        read_frames(path, [1, 59], info=stale, reference_only=True)
