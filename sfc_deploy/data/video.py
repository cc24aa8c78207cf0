"""Video files in (probe, decode only the frames a strategy needs, resize, normalise) and out.

The decoder is PyAV (FFmpeg), so mp4/avi/webm/mkv with any codec FFmpeg reads all work.
Frames are numbered in presentation order from 0, the order :mod:`sfc_deploy.data.crops` counts in.

Reading is frugal because decoding dominates preprocessing time: frames are decoded in order but
only the needed ones are converted to RGB, decoding stops after the last needed frame, and when a
keyframe lies between the decoder's position and the next needed frame, the demuxer seeks to it
instead of decoding the frames in between (this is what makes sparse strategies such as
``single`` or segment sampling cheap on long videos). In H.264, the packets of frames no other frame
refers to (``nal_ref_idc`` 0: most B-frames) that no strategy asked for are never decoded; the
returned frames are bit-identical to a full decode (x264's files are about half non-reference frames:
``benchmarks/decode``; the effect end to end: ``benchmarks/e2e``).

Preprocessing (:func:`preprocess_frames`) resizes with ``torch.nn.functional.interpolate``
(bilinear, ``antialias=True``, ``align_corners=False``), so the short side becomes
``Preprocess.short_side`` (long side ``floor(long * short_side / short)``, as PyTorchVideo's
``ShortSideScale`` and torchvision's ``Resize(int)``). Antialiasing matters when downscaling (e.g.
1080p -> 256) where plain bilinear aliases; upscaling it equals plain bilinear. Decoded uint8 frames
are resized in uint8 on channels-last memory (torch's vectorised path, as torchvision's ``Resize``
on uint8 tensors): the result is the float resize rounded to whole grey levels (within 1 of it), and
decoding plus resizing a video runs 1.5-2.7x faster than with float32 copies of full-size frames
(``benchmarks/decode/resize.md``).
Float frames are resized in float32. Then ``(x * scale - mean) / std`` per channel.

:func:`write_video` encodes RGB frames (libx264/mpeg4/VP9, yuv420p) for the synthetic dataset and tests.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import Preprocess

#: Frames resized per interpolate call: bounds the float32 working memory on long videos.
RESIZE_CHUNK = 64

#: Encoders tried per container suffix, best first.
_CODECS = {".avi": ("mpeg4", "libx264"), ".webm": ("libvpx-vp9", "libvpx")}
_DEFAULT_CODECS = ("libx264", "h264", "mpeg4")

_REENCODE = "re-encode it (ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns from the container without decoding.

    Attributes:
        path: the file.
        num_frames: frames in the video stream, counted from its packets (container headers are
            often missing or wrong for mkv/webm, so they are not trusted).
        fps: average frame rate (frames per second).
        height: decoded frame height in pixels.
        width: decoded frame width in pixels.
        codec: codec name, e.g. "h264".
        keyframes: indices (presentation order) of the frames a decoder can start from.
        frame_pts: presentation timestamp of every frame in order, or ``None`` where timestamps
            are missing or not unique (then reading decodes from the start and never seeks).
    """

    path: Path
    num_frames: int
    fps: float
    height: int
    width: int
    codec: str
    keyframes: tuple[int, ...]
    frame_pts: tuple[int, ...] | None

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoError(f"{path}: file not found; check the path (relative paths are from the current directory)")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file; pass the video file itself")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: is empty (0 bytes, 0 frames); the download or copy failed, fetch the file again")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VideoError(
            f"{path}: cannot be opened as a video ({reason}); the file is corrupt or truncated, {_REENCODE}"
        ) from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream (0 frames); pass a file that contains video")
    return container.streams.video[0]


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, rate, size and keyframe positions, from a demux pass (no decoding).

    Demuxing reads the file but decodes nothing, which is orders of magnitude cheaper than
    decoding; it gives an exact frame count and the keyframe positions that make seeking safe.

    Raises:
        VideoError: the file is missing, not a video, or has no frames.
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        pts: list[int | None] = []
        keys: list[int | None] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream flush packet
                    continue
                stamp = packet.pts if packet.pts is not None else packet.dts
                pts.append(stamp)
                if packet.is_keyframe:
                    keys.append(stamp)
        except (av.FFmpegError, OSError) as exc:
            if not pts:
                raise VideoError(f"{path}: cannot read any frame ({exc}); the file is corrupt, {_REENCODE}") from None
        if not pts:
            raise VideoError(f"{path}: has 0 frames; the file is empty or truncated, {_REENCODE}")
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if fps <= 0 and stream.duration and stream.time_base:
            fps = len(pts) / float(stream.duration * stream.time_base)
        frame_pts: tuple[int, ...] | None = None
        keyframes: tuple[int, ...] = (0,)
        if None not in pts and len(set(pts)) == len(pts):
            frame_pts = tuple(sorted(pts))  # type: ignore[arg-type]
            order = {p: i for i, p in enumerate(frame_pts)}
            keyframes = tuple(sorted({order[k] for k in keys if k is not None} | {0}))
        return VideoInfo(
            path=path,
            num_frames=len(pts),
            fps=fps,
            height=int(ctx.height),
            width=int(ctx.width),
            codec=str(ctx.name),
            keyframes=keyframes,
            frame_pts=frame_pts,
        )
    finally:
        container.close()


