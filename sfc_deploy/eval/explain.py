"""Where SFC looked, as a picture (the paper's Fig. 6): the library behind ``sfc-deploy predict --explain``.

One PNG per video, read top to bottom:

* the title: the predicted classes, then the file, what SFC read and k;
* the attention map M (k x T) as a heatmap, one column per sampled frame (time runs left to right,
  the timestamps of the sampled frames on the top axis), one row per compressed slot; yellow is
  high, as in the paper (viridis, 0 to the largest entry of M);
* the attention mass of each sampled frame (the column sums of M, adding up to k) as bars on the
  same time axis, the most attended frames' bars in :data:`OUTLINE`, a dashed line at the uniform k/T;
* a strip of at most :data:`MAX_STRIP` sampled frames chosen evenly over time, always including the
  most attended ones, each linked by a line to its column; the most attended frames are outlined
  in :data:`OUTLINE` (the paper draws yellow boxes; yellow is the top of the heatmap here, so the
  outline takes a colour the heatmap never uses).

The figure has a fixed size and dpi and fixed axes positions (no tight layout), so the same
prediction always gives the same picture, and :class:`ExplainInfo` can say exactly where each part
was drawn, in the PNG's pixels: the tests read the picture back and check it against M. Drawing
uses matplotlib's Agg canvas directly (no pyplot state, no display). :func:`write_explain_index`
writes the ``index.html`` that shows several pictures with their videos, classes and peak times.
"""

from __future__ import annotations

import html
import os
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sfc_deploy.common.atomic import atomic_write, atomic_write_text
from sfc_deploy.data.video import read_frames
from sfc_deploy.errors import ConfigError
from sfc_deploy.eval.predict import Prediction

#: Figure size in inches and dots per inch: every picture is 1100 x 460 pixels.
FIGSIZE = (11.0, 4.6)
DPI = 100
WIDTH_PX, HEIGHT_PX = round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI)
#: Most sampled frames shown in the strip.
MAX_STRIP = 16
#: Colour of the outlines, connectors and bars of the most attended frames (not in viridis).
OUTLINE = "#ff1a1a"
#: Colour of the other bars and connectors.
MUTED = "#8a8a8a"
#: Longest side of a thumbnail before drawing (frames are decoded at the source size).
THUMB_PX = 160
#: Longest video stem kept in a PNG name, in UTF-8 bytes (names stop at 255, temporaries add ~20).
MAX_STEM = 200
#: Classes named in the title.
TITLE_CLASSES = 3

# Axes as (top, bottom) pixel rows of the picture, all from x = 6.5% to 91.5% of its width: fixed,
# so where everything lands is known without drawing.
_LEFT, _WIDTH = 0.065, 0.85
_MAP_ROWS, _MASS_ROWS, _STRIP_ROWS = (114, 250), (258, 326), (362, 444)


def _rect(rows: tuple[int, int], left: float = _LEFT, width: float = _WIDTH) -> tuple[float, float, float, float]:
    """(top, bottom) pixel rows -> matplotlib's (left, bottom, width, height) in figure fractions."""
    return (left, 1 - rows[1] / HEIGHT_PX, width, (rows[1] - rows[0]) / HEIGHT_PX)


_MAP, _MASS, _STRIP = _rect(_MAP_ROWS), _rect(_MASS_ROWS), _rect(_STRIP_ROWS)
_COLORBAR = _rect(_MAP_ROWS, _LEFT + _WIDTH + 0.012, 0.012)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ExplainInfo:
    """What :func:`render_explanation` drew and where, in the PNG's pixels (origin top left).

    Attributes:
        path: the PNG.
        width, height: its size in pixels.
        shown: positions (into the sampled frames) of the frames in the strip, left to right.
        outlined: positions of the outlined frames, most attended first (``pred.peaks(top_frames)``).
        map_box: (left, top, right, bottom) of the heatmap: column t of M spans
            ``left + t * (right - left) / T`` to the next column, row i likewise from the top.
        frame_boxes: (left, top, right, bottom) of each frame in the strip, in the order of ``shown``.
    """

    path: Path
    width: int
    height: int
    shown: tuple[int, ...]
    outlined: tuple[int, ...]
    map_box: Box
    frame_boxes: tuple[Box, ...]


