"""Which decoder, with which settings, for the two access patterns the project has (issue 15 item 3).

Patterns (frame indices from :mod:`sfc_deploy.data.crops`, as the samplers compute them):

* ``sfc``: every 8th raw frame of the first 288 (36 frames), what SFC reads at the paper's settings;
* ``dense``: 10 clips of 8 frames at stride 8 evenly spread over the video (80 frames), what 30-crop reads.

Files: 10 s, 30 fps, H.264 (libx264 via :func:`sfc_deploy.data.video.write_video`, crf 17, veryfast) at
640x360 and 1280x720, with a long GOP (250) and a short GOP (30); the content is a panning textured
scene with moving objects and mild sensor noise (a few Mbit/s, like real footage, not noise-dominated).

Decoders timed per video (the fastest of ``--repeats``, as the machine is shared; wall and process CPU seconds, so CPU/wall shows
the cores a setting really used):

* ``pyav project``: :func:`sfc_deploy.data.video.read_frames` as the project calls it (probe + read);
* ``pyav``: the same seek-to-keyframe / stop-early loop written here with explicit ``thread_type`` /
  ``thread_count`` (NONE x1, FRAME x2, AUTO x0 = FFmpeg's choice) to separate the threading effect;
* ``pyav nonref``: the same loop with ``codec_context.skip_frame = "NONREF"``: the decoder drops frames
  no other frame references; each wanted index gets the nearest frame that was decoded. The frames it
  returns are compared with the wanted ones (index error), here and on a tiny ``sfc-deploy synth`` set;
* ``torchcodec``: ``VideoDecoder(num_ffmpeg_threads, seek_mode)`` + ``get_frames_at`` (both patterns)
  and ``get_frames_in_range`` (sfc). Decoder construction (exact mode scans the file) is included.

Every exact decoder's frames are compared with the project's read_frames (max absolute pixel
difference). torchcodec needs FFmpeg shared libraries; when none are on the system this script links
the FFmpeg that PyAV bundles (``av.libs``) into a temporary folder and re-runs itself with
``LD_LIBRARY_PATH`` pointing there, so both decoders use the very same FFmpeg build.

    .venv/bin/python benchmarks/decode/run.py             # writes results.json and results.md here
    .venv/bin/python benchmarks/decode/run.py --quick     # 1 repeat, 360p only: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from sfc_deploy.data.crops import clip_frame_indices, clip_starts, full_video_indices
from sfc_deploy.data.video import DecodeStats, VideoInfo, probe_video, read_frames, write_video

HERE = Path(__file__).resolve().parent
FPS, SECONDS = 30, 10
SIZES = {"360p": (360, 640), "720p": (720, 1280)}
GOPS = {"long": 250, "short": 30}
_CHILD = "SFC_DECODE_BENCH_CHILD"


# ----------------------------------------------------------------------------------------------- files
def render(height: int, width: int, frames: int, seed: int = 0) -> np.ndarray:
    """A panning textured scene with moving objects and mild noise: uint8 (T, H, W, 3)."""
    g = torch.Generator().manual_seed(seed)
    pad = 4 * frames  # room for the camera to pan
    big_h, big_w = height + pad // 4, width + pad
    coarse = torch.rand(1, 3, big_h // 32 + 2, big_w // 32 + 2, generator=g)
    mid = torch.rand(1, 3, big_h // 6 + 2, big_w // 6 + 2, generator=g)
    tex = (F.interpolate(coarse, size=(big_h, big_w), mode="bicubic", align_corners=False) * 170
           + F.interpolate(mid, size=(big_h, big_w), mode="bilinear", align_corners=False) * 60)
    tex = tex[0].clamp(0, 255).permute(1, 2, 0).numpy().astype(np.float32)
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0, 2.0, (height, width, 3)).astype(np.float32) for _ in range(7)]
    objects = [dict(pos=rng.uniform((0, 0), (height, width)), vel=rng.uniform(-6, 6, 2),
                    size=rng.integers(height // 12, height // 5, 2), colour=rng.uniform(0, 255, 3))
               for _ in range(6)]
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        oy, ox = int(t * 0.25), int(t * 3)  # camera pans right (3 px/frame) and down slowly
        frame = tex[oy: oy + height, ox: ox + width].copy()
        for obj in objects:
            obj["pos"] = (obj["pos"] + obj["vel"]) % (height, width)
            y, x = obj["pos"].astype(int)
            h, w = obj["size"]
            frame[y: y + h, x: x + w] = obj["colour"]
        frame += noise[t % len(noise)]
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def make_files(work: Path, sizes: list[str]) -> dict[tuple[str, str], Path]:
    files = {}
    for res in sizes:
        frames = None
        for gop_name, gop in GOPS.items():
            path = work / f"{res}_gop{gop}.mp4"
            if not path.exists():
                if frames is None:
                    frames = render(*SIZES[res], FPS * SECONDS)
                t0 = time.perf_counter()
                write_video(path.with_suffix(".tmp.mp4"), frames, FPS, gop=gop)
                path.with_suffix(".tmp.mp4").rename(path)
                print(f"wrote {path.name} ({time.perf_counter() - t0:.1f} s)", flush=True)
            files[(res, gop_name)] = path
    return files


def patterns(num_frames: int) -> dict[str, list[int]]:
    sfc = full_video_indices(num_frames, 8, 36)
    dense = [i for s in clip_starts(num_frames, 8 * 8, 10) for i in clip_frame_indices(num_frames, s, 8, 8)]
    return {"sfc": sfc, "dense": dense}


# ----------------------------------------------------------------------------------------------- PyAV
def pyav_read(path: Path, info: VideoInfo, wanted: list[int], *, thread_type: str, thread_count: int,
              skip_nonref: bool = False) -> tuple[np.ndarray, list[int], int]:
    """Decode ``wanted`` (seek to a keyframe across gaps, stop after the last); with ``skip_nonref``
    each wanted index gets the nearest decoded frame. Returns (T, H, W, 3), the indices returned, frames decoded."""
    import bisect

    keys = info.keyframes
    pts_index = {p: i for i, p in enumerate(info.frame_pts)}
    targets = sorted(set(wanted))
    best: dict[int, tuple[int, int, av.VideoFrame | None]] = {w: (10**9, -1, None) for w in targets}
    decoded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        stream.codec_context.thread_count = thread_count
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        position, last = 0, targets[-1]
        while True:
            nxt = next((w for w in targets if w >= position), None)
            if nxt is None:
                break
            key = keys[bisect.bisect_right(keys, nxt) - 1]
            if key > position:
                container.seek(info.frame_pts[key], stream=stream, backward=True, any_frame=False)
            jumped = False
            for frame in container.decode(stream):
                decoded += 1
                i = pts_index[frame.pts]
                for w in targets[bisect.bisect_left(targets, i - 32): bisect.bisect_right(targets, i + 32)]:
                    d = abs(i - w)
                    if d < best[w][0]:
                        best[w] = (d, i, frame)
                position = i + 1
                if i >= last:
                    break
                upcoming = next((w for w in targets if w > i), None)
                if upcoming is not None and keys[bisect.bisect_right(keys, upcoming) - 1] > position:
                    jumped = True
                    break
            if not jumped:
                break
    rgb = {w: best[w][2].to_ndarray(format="rgb24") for w in targets}
    return np.stack([rgb[w] for w in wanted]), [best[w][1] for w in wanted], decoded


def project_read(path: Path, wanted: list[int]) -> tuple[np.ndarray, int]:
    stats = DecodeStats()
    frames = read_frames(path, wanted, info=probe_video(path), stats=stats)
    return frames.permute(1, 2, 3, 0).numpy(), stats.decoded


# ----------------------------------------------------------------------------------------------- torchcodec
def torchcodec_status() -> tuple[bool, str]:
    try:
        import torchcodec  # noqa: F401
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any load failure is the recorded reason
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        return False, f"{type(exc).__name__}: {lines[0] if lines else exc}"
    import torchcodec

    return True, torchcodec.__version__


def pyav_ffmpeg_dir() -> Path:
    """A folder of libavcodec.so.NN-style links to the FFmpeg libraries PyAV bundles."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    out = Path(tempfile.gettempdir()) / "pyav_ffmpeg_libs"
    out.mkdir(exist_ok=True)
    for f in libs.iterdir():  # libavcodec-5e6b81c2.so.62.28.102 -> libavcodec.so.62
        stem, _, ver = f.name.partition(".so.")
        base = stem.rsplit("-", 1)[0]
        if base.startswith(("libav", "libsw")) and ver:
            link = out / f"{base}.so.{ver.split('.')[0]}"
            if not link.exists():
                link.symlink_to(f)
    return out