@dataclass
class DecodeStats:
    """Counts filled in by :func:`read_frames`: how much work a read took (tests, benchmarks).

    Attributes:
        decoded: frames the decoder produced (needed or not).
        seeks: demuxer seeks performed.
        skipped: packets of unneeded non-reference frames never sent to the decoder (H.264).
    """

    decoded: int = 0
    seeks: int = 0
    skipped: int = 0


def _avcc_length_size(extradata: bytes | None) -> int | None:
    """Bytes of each NAL unit's length prefix in an H.264 stream stored as AVCC (mp4, mkv, mov: its
    ``avcC`` extradata starts with version 1), or None for Annex B byte streams (start codes)."""
    if extradata and len(extradata) >= 5 and extradata[0] == 1:
        return (extradata[4] & 3) + 1
    return None


def _nal_headers(data: bytes, length_size: int | None) -> list[int]:
    """The first byte of every NAL unit in one H.264 packet (AVCC length-prefixed, or Annex B)."""
    heads = []
    if length_size is None:
        at = data.find(b"\x00\x00\x01")
        while at >= 0 and at + 3 < len(data):
            heads.append(data[at + 3])
            at = data.find(b"\x00\x00\x01", at + 3)
        return heads
    at = 0
    while at + length_size < len(data):
        size = int.from_bytes(data[at : at + length_size], "big")
        heads.append(data[at + length_size])
        at += length_size + size
    return heads


def h264_disposable(data: bytes, length_size: int | None) -> bool:
    """Whether an H.264 packet holds only non-reference pictures: every coded slice (NAL types 1-5)
    has ``nal_ref_idc`` 0, so no other frame is predicted from it and a decoder can be spared it
    without changing any other frame's pixels (a packet without slices is not disposable)."""
    slices = [head for head in _nal_headers(data, length_size) if 1 <= head & 0x1F <= 5]
    return bool(slices) and all(head >> 5 & 3 == 0 for head in slices)