def strip_positions(pred: Prediction, *, top_frames: int = 3, max_frames: int = MAX_STRIP) -> list[int]:
    """The sampled frames the strip shows: all of them, or ``max_frames`` evenly spread over time with
    the grid point nearest each of the ``top_frames`` most attended frames moved onto it (sorted)."""
    if max_frames < 1 or top_frames < 0:
        raise ConfigError(f"the strip needs max_frames >= 1 and top_frames >= 0, got {max_frames} and {top_frames}")
    t = len(pred.frame_indices)
    if t <= max_frames:
        return list(range(t))
    grid = [round(x) for x in np.linspace(0, t - 1, max_frames)]  # distinct: the step is > 1
    free = set(range(len(grid)))
    for peak in pred.peaks(min(top_frames, max_frames)):
        slot = min(free, key=lambda j: (abs(grid[j] - peak), j))
        grid[slot] = peak
        free.discard(slot)
    return sorted(grid)


def _seconds(t: float | None, fine: bool) -> str:
    return "?" if t is None else (f"{t:.2f}s" if fine else f"{t:.1f}s")


def _stamp_labels(pred: Prediction) -> tuple[list[str], str]:
    """A label per sampled frame (its time, or its source frame without a frame rate) and the axis title."""
    stamps = pred.timestamps
    if stamps and stamps[0] is None:
        return [f"#{i}" for i in pred.frame_indices], "source frame of each sampled frame"
    fine = (stamps[-1] or 0.0) < 10
    return [_seconds(t, fine) for t in stamps], "time in the video (seconds) of each sampled frame"


