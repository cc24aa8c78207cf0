"""``sfc-deploy convert``: any supported checkpoint -> canonical ``.safetensors`` with its config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfc_deploy.cli.options import BackboneOpt, TrustOpt
from sfc_deploy.common.outputs import check_output_file


def register(app: typer.Typer) -> None:
    @app.command()
    def convert(
        checkpoint: Annotated[
            Path, typer.Argument(help="PyTorchVideo, PySlowFast, mmaction2, TPN or plain weights (.pyth/.pth/.pt).")
        ],
        backbone: BackboneOpt,
        out: Annotated[Path, typer.Option("--out", "-o", help="Destination .safetensors file.")],
        trust_checkpoint: TrustOpt = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    ) -> None:
        """Convert a checkpoint once, so later loads need no unpickling and no layout guessing."""
        from sfc_deploy.models.checkpoint import convert as convert_checkpoint
        from sfc_deploy.models.checkpoint import summarise_dropped

        check_output_file(out, option="--out", force=force, suffix=".safetensors")
        result = convert_checkpoint(checkpoint, out, backbone=backbone, trust=trust_checkpoint)
        config = result.config
        typer.echo(f"layout: {result.layout}")
        if result.dropped:
            typer.echo(f"dropped: {len(result.dropped)} keys ({', '.join(summarise_dropped(result.dropped))})")
        names = config.class_names
        shown = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else " (no class names)"
        typer.echo(f"classes: {config.num_classes}{shown}")
        pre = config.preprocess
        typer.echo(f"preprocess: {pre.convention} (scale {pre.scale:.6g}, mean {list(pre.mean)}, std {list(pre.std)})")
        typer.echo(f"wrote: {result.path}")