class _SeekMiss(Exception):
    """A seek landed somewhere the packet index did not predict; decode from the start instead."""


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    *,
    info: VideoInfo | None = None,
    stats: DecodeStats | None = None,
    reference_only: bool = False,
) -> torch.Tensor:
    """Decode the listed frames as raw RGB.

    Args:
        path: the video file.
        indices: frame indices in presentation order; any order, repeats allowed (a short video's
            clips repeat its last frame).
        info: the result of :func:`probe_video` when the caller already has it (saves a demux pass).
        stats: if given, receives the number of frames decoded and seeks made.
        reference_only: the fast mode (``--fast-decode``): the decoder skips non-reference frames
            (FFmpeg ``skip_frame=NONREF``: about half of an H.264 stream with B-frames) and each
            wanted frame is the nearest decoded one (the earlier on a tie), so a returned frame may
            be up to a B-frame run away from the wanted index (1-2 frames with x264's defaults).
            Files without per-frame timestamps are decoded exactly, as without it.

    Returns:
        uint8 (3, len(indices), H, W), frames in the order of ``indices``; a view of (T, H, W, 3)
        memory (what the decoder writes), the layout :func:`resize_short_side` resizes fastest.

    Raises:
        VideoError: missing/corrupt file, or an index the file does not reach.
    """
    path = Path(path)
    info = info or probe_video(path)
    if not indices:
        return torch.empty((3, 0, info.height, info.width), dtype=torch.uint8)
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0 or wanted[-1] >= info.num_frames:
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise VideoError(
            f"{path}: frame {bad} requested but the video has {info.num_frames} frames; "
            "compute indices from probe_video(path).num_frames"
        )
    stats = stats if stats is not None else DecodeStats()
    try:
        decoded, reached = _decode(path, wanted, info, stats, allow_seek=info.frame_pts is not None,
                                   reference_only=reference_only and info.frame_pts is not None)
    except _SeekMiss:  # frames are then counted in decoding order, which needs every frame decoded
        decoded, reached = _decode(path, wanted, info, stats, allow_seek=False)
    missing = [i for i in wanted if i not in decoded]
    if missing:
        raise VideoError(
            f"{path}: too few frames: frame {missing[0]} requested but only {reached} of the "
            f"{info.num_frames} listed frames decode; the file is truncated or damaged, {_REENCODE}"
        )
    stacked = np.stack([decoded[i] for i in indices])  # (T, H, W, 3)
    return torch.from_numpy(stacked).permute(3, 0, 1, 2)  # a view: each frame stays channels-last in memory


#: Reference-only decoding: the most frames a wanted frame past the last decoded one may be from it
#: (a trailing run of skipped B-frames); farther, the frames are missing (a truncated file).
MAX_REFERENCE_GAP = 16