def _ticks(n: int, most: int) -> list[int]:
    """Evenly stepped positions 0, s, 2s ... below ``n``, at most ``most`` of them."""
    return list(range(0, n, max(1, -(-n // most))))


def _thumbnails(frames: torch.Tensor) -> np.ndarray:
    """uint8 (3, S, H, W) -> uint8 (S, h, w, 3) with the longer side at most :data:`THUMB_PX`."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[0] != 3:
        raise ConfigError(f"frames must be uint8 (3, N, H, W), got {tuple(frames.shape)} {frames.dtype}")
    h, w = frames.shape[-2:]
    scale = THUMB_PX / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = frames.permute(1, 0, 2, 3).float()
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        frames = x.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3)
    return frames.permute(1, 2, 3, 0).contiguous().numpy()


def _pixel_box(ax, x0: float, y0: float, x1: float, y1: float) -> Box:
    """Data rectangle of ``ax`` -> (left, top, right, bottom) in image pixels (origin top left)."""
    (left, bottom), (right, top) = ax.transData.transform([(x0, y0), (x1, y1)])
    return (float(left), float(HEIGHT_PX - top), float(right), float(HEIGHT_PX - bottom))


def render_explanation(pred: Prediction, frames: torch.Tensor | None, path: str | Path, *, top_frames: int = 3,
                       note: str | None = None) -> ExplainInfo:
    """Draw where SFC looked in ``pred`` (see the module docstring) and write it to ``path`` as a PNG, atomically.

    Args:
        pred: a prediction from :func:`~sfc_deploy.eval.predict.predict_video`.
        frames: uint8 (3, N, H, W): the frames at :func:`strip_positions` (``N`` of them, in that
            order) or all T sampled frames; None draws numbered placeholders instead.
        path: the PNG to write.
        top_frames: how many of the most attended frames to outline.
        note: a line printed under the title (e.g. that the weights are random).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    attention = pred.attention.detach().float().cpu()
    k, t = attention.shape
    if t != len(pred.frame_indices):
        raise ConfigError(f"the attention map has {t} columns but {len(pred.frame_indices)} frames were sampled")
    mass = attention.sum(0).numpy()
    outlined = tuple(pred.peaks(top_frames)) if top_frames > 0 else ()
    shown = strip_positions(pred, top_frames=top_frames)
    thumbs = None
    if frames is not None:
        n = frames.shape[1] if frames.dim() == 4 else -1
        if n == t and n != len(shown):
            frames = frames[:, shown]
        elif n != len(shown):
            raise ConfigError(f"got {n} frames for the strip; pass the {len(shown)} frames at strip_positions() "
                              f"or all {t} sampled frames")
        thumbs = _thumbnails(frames)
    labels, axis_title = _stamp_labels(pred)

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)  # the Agg canvas directly: no pyplot, no global figure state, no display

    classes = "  ·  ".join(f"{c.name} {c.prob:.1%}" for c in pred.top[:TITLE_CLASSES])
    fig.text(0.5, 0.983, f"predicted: {classes}", ha="center", va="top", fontsize=13, fontweight="bold",
             parse_math=False)
    duration = f", {pred.num_frames / pred.fps:.2f} s at {pred.fps:g} fps" if pred.fps > 0 else ""
    crop = f" (centre crop at {pred.crop[0]},{pred.crop[1]})" if pred.crop else ""
    fig.text(0.5, 0.922, f"{pred.path.name}: {pred.num_frames} frames{duration}; SFC read {pred.read} of "
             f"{pred.size[0]}x{pred.size[1]}{crop}, k={k}", ha="center", va="top", fontsize=9, parse_math=False)
    if note:
        fig.text(0.5, 0.881, note, ha="center", va="top", fontsize=8, color="#b00000", parse_math=False)

    ax_map = fig.add_axes(_MAP)
    image = ax_map.imshow(attention.numpy(), aspect="auto", interpolation="nearest", cmap="viridis",
                          vmin=0.0, vmax=max(float(attention.max()), 1e-12), extent=(-0.5, t - 0.5, k - 0.5, -0.5))
    ticks = _ticks(t, 9)
    ax_map.xaxis.tick_top()
    ax_map.xaxis.set_label_position("top")
    ax_map.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8)
    ax_map.set_xlabel(axis_title, fontsize=8)
    rows = _ticks(k, 6)
    ax_map.set_yticks(rows, [str(r + 1) for r in rows], fontsize=8)
    ax_map.set_ylabel(f"slot (k={k})", fontsize=8)
    bar = fig.colorbar(image, cax=fig.add_axes(_COLORBAR))
    bar.ax.tick_params(labelsize=7)
    bar.set_label("M", fontsize=8)

    ax_mass = fig.add_axes(_MASS, sharex=ax_map)
    colours = [MUTED] * t
    for p in outlined:
        colours[p] = OUTLINE
    ax_mass.bar(np.arange(t), mass, width=0.9 if t <= 200 else 1.0, color=colours, linewidth=0)
    ax_mass.axhline(k / t, color="black", linestyle="--", linewidth=0.8)
    ax_mass.set_xlim(-0.5, t - 0.5)
    ax_mass.set_ylim(0, max(float(mass.max()), k / t) * 1.1)
    ax_mass.tick_params(axis="x", labelbottom=False, labeltop=False, length=2)
    ax_mass.tick_params(axis="y", labelsize=7)
    ax_mass.set_ylabel("mass", fontsize=8)
    ax_mass.text(1.005, k / t, f"uniform k/T={k / t:.2f}", transform=ax_mass.get_yaxis_transform(), fontsize=7,
                 va="center")

    boxes = _draw_strip(fig, ax_mass, pred, thumbs, shown, outlined, labels)
    map_box = _pixel_box(ax_map, -0.5, k - 0.5, t - 0.5, -0.5)

    with warnings.catch_warnings():  # a name with characters the font lacks still renders (as boxes)
        warnings.filterwarnings("ignore", message=r"Glyph .* missing")
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI), suffix=".png")
    return ExplainInfo(path=Path(path), width=WIDTH_PX, height=HEIGHT_PX, shown=tuple(shown), outlined=outlined,
                       map_box=map_box, frame_boxes=tuple(boxes))


def _draw_strip(fig, ax_mass, pred: Prediction, thumbs: np.ndarray | None, shown: Sequence[int],
                outlined: Sequence[int], labels: Sequence[str]) -> list[Box]:
    """The frames at ``shown`` in equal slots, each linked to its column of ``ax_mass``, the outlined
    ones boxed; returns each frame's box in image pixels."""
    from matplotlib.patches import ConnectionPatch, Rectangle

    ax_strip = fig.add_axes(_STRIP)
    s = len(shown)
    ax_strip.set_xlim(0, s)
    ax_strip.set_ylim(0, 1)
    ax_strip.axis("off")
    slot_px = _STRIP[2] * WIDTH_PX / s
    strip_h = _STRIP[3] * HEIGHT_PX
    fh, fw = (thumbs.shape[1:3] if thumbs is not None else (3, 4))
    scale = min(0.86 * slot_px / fw, 0.86 * strip_h / fh)
    tw, th = fw * scale / slot_px, fh * scale / strip_h  # in data units of the strip
    boxes = []
    for j, pos in enumerate(shown):
        x0, x1, y0, y1 = j + 0.5 - tw / 2, j + 0.5 + tw / 2, 1 - th, 1.0
        peak = pos in outlined
        if thumbs is not None:
            ax_strip.imshow(thumbs[j], extent=(x0, x1, y0, y1), interpolation="bilinear", aspect="auto")
        else:
            ax_strip.add_patch(Rectangle((x0, y0), tw, th, facecolor="#dddddd", edgecolor="none"))
            ax_strip.text(j + 0.5, y0 + th / 2, f"#{pred.frame_indices[pos]}", ha="center", va="center", fontsize=7)
        if peak:
            ax_strip.add_patch(Rectangle((x0, y0), tw, th, fill=False, edgecolor=OUTLINE, linewidth=3,
                                         antialiased=False, clip_on=False, zorder=5))
        ax_strip.text(j + 0.5, y0 - 0.04, labels[pos], ha="center", va="top", fontsize=7,
                      color=OUTLINE if peak else "black", fontweight="bold" if peak else "normal")
        fig.add_artist(ConnectionPatch(xyA=(pos, 0.0), coordsA=ax_mass.get_xaxis_transform(), xyB=(j + 0.5, y1),
                                       coordsB=ax_strip.transData, color=OUTLINE if peak else MUTED,
                                       linewidth=1.2 if peak else 0.6))
        boxes.append(_pixel_box(ax_strip, x0, y0, x1, y1))
    return boxes


