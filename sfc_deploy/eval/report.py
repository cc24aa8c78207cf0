"""Evaluation reports: JSON (everything), Markdown (the table) and a speed/accuracy plot.

Each file is written to a temporary sibling and renamed, so a crash never leaves half a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sfc_deploy.common.atomic import atomic_write, atomic_write_text


def markdown(report: dict[str, Any], *, title: str = "Accuracy and cost per strategy") -> str:
    """The results table; GMACs are multiply-accumulates per video, relative to dense where present."""
    rows = report["results"]
    dense = next((r["gmacs"] for r in rows if r["strategy"] == "dense"), None)
    bb = report["backbone"]
    env = report["environment"]
    lines = [
        f"## {title}", "",
        f"{len(report['labels'])} videos, {len(report['class_names'])} classes; backbone {bb['name']} "
        f"({bb['checkpoint'] or 'random weights'}), short side {bb['short_side']}; runtime {report['runtime']} "
        f"{report['precision']} on {env['device']} (torch {env['torch']}).", "",
        "| method | top-1 | top-5 | GMACs/video | x dense cost | agrees with dense | KL(dense ‖ method) | right where they differ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel = f"{r['gmacs'] / dense:.3f}" if dense else "-"
        lines.append(f"| {r['method']} | {r['top1']:.1%} | {r['top5']:.1%} | {r['gmacs']:.3f} | {rel} | {_agreement_cells(r)} |")
    with_ = report.get("agreement_with")
    if with_:
        lines += ["", f"Agreement: share of videos whose top-1 equals {with_}'s; KL in nats, mean over videos; "
                  "last column: where the two top-1 differ, how often this method / dense is the right one."]
    groups = report.get("seed_groups") or []
    if groups:
        lines += ["", "### Seeds of one variant (mean ± sample std, [min, max])", "",
                  "| variant | tau | seeds | top-1 | agrees with dense | KL(dense ‖ method) |", "|---|---:|---|---:|---:|---:|"]
        for g in groups:
            seeds = ",".join("?" if s is None else str(s) for s in g["seeds"])
            lines.append(f"| {g['variant']} ({g['strategy']}) | {g['tau']:g} | {seeds} | {_spread(g, 'top1', pct=True)} | "
                         f"{_spread(g, 'agreement', pct=True)} | {_spread(g, 'kl_from_dense')} |")
    return "\n".join(lines) + "\n"


def _agreement_cells(r: dict[str, Any]) -> str:
    if r.get("agreement") is None:
        return "- | - | -"
    n = r["disagreements"]
    right = (f"{n} videos: {r['right_when_disagreeing']:.0%} / {r['dense_right_when_disagreeing']:.0%}" if n else "never differ")
    return f"{r['agreement']:.1%} | {r['kl_from_dense']:.3f} | {right}"


def _spread(group: dict[str, Any], field: str, *, pct: bool = False) -> str:
    if f"{field}_mean" not in group:
        return "-"
    scale, fmt = (100.0, "{:.1f}") if pct else (1.0, "{:.3f}")
    mean, std, lo, hi = (fmt.format(scale * group[f"{field}_{k}"]) for k in ("mean", "std", "min", "max"))
    unit = "%" if pct else ""
    return f"{mean}{unit} ± {std} [{lo}, {hi}]"


def plot(report: dict[str, Any], path: str | Path, *, title: str = "Speed/accuracy") -> Path:
    """GMACs per video (log x) against top-1, one labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"single": "tab:gray", "uniform": "tab:blue", "dense": "tab:red", "sfc": "tab:green", "segments": "tab:olive"}
    for r in report["results"]:
        ax.scatter(r["gmacs"], 100 * r["top1"], color=colours[r["strategy"]], s=30)
        ax.annotate(r["method"], (r["gmacs"], 100 * r["top1"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("GMACs per video (log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120), suffix=".png")
    finally:
        plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: str | Path, *, name: str = "eval") -> dict[str, Path]:
    """Write ``NAME.json``, ``NAME.md`` and ``NAME.png`` under ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(paths["md"], markdown(report))
    plot(report, paths["png"])
    return paths
