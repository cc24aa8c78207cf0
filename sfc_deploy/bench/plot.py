"""The bench report as one PNG: throughput and memory per strategy, memory against video length,
and with a tau sweep the paper's Figure 5 style trade-off (speed against accuracy when labels are
known, speed against GMACs otherwise).
"""

from __future__ import annotations

from pathlib import Path

from sfc_deploy.common.atomic import atomic_write

DENSE_COLOR, SFC_COLOR = "#1f77b4", "#ff9f1c"  # the paper's blue (dense) and yellow (SFC)


def write_plot(report: dict, path: str | Path, *, accuracy: dict[str, float] | None = None) -> Path:
    """Draw the report into ``path`` (PNG), written under a temporary name then renamed.

    Args:
        report: a :func:`~sfc_deploy.bench.report.build_report` dict.
        path: destination PNG.
        accuracy: optional top-1 per strategy, keys ``"dense"`` and ``"tau=<t>"``: turns the tau
            panel into the Figure 5 speed/accuracy curve.
    """
    import matplotlib

    if accuracy is None and report["sfc"].get("top1") is not None:
        accuracy = {"dense": report["dense"]["top1"], **{f"tau={r['tau']:g}": r["top1"] for r in report["tau_sweep"]}}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["throughput", "memory"]
    if report.get("memory_vs_length"):
        panels.append("length")
    if len(report.get("tau_sweep", [])) > 1:
        panels.append("tau")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    names = ["dense\n30-crop", f"SFC\ntau={report['sfc']['tau']:g}"]
    colors = [DENSE_COLOR, SFC_COLOR]
    for ax, panel in zip(axes, panels):
        if panel == "throughput":
            vals = [report["dense"]["videos_per_s"], report["sfc"]["videos_per_s"]]
            ax.bar(names, vals, color=colors)
            ax.set_ylabel("videos / s")
            ax.set_title(f"throughput ({report['speedup']:.2f}x)")
            for i, v in enumerate(vals):
                ax.text(i, v, f"{v:.3g}", ha="center", va="bottom")
        elif panel == "memory":
            if "gpu_memory_ratio" in report:  # on CUDA: torch's allocator on the GPU
                mem = [report["dense"]["gpu_memory"], report["sfc"]["gpu_memory"]]
                per_video, base = [m["video_mb"] for m in mem], [m["model_allocated_mb"] for m in mem]
                ylabel, ratio = "peak GPU memory allocated (MB)", report["gpu_memory_ratio"]
            else:
                per_video = [report["dense"]["video_mem_mb"], report["sfc"]["video_mem_mb"]]
                base = [report["dense"]["base_mem_mb"], report["sfc"]["base_mem_mb"]]
                ylabel, ratio = "peak RSS (MB)", report["memory_ratio"]
            ax.bar(names, base, color="#bbbbbb", label="loaded model (counted once)")
            ax.bar(names, per_video, bottom=base, color=colors, label="one video")
            ax.set_ylabel(ylabel)
            ax.set_title(f"memory ({ratio:.2f}x less per video)")
            ax.legend(fontsize=7, loc="upper right")
        elif panel == "length":
            rows = report["memory_vs_length"]
            x = [r["raw_frames"] for r in rows]
            if "sfc_streamed_peak_mb" in rows[0]:
                ax.plot(x, [r["sfc_streamed_peak_mb"] for r in rows], "o-", color=SFC_COLOR, label="SFC, head streamed")
            if "sfc_whole_peak_mb" in rows[0]:
                ax.plot(x, [r["sfc_whole_peak_mb"] for r in rows], "s--", color=SFC_COLOR, alpha=0.6, label="SFC, whole head")
            ax.plot(x, [r["dense_peak_mb"] for r in rows], "^-", color=DENSE_COLOR, label="dense 30-crop")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("video length (raw frames)")
            ax.set_ylabel("peak RSS (MB)")
            ax.set_title("peak memory vs video length")
            ax.legend(fontsize=7)
        else:
            _tau_panel(ax, report, accuracy)
    where = (f"{report['device']} | {(report.get('gpu') or {}).get('name', 'GPU')}" if "gpu_memory_ratio" in report
             else f"{report['threads']} threads | {report['machine']['cpu']}")
    fig.suptitle(f"{report['backbone']} | {report['runtime']} {report['precision']} | {where}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120), suffix=".png")
    finally:
        plt.close(fig)
    return path


def _tau_panel(ax, report: dict, accuracy: dict[str, float] | None) -> None:
    sweep = sorted(report["tau_sweep"], key=lambda r: r["tau"])
    speed = [r["videos_per_s"] for r in sweep]
    if accuracy:  # Figure 5: speed against top-1, SFC's tau curve beside the dense point
        y = [accuracy.get(f"tau={r['tau']:g}") for r in sweep]
        ax.plot(speed, y, "o-", color=SFC_COLOR, label="SFC (tau)")
        ax.plot([report["dense"]["videos_per_s"]], [accuracy.get("dense")], "o", color=DENSE_COLOR, label="dense 30-crop")
        ax.set_ylabel("top-1 (%)")
        for r, yy in zip(sweep, y):
            ax.annotate(f"tau={r['tau']:g}", (r["videos_per_s"], yy), fontsize=7)
    else:
        ax.plot(speed, [r["gmacs"] for r in sweep], "o-", color=SFC_COLOR, label="SFC (tau)")
        ax.plot([report["dense"]["videos_per_s"]], [report["dense"]["gmacs"]], "o", color=DENSE_COLOR, label="dense 30-crop")
        ax.set_yscale("log")
        ax.set_ylabel("GMACs per video")
        for r in sweep:
            ax.annotate(f"tau={r['tau']:g}", (r["videos_per_s"], r["gmacs"]), fontsize=7)
    ax.set_xlabel("videos / s")
    ax.set_title("compression ratio trade-off")
    ax.legend(fontsize=7)
