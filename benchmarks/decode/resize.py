"""Resizing decoded frames: float32 copies (the project's preprocessing until 2026-12-01) against uint8 on
channels-last memory (what :func:`sfc_deploy.data.video.resize_short_side` does now), issue 15 items 1-2.

On the files of ``benchmarks/e2e`` (10 s, 30 fps, H.264 at 640x360 and 1280x720, written by the project's
``write_video`` with the scene renderer of ``benchmarks/decode``), for what each strategy reads (SFC: every
8th frame of the whole video; dense: the 80 frames of its 10 clips), per video:

* ``before``: ``read_frames`` then a contiguous (3, T, H, W) copy of the frames, cast to float32 and resized
  (bilinear, antialias) at full size: the former ``read_frames`` + ``resize_short_side``;
* ``after``: ``read_frames`` (a view of the decoder's channels-last memory) and the uint8 resize.

Both are timed on one torch thread (what one decoding worker costs; the fastest of ``--repeats``, CPU
seconds beside wall). The outputs are compared in grey levels (0-255) and in the network's normalised
units (slow8x8's mean/std), so the cost of rounding to whole grey levels is on the record.

    .venv/bin/python benchmarks/decode/resize.py     # writes resize.json and resize.md here
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_write_text
from sfc_deploy.data.samplers import get_sampler
from sfc_deploy.data.video import normalize, output_size, probe_video, read_frames, resize_short_side
from sfc_deploy.models.registry import get_config

HERE = Path(__file__).resolve().parent
BACKBONE = "slow8x8"


def _e2e():
    spec = importlib.util.spec_from_file_location("e2e_bench", HERE.parent / "e2e" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _indices(path: str, strategy: str) -> list[int]:
    config = get_config(BACKBONE)
    info = probe_video(path)
    h, w = output_size(info.height, info.width, config.preprocess.short_side)
    rows = get_sampler(strategy).make_plan(info.num_frames, h, w, config)
    return sorted({i for row in rows for i in row.frames})


def _before(path: str, idx: list[int], short: int) -> torch.Tensor:
    raw = read_frames(path, idx).contiguous()  # the former read_frames returned a contiguous copy
    return resize_short_side(raw.to(torch.float32), short)


def _after(path: str, idx: list[int], short: int) -> torch.Tensor:
    return resize_short_side(read_frames(path, idx), short)


def _timed(fn, repeats: int) -> tuple[float, float, torch.Tensor]:
    best = (float("inf"), float("inf"), None)
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0, out), key=lambda b: b[0])
    return best  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sfc_e2e_bench",
                        help="where the e2e benchmark's videos are (written if missing)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    files = _e2e().make_files(args.work)
    pre = get_config(BACKBONE).preprocess
    rows = []
    for res, paths in files.items():
        path = paths[0]
        for strategy in ("sfc", "dense"):
            idx = _indices(path, strategy)
            dw, dc, _ = _timed(lambda: read_frames(path, idx), args.repeats)
            bw, bc, b = _timed(lambda: _before(path, idx, pre.short_side), args.repeats)
            aw, ac, a = _timed(lambda: _after(path, idx, pre.short_side), args.repeats)
            diff = (a - b).abs()
            ndiff = (normalize(a, pre) - normalize(b, pre)).abs()
            rows.append({"size": res, "strategy": strategy, "frames": len(idx), "shape": list(a.shape),
                         "before_s": bw, "before_cpu_s": bc, "after_s": aw, "after_cpu_s": ac,
                         "decode_s": dw, "decode_cpu_s": dc,
                         "max_grey_diff": diff.max().item(), "mean_grey_diff": diff.mean().item(),
                         "max_normalised_diff": ndiff.max().item()})
            print(rows[-1], flush=True)
    doc = {"schema": "sfc-deploy-resize/1", "rows": rows, "repeats": args.repeats,
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "torch": torch.__version__, "cpus": __import__("os").cpu_count()}}
    atomic_write_text(HERE / "resize.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(HERE / "resize.md", to_markdown(doc))
    print(to_markdown(doc))
    return 0


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# Resizing decoded frames: float32 copies against uint8 channels-last (`resize.py`)",
        "",
        "Regenerate: `.venv/bin/python benchmarks/decode/resize.py` (writes `resize.json` and this file).",
        "",
        f"**Machine:** {m['platform']}, {m['cpus']} cores; Python {m['python']}, torch {m['torch']}; one torch "
        f"thread; fastest of {doc['repeats']} per cell. **Files:** the e2e benchmark's (10 s, 30 fps, H.264, GOP 250). "
        "Seconds per video include decoding (`read_frames`), also shown alone.",
        "",
        "| size | strategy | frames | output | decode alone, s (CPU s) | before: float32 resize, s (CPU s) | after: uint8 resize, s (CPU s) "
        "| speed-up | max / mean diff, grey levels | max diff, normalised |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['size']} | {r['strategy']} | {r['frames']} | {'x'.join(map(str, r['shape'][1:]))} | {r['decode_s']:.3f} ({r['decode_cpu_s']:.3f}) "
            f"| {r['before_s']:.3f} ({r['before_cpu_s']:.3f}) | {r['after_s']:.3f} ({r['after_cpu_s']:.3f}) "
            f"| {r['before_s'] / r['after_s']:.2f}x | {r['max_grey_diff']:.2f} / {r['mean_grey_diff']:.3f} "
            f"| {r['max_normalised_diff']:.4f} |")
    lines += [
        "",
        "The uint8 resize is the float one rounded to whole grey levels: every value within 1 of it (0.017 in the "
        "network's normalised units, about what 8-bit video already rounds to). Kept as the default for decoded (uint8) "
        "frames; float input is still resized in float32. Its effect on top-1 is not measured: the trained models of "
        "`benchmarks/accuracy` read their 64x80 videos at native size (short side 64), where nothing is resized.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