def tc_read(path: Path, wanted: list[int], *, threads: int, seek_mode: str, method: str) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(path), num_ffmpeg_threads=threads, seek_mode=seek_mode, dimension_order="NHWC")
    if method == "range":
        step = wanted[1] - wanted[0]
        batch = dec.get_frames_in_range(wanted[0], wanted[-1] + 1, step)
    else:
        batch = dec.get_frames_at(wanted)
    return batch.data.numpy()


# ----------------------------------------------------------------------------------------------- timing
def timed(fn, repeats: int) -> tuple[float, float, object]:
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result  # the least contended repeat: the machine is shared


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "av": av.__version__,
            "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}


def nonref_on_synth(work: Path) -> dict:
    """Frame-index error of the NONREF mode on a tiny ``sfc-deploy synth`` test set (default encoding)."""
    from sfc_deploy.data.synth import SynthOptions, write_synth_dataset

    root = work / "synth"
    if not root.exists():
        write_synth_dataset(root, SynthOptions(classes=4, train_per_class=0, test_per_class=2))
    errors, exact, total, decoded, full = [], 0, 0, 0, 0
    for path in sorted((root / "videos" / "test").rglob("*.mp4")):
        info = probe_video(path)
        for wanted in patterns(info.num_frames).values():
            _, got, n = pyav_read(path, info, wanted, thread_type="AUTO", thread_count=0, skip_nonref=True)
            _, _, n_full = pyav_read(path, info, wanted, thread_type="AUTO", thread_count=0)
            err = [abs(g - w) for g, w in zip(got, wanted)]
            errors += err
            exact += sum(e == 0 for e in err)
            total += len(err)
            decoded, full = decoded + n, full + n_full
    return {"videos": len(list((root / "videos" / "test").rglob("*.mp4"))), "frames_wanted": total,
            "exact_fraction": round(exact / total, 3), "mean_abs_index_error": round(float(np.mean(errors)), 3),
            "max_abs_index_error": int(max(errors)), "frames_decoded_nonref": decoded, "frames_decoded_exact": full,
            "top1": "not measured: needs a trained model; only the frame-index error is recorded"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 360p only")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sfc_decode_bench",
                        help="where the test videos are written (kept between runs)")
    args = parser.parse_args()

    ok, tc = torchcodec_status()
    if not ok and os.environ.get(_CHILD) is None:
        libdir = pyav_ffmpeg_dir()
        env = dict(os.environ, **{_CHILD: tc})
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(libdir), str(Path(av.__file__).resolve().parent.parent / "av.libs"), env.get("LD_LIBRARY_PATH", "")])
        print(f"torchcodec did not load ({tc}); re-running with PyAV's FFmpeg on LD_LIBRARY_PATH", flush=True)
        return subprocess.call([sys.executable, *sys.argv], env=env)
    tc_note = (f"loaded with PyAV's bundled FFmpeg on LD_LIBRARY_PATH (without it: {os.environ[_CHILD]})"
               if os.environ.get(_CHILD) and ok else "loaded with the system FFmpeg" if ok else f"unavailable: {tc}")
    repeats = 1 if args.quick else args.repeats
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    files = make_files(args.work, ["360p"] if args.quick else list(SIZES))

    settings: list[tuple[str, str, dict]] = [
        ("pyav project", "read_frames (AUTO, count 0)", {}),
        ("pyav", "NONE x1", dict(thread_type="NONE", thread_count=1)),
        ("pyav", "FRAME x2", dict(thread_type="FRAME", thread_count=2)),
        ("pyav", "AUTO x0", dict(thread_type="AUTO", thread_count=0)),
        ("pyav nonref", "AUTO x0, skip_frame=NONREF", dict(thread_type="AUTO", thread_count=0, skip_nonref=True)),
    ]
    if ok:
        settings += [
            ("torchcodec", "at, exact, threads 1", dict(threads=1, seek_mode="exact", method="at")),
            ("torchcodec", "at, exact, threads 0", dict(threads=0, seek_mode="exact", method="at")),
            ("torchcodec", "at, approximate, threads 1", dict(threads=1, seek_mode="approximate", method="at")),
            ("torchcodec", "range, exact, threads 1", dict(threads=1, seek_mode="exact", method="range")),
        ]
    rows = []
    for (res, gop_name), path in files.items():
        probe_wall, _, info = timed(lambda: probe_video(path), repeats)
        size_mb = path.stat().st_size / 1e6
        for pattern, wanted in patterns(info.num_frames).items():
            reference, _ = project_read(path, wanted)
            for decoder, label, kw in settings:
                if decoder == "torchcodec" and kw["method"] == "range" and pattern != "sfc":
                    continue
                got_idx, n_decoded = list(wanted), None
                if decoder == "pyav project":
                    wall, cpu, (frames, n_decoded) = timed(lambda: project_read(path, wanted), repeats)
                elif decoder.startswith("pyav"):
                    wall, cpu, (frames, got_idx, n_decoded) = timed(lambda: pyav_read(path, info, wanted, **kw), repeats)
                    wall, cpu = wall + probe_wall, cpu + probe_wall  # it needs the probe as the project does
                else:
                    wall, cpu, frames = timed(lambda: tc_read(path, wanted, **kw), repeats)
                same_shape = frames.shape == reference.shape
                diff = int(np.abs(frames.astype(np.int16) - reference.astype(np.int16)).max()) if same_shape else None
                errs = [abs(g - w) for g, w in zip(got_idx, wanted)]
                row = dict(decoder=decoder, settings=label, pattern=pattern, resolution=res, gop=GOPS[gop_name],
                           file_mb=round(size_mb, 2), mbit_s=round(size_mb * 8 / SECONDS, 2),
                           seconds_per_video=round(wall, 4), cpu_seconds=round(cpu, 4),
                           cores_used=round(cpu / wall, 2) if wall else None, frames_wanted=len(wanted),
                           frames_decoded=n_decoded, max_abs_diff_vs_project=diff,
                           index_error_mean=round(float(np.mean(errs)), 3), index_error_max=int(max(errs)))
                rows.append(row)
                print(f"{res} gop{GOPS[gop_name]:<3} {pattern:5} {decoder:12} {label:28} {wall:7.3f} s "
                      f"cpu {cpu:6.3f} decoded {n_decoded} diff {diff} idx-err {row['index_error_mean']}", flush=True)
    synth = nonref_on_synth(args.work)
    print("nonref on synth:", synth, flush=True)
    report = {
        "what": "decode seconds per video by decoder, settings, access pattern, resolution and GOP (issue 15 item 3)",
        "machine": machine(), "torchcodec": tc if ok else None, "torchcodec_note": tc_note,
        "load_average_start": load_start, "load_average_end": os.getloadavg(), "repeats": repeats,
        "seconds_per_video": "least wall (and, separately, CPU) seconds over the repeats; pyav rows include probe_video (the project "
                             "probes every video); torchcodec rows include VideoDecoder construction",
        "rows": rows, "nonref_on_synth": synth, "wall_s": round(time.perf_counter() - t_start, 1),
    }
    (HERE / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| decoder | settings | pattern | res | GOP | s/video | CPU s | cores used | decoded/wanted "
             "| max diff vs project | index err mean/max |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['decoder']} | {r['settings']} | {r['pattern']} | {r['resolution']} | {r['gop']} | "
                     f"{r['seconds_per_video']:.3f} | {r['cpu_seconds']:.3f} | {r['cores_used']} | "
                     f"{r['frames_decoded'] if r['frames_decoded'] is not None else '?'}/{r['frames_wanted']} | "
                     f"{r['max_abs_diff_vs_project']} | {r['index_error_mean']}/{r['index_error_max']} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'results.json'} and results.md in {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