def explain_video(pred: Prediction, path: str | Path, *, top_frames: int = 3, note: str | None = None) -> ExplainInfo:
    """Decode the strip's frames of ``pred``'s video (only those) and :func:`render_explanation` to ``path``."""
    shown = strip_positions(pred, top_frames=top_frames)
    frames = read_frames(pred.path, [pred.frame_indices[p] for p in shown])
    return render_explanation(pred, frames, path, top_frames=top_frames, note=note)


def png_names(videos: Sequence[str | Path]) -> list[str]:
    """A PNG name per video, after its stem (cut at :data:`MAX_STEM` bytes), made unique
    (``clip.png``, ``clip-2.png``; case-insensitively)."""
    names, taken = [], set()
    for video in videos:
        # cut in bytes (names stop at 255 of them), leaving room for the temporary's prefix and suffix
        stem = os.fsencode(Path(video).stem)[:MAX_STEM].decode("utf-8", "ignore") or "video"
        name, n = f"{stem}.png", 1
        while name.casefold() in taken:
            n += 1
            name = f"{stem}-{n}.png"
        taken.add(name.casefold())
        names.append(name)
    return names


def write_explain_index(entries: Sequence[tuple[Prediction, ExplainInfo]], out_dir: str | Path, *,
                        subtitle: str | None = None) -> Path:
    """Write ``out_dir/index.html`` (atomically): every picture with its video, top classes and peak times.

    Args:
        entries: each video's prediction and the :class:`ExplainInfo` of its PNG (inside ``out_dir``).
        out_dir: the folder holding the PNGs.
        subtitle: a line about the model (weights, tau), shown under the heading.
    """
    out_dir = Path(out_dir)
    esc = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Where SFC looked: {len(entries)} videos</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1150px}section{margin-bottom:2.5em}"
             "img{max-width:100%;height:auto;border:1px solid #ccc}.peak{color:#c00000}</style>",
             "</head><body>", "<h1>Where SFC looked</h1>"]
    if subtitle:
        parts.append(f"<p>{esc(subtitle)}</p>")
    parts.append("<p>Heatmap: the attention map M (k slots x T sampled frames); bars: attention mass per sampled "
                 "frame; the most attended frames are outlined in red.</p>")
    for pred, info in entries:
        src = urllib.parse.quote(os.path.relpath(info.path, out_dir).replace(os.sep, "/"))
        classes = ", ".join(f"{esc(c.name)} ({c.prob:.1%})" for c in pred.top)
        stamps = pred.timestamps
        peaks = ", ".join(
            f"{'?' if stamps[p] is None else f'{stamps[p]:.2f} s'} (frame {pred.frame_indices[p]}, "
            f"mass {float(pred.mass[p]):.2f})" for p in info.outlined)
        parts += ["<section>", f"<h2>{esc(str(pred.path))}</h2>",
                  f"<p>top classes: {classes}</p>",
                  f'<p class="peak">most attended: {peaks}</p>',
                  f'<img src="{esc(src)}" width="{info.width}" height="{info.height}" '
                  f'alt="{esc(f"where SFC looked in {pred.path.name}")}">', "</section>"]
    parts.append("</body></html>")
    return atomic_write_text(out_dir / "index.html", "\n".join(parts) + "\n")
