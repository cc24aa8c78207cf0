"""``sfc-deploy info``: parameters and GMACs of dense 30-crop sampling and of SFC, beside the paper's."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sfc_deploy.cli.options import BackboneOpt, FramesOpt, SizeOpt, SplitOpt, TauOpt, parse_size, tau_value


def info_report(
    backbone: str, *, tau: float, split: str, theta_kernel: str, raw_frames: int, size: tuple[int, int], pool: str = "topk"
) -> dict:
    """The numbers `info` prints, as one JSON-ready dict (also used by bench and eval)."""
    from sfc_deploy.bench.flops import dense_cost, sfc_cost
    from sfc_deploy.bench.paper import paper_figure
    from sfc_deploy.models import create_model, get_config

    config = get_config(backbone)
    with _on_meta():
        model = create_model(config, tau=tau, split=split, theta_kernel=theta_kernel, pool=pool)
    frames = math.ceil(raw_frames / config.stride)
    dense = dense_cost(model)
    sfc = sfc_cost(model, frames=frames, size=size)
    paper_dense = paper_figure(backbone, "dense", raw_frames=raw_frames, size=size)
    paper_sfc = paper_figure(
        backbone, "sfc", tau=tau, split=split, theta_kernel=theta_kernel, raw_frames=raw_frames, size=size
    )
    return {
        "backbone": backbone,
        "inputs": {
            "raw_frames": raw_frames,
            "sfc_frames": frames,
            "size": list(size),
            "tau": tau,
            "split": split,
            "theta_kernel": theta_kernel,
            "pool": pool,
            "dense_crops": f"10 clips x 3 crops of {config.frames}x{config.preprocess.crop}x{config.preprocess.crop}",
        },
        "units": "GMACs (multiply-accumulates, the paper's 'FLOPs'); params in millions",
        "dense": {**dense.to_dict(), "paper_gmacs": paper_dense and paper_dense[0]},
        "sfc": {**sfc.to_dict(), "paper_gmacs": paper_sfc and paper_sfc[0], "paper_params_m": paper_sfc and paper_sfc[1]},
        "gmacs_ratio": dense.gmacs / sfc.gmacs,
    }


class _on_meta:
    """Build models on the meta device: no memory, no random init, instant."""

    def __enter__(self):
        import torch

        self._ctx = torch.device("meta")
        self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        backbone: BackboneOpt = "slow8x8",
        tau: TauOpt = "2",
        split: SplitOpt = "res3",
        theta_kernel: Annotated[str, typer.Option("--theta-kernel", help="theta_q/theta_k kernel: 3x3x3, 3x1x1, 1x1x1.")] = "3x1x1",
        pool: Annotated[str, typer.Option("--pool", help="Query pooling: topk, avg, max.")] = "topk",
        frames: FramesOpt = 288,
        size: SizeOpt = "256x312",
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
        list_: Annotated[bool, typer.Option("--list", help="List the registered backbones and exit.")] = False,
    ) -> None:
        """Parameters and GMACs per video: 30-crop dense sampling against SFC (the paper's settings by default)."""
        from sfc_deploy.models import list_backbones

        if list_:
            typer.echo("\n".join(list_backbones()))
            return
        report = info_report(
            backbone, tau=tau_value(tau), split=split, theta_kernel=theta_kernel, raw_frames=frames, size=parse_size(size), pool=pool
        )
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        _print_table(report)


def _print_table(report: dict) -> None:
    inp = report["inputs"]
    table = Table(title=f"{report['backbone']}: cost per video ({report['units']})")
    for col in ("strategy", "input", "GMACs", "paper GMACs", "params (M)"):
        table.add_column(col, justify="right" if col != "strategy" else "left")
    fmt = lambda v: "-" if v is None else f"{v:,.1f}"  # noqa: E731
    table.add_row("dense 30-crop", inp["dense_crops"], fmt(report["dense"]["gmacs"]), fmt(report["dense"]["paper_gmacs"]), f"{report['dense']['params_m']:.2f}")
    h, w = inp["size"]
    table.add_row(
        f"SFC tau={inp['tau']:.3g} split={inp['split']}",
        f"{inp['raw_frames']} raw -> {inp['sfc_frames']}x{h}x{w}",
        fmt(report["sfc"]["gmacs"]),
        fmt(report["sfc"]["paper_gmacs"]),
        f"{report['sfc']['params_m']:.2f}",
    )
    console = Console()
    console.print(table)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in report["sfc"]["by_part"].items())
    console.print(f"SFC by part (GMACs): {parts}.  Dense / SFC = {report['gmacs_ratio']:.2f}x fewer MACs.")
