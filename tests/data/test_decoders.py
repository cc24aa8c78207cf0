"""The decoder settings read_frames uses (threaded PyAV) return exactly the frames of a plain decode.

read_frames lets FFmpeg thread the decoder (``thread_type="AUTO"``: frame and slice threads) and
seeks to keyframes; benchmarks/decode/ chose these settings by measurement. Threads and seeks must
not change a single pixel, so both are compared with a single-threaded decode from the start, on
textured moving content with B-frames (where frame threading and seeking have work to get wrong).
"""

from __future__ import annotations

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from sfc_deploy.data.crops import clip_frame_indices, clip_starts, full_video_indices
from sfc_deploy.data.video import DecodeStats, probe_video, read_frames, write_video

FRAMES, H, W, GOP = 72, 64, 96, 24


def _moving_texture(frames: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    tex = rng.integers(0, 256, (h + frames, w + 2 * frames, 3), dtype=np.uint8)
    tex = ((tex.astype(np.uint16) + np.roll(tex, 1, 0) + np.roll(tex, 1, 1)) // 3).astype(np.uint8)
    out = np.stack([tex[t // 2: t // 2 + h, 2 * t: 2 * t + w] for t in range(frames)])
    out[:, 10:30, 20:40] = 255 - out[:, 10:30, 20:40]  # an object that stays put while the scene pans
    return np.ascontiguousarray(out)


@pytest.fixture(scope="module")
def textured_mp4(tmp_path_factory: pytest.TempPathFactory):
    path = write_video(tmp_path_factory.mktemp("decoders") / "textured.mp4", _moving_texture(FRAMES, H, W), 30, gop=GOP)
    return path


def _plain_decode(path, *, thread_type: str = "NONE", thread_count: int = 1) -> np.ndarray:
    """Every frame, in order, from the start: (T, H, W, 3)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        stream.codec_context.thread_count = thread_count
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def test_file_has_b_frames_and_several_keyframes(textured_mp4):
    info = probe_video(textured_mp4)
    assert info.num_frames == FRAMES and len(info.keyframes) == FRAMES // GOP
    with av.open(str(textured_mp4)) as container:
        types = {PictureType(f.pict_type).name for f in container.decode(video=0)}
    assert "B" in types, f"the encoder wrote no B-frames ({types}); the test would not exercise reordering"


@pytest.mark.parametrize("pattern", ["sfc", "dense", "scattered"])
def test_read_frames_equals_single_threaded_decode(textured_mp4, pattern):
    reference = _plain_decode(textured_mp4)
    wanted = {
        "sfc": full_video_indices(FRAMES, 8, 36),
        "dense": [i for s in clip_starts(FRAMES, 16, 3) for i in clip_frame_indices(FRAMES, s, 4, 4)],
        "scattered": [70, 3, 49, 25, 25, 0],
    }[pattern]
    stats = DecodeStats()
    got = read_frames(textured_mp4, wanted, stats=stats).permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(got, reference[wanted])
    if pattern == "scattered":
        assert stats.seeks >= 1  # the seek path was taken, and still gave identical pixels


def test_frame_threads_equal_single_thread(textured_mp4):
    single = _plain_decode(textured_mp4)
    threaded = _plain_decode(textured_mp4, thread_type="FRAME", thread_count=4)
    assert threaded.shape == single.shape == (FRAMES, H, W, 3)
    np.testing.assert_array_equal(threaded, single)