def _decode(
    path: Path, wanted: list[int], info: VideoInfo, stats: DecodeStats, *, allow_seek: bool,
    reference_only: bool = False,
) -> tuple[dict[int, np.ndarray], int]:
    """Decode ``wanted`` (ascending, unique) into RGB arrays by frame index; also one past the last index seen.

    With ``allow_seek`` frames are identified by their timestamps (the only way after a seek);
    without it they are counted from the start, which trusts nothing but the decoder's order.
    ``reference_only`` (needs timestamps) skips non-reference frames and gives each wanted index the
    nearest decoded frame.
    """
    container = _open(path)
    out: dict[int, np.ndarray] = {}
    reached = 0
    need = set(wanted)
    pending = deque(wanted)  # still needed, ascending; pending[0] is the next target
    last: tuple[int, av.VideoFrame] | None = None  # reference_only: the previous decoded frame
    rgb: dict[int, np.ndarray] = {}  # reference_only: conversions of the previous and current frame

    def convert(index: int, frame: av.VideoFrame) -> np.ndarray:
        if index not in rgb:  # each decoded frame is converted once, however many wanted indices it serves
            for stale in [k for k in rgb if last is None or k != last[0]]:
                del rgb[stale]
            rgb[index] = frame.to_ndarray(format="rgb24")
        return rgb[index]

    def nearest(index: int, frame: av.VideoFrame) -> None:
        """Give every pending index up to ``index`` the nearer of the previous decoded frame and this one."""
        while pending and pending[0] <= index:
            target = pending.popleft()
            if last is not None and target - last[0] <= index - target:
                out[target] = convert(*last)
            else:
                out[target] = convert(index, frame)

    def key_before(index: int) -> int:
        return info.keyframes[bisect.bisect_right(info.keyframes, index) - 1]

    def frames(stream: av.video.stream.VideoStream, skip: bool) -> Iterator[av.VideoFrame]:
        """The decoded frames; with ``skip`` the packets of unneeded non-reference frames are never decoded."""
        length_size = _avcc_length_size(stream.codec_context.extradata) if skip else None
        for packet in container.demux(stream):
            if (skip and packet.size and packet.pts in pts_index and pts_index[packet.pts] not in need  # type: ignore[operator]
                    and h264_disposable(bytes(packet), length_size)):
                stats.skipped += 1
                continue
            yield from packet.decode()

    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        if reference_only:
            stream.codec_context.skip_frame = "NONREF"
        pts_index = {p: i for i, p in enumerate(info.frame_pts)} if allow_seek and info.frame_pts else None
        # exact decoding spares the decoder the H.264 frames nothing needs: about half of a stream with B-frames
        skip = pts_index is not None and not reference_only and stream.codec_context.name == "h264"
        position = 0  # index of the next frame an in-order decode would produce
        while pending:
            target = pending[0]
            seeked = allow_seek and key_before(target) > position
            if seeked:
                key_pts = info.frame_pts[key_before(target)]  # type: ignore[index]
                container.seek(key_pts, stream=stream, backward=True, any_frame=False)
                stats.seeks += 1
            counter = position
            jumped = False
            first = True
            try:
                for frame in frames(stream, skip):
                    stats.decoded += 1
                    if pts_index is not None and frame.pts in pts_index:
                        index = pts_index[frame.pts]
                    elif seeked or reference_only:  # skipped frames cannot be counted: decode exactly instead
                        raise _SeekMiss
                    else:
                        index = counter
                    if first and seeked and index > target:
                        raise _SeekMiss
                    first = False
                    counter = index + 1
                    reached = max(reached, counter)
                    if reference_only:
                        nearest(index, frame)
                        last = (index, frame)
                    elif index in need:
                        out[index] = frame.to_ndarray(format="rgb24")
                        need.discard(index)
                        while pending and pending[0] not in need:
                            pending.popleft()
                    if not pending:
                        break  # stop after the last needed frame
                    if allow_seek and key_before(pending[0]) > counter:
                        position, jumped = counter, True  # jumping beats decoding the gap
                        break
            except av.FFmpegError:
                break  # damaged data: the caller reports the frames that are missing
            if not jumped:
                break  # the stream ended
        while reference_only and last is not None and pending and pending[0] - last[0] <= MAX_REFERENCE_GAP:
            out[pending.popleft()] = convert(*last)  # a trailing run of skipped frames: the last decoded one
    finally:
        container.close()
    return out, reached


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize (3, T, H, W) frames so that min(H, W) == ``short_side``; returns float32.

    Bilinear with ``antialias=True``; the long side is ``floor(long * short_side / short)``. uint8
    frames are resized in uint8 on channels-last memory (the float resize rounded to whole grey
    levels, many times faster on full-size frames), float frames on float32 copies. Frames already
    at size are only cast.
    """
    if frames.dim() != 4 or frames.shape[0] != 3:
        raise VideoError(f"expected frames of shape (3, T, H, W), got {tuple(frames.shape)}")
    _, t, h, w = frames.shape
    size = output_size(h, w, short_side)
    if size == (h, w) or t == 0:
        return frames.to(torch.float32).reshape(3, t, *size)
    x = frames.permute(1, 0, 2, 3)  # (T, 3, H, W): frames as the batch
    if frames.dtype == torch.uint8:  # no copy when the frames come from read_frames
        x = x.contiguous(memory_format=torch.channels_last)
        small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return small.permute(1, 0, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
    chunks = [
        F.interpolate(x[i : i + RESIZE_CHUNK].to(torch.float32), size=size, mode="bilinear",
                      align_corners=False, antialias=True)
        for i in range(0, t, RESIZE_CHUNK)
    ]
    return torch.cat(chunks).permute(1, 0, 2, 3).contiguous()


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) after resizing the short side to ``short_side``, keeping the aspect ratio."""
    if height <= width:
        return short_side, int(math.floor(width * short_side / height))
    return int(math.floor(height * short_side / width)), short_side


def normalize(frames: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """``(x * scale - mean) / std`` per channel on (3, T, H, W), in float32 (a new tensor)."""
    x = frames.to(torch.float32) * preprocess.scale
    mean = torch.tensor(preprocess.mean, dtype=torch.float32, device=frames.device).view(3, 1, 1, 1)
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=frames.device).view(3, 1, 1, 1)
    return (x - mean) / std


def preprocess_frames(frames: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Raw uint8 (3, T, H, W) -> network input float32 (3, T, H', W'): resize, then normalise."""
    return normalize(resize_short_side(frames, preprocess.short_side), preprocess)


def load_video(
    path: str | Path,
    preprocess: Preprocess,
    indices: Sequence[int] | None = None,
    *,
    info: VideoInfo | None = None,
) -> torch.Tensor:
    """Decode (all, or the listed) frames and preprocess them: float32 (3, T, H', W').

    Args:
        path: the video file.
        preprocess: short side, scale, mean and std of the model that will consume the frames.
        indices: frames to read (default: every frame; mind the memory on long videos).
        info: a previous :func:`probe_video` result.
    """
    info = info or probe_video(path)
    idx = list(range(info.num_frames)) if indices is None else list(indices)
    return preprocess_frames(read_frames(path, idx, info=info), preprocess)


def pick_encoder(path: str | Path) -> str:
    """The first encoder in the installed PyAV that suits the container of ``path``."""
    for name in _CODECS.get(Path(path).suffix.lower(), _DEFAULT_CODECS):
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types for unknown codecs by version
            continue
    raise ConfigError(f"no video encoder for {Path(path).suffix} files in this PyAV build; write .mp4 instead")


def write_video(
    path: str | Path, frames: np.ndarray | torch.Tensor, fps: int = 25, *, codec: str | None = None, gop: int | None = None
) -> Path:
    """Encode RGB frames as a real video file (yuv420p), for the synthetic data and for tests.

    Args:
        path: output file; the suffix picks the container (.mp4, .mkv, .avi, .webm).
        frames: uint8 (T, H, W, 3) RGB, H and W even (yuv420p halves the chroma planes).
        fps: frame rate.
        codec: encoder name (default: libx264, or mpeg4 for .avi and VP9 for .webm).
        gop: keyframe interval in frames (default: 2 seconds), small enough that readers can seek.
    """
    path = Path(path)
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 (T, H, W, 3), got {array.dtype} {array.shape}")
    t, h, w, _ = array.shape
    if t < 1 or h % 2 or w % 2:
        raise ConfigError(f"need at least 1 frame of even height and width for yuv420p, got {t} frames of {h}x{w}")
    codec = codec or pick_encoder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop or 2 * int(fps)
        stream.codec_context.thread_count = 1  # bit-exact output whatever the machine's core count
        if codec in ("libx264", "h264"):
            # mbtree=0: x264's macroblock-tree rate control reads memory it never initialised on
            # small frames (its lowres propagation buffers), so the same frames could encode to
            # different bytes, and decode to different pixels, depending on the heap's contents.
            stream.options = {"crf": "17", "preset": "veryfast", "x264-params": "mbtree=0"}
        elif codec.startswith("libvpx"):
            stream.options = {"crf": "20", "b": "0", "deadline": "good", "cpu-used": "4"}
        else:
            stream.codec_context.bit_rate = max(2_000_000, 40 * h * w)
        for frame in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path
