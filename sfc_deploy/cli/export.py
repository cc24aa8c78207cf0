"""``sfc-deploy export`` and ``sfc-deploy verify``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sfc_deploy.common.device import DEVICE_HELP
from sfc_deploy.common.parsing import split_list
from sfc_deploy.cli.options import (
    BackboneOpt,
    CheckpointOpt,
    FramesOpt,
    SfcCheckpointOpt,
    SizeOpt,
    SplitOpt,
    TauOpt,
    TrustOpt,
    parse_size,
    tau_value,
)

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (refused if it exists, unless --force).")],
        backbone: BackboneOpt = "slow8x8",
        checkpoint: CheckpointOpt = None,
        sfc_checkpoint: SfcCheckpointOpt = None,
        tau: TauOpt = "2",
        split: SplitOpt = "res3",
        format: Annotated[list[str], typer.Option("--format", "-f", help="onnx, torchscript, aoti, tensorrt (repeat or comma-separate).")] = ["onnx"],  # noqa: A002, B006
        precision: Annotated[list[str], typer.Option("--precision", "-p", help="fp32, fp16 and/or int8 (repeat or comma-separate). int8: ONNX only, served by onnxruntime, needs --calibrate; written from the fp32 ONNX graphs, which are written too.")] = ["fp32"],  # noqa: B006
        calibrate: Annotated[str | None, typer.Option("--calibrate", help="int8: videos whose sampled frames calibrate the activation ranges (a dataset CSV, class-folder tree or UCF101 split, like eval's DATA).")] = None,
        calibrate_videos: Annotated[int, typer.Option("--calibrate-videos", min=1, help="int8: how many of --calibrate's videos (spread evenly over the list).")] = 16,
        parts: Annotated[list[str], typer.Option("--parts", help="Parts to export: head, sfc, tail, clip (default all; clip is the dense baseline).")] = ["head,sfc,tail,clip"],  # noqa: B006
        frames: FramesOpt = 288,
        size: SizeOpt = "256x312",
        num_classes: Annotated[int | None, typer.Option("--num-classes", min=1, help="Classifier size without a checkpoint.")] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing --out folder.")] = False,
        no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the parity check against PyTorch.")] = False,
        trust_checkpoint: TrustOpt = False,
        device: Annotated[str, typer.Option("--device", help="Device the AOTInductor packages are compiled for: cpu (default), cuda or cuda:N (needs a visible GPU), auto. ONNX and TorchScript files are device-portable.")] = "cpu",
        sfc_pieces: Annotated[bool, typer.Option("--sfc-pieces/--no-sfc-pieces", help="With the sfc part, also write SFC's streaming pieces (ONNX, TorchScript, AOTInductor), so --head-chunk streams SFC over time; without them the whole-video SFC graph runs (and AOTInductor compiles four packages fewer).")] = True,
    ) -> None:
        """Export head, SFC and tail (and the whole backbone for the dense baseline) with a manifest."""
        from sfc_deploy.export.exporter import ExportOptions, check_options, export_model
        from sfc_deploy.export.formats import parse_formats, parse_precisions
        from sfc_deploy.export.quantize import Calibration
        from sfc_deploy.models import create_model, get_config
        from sfc_deploy.verify import verify as run_verify

        config = get_config(backbone)
        hw = parse_size(size)
        options = ExportOptions(
            formats=tuple(parse_formats(format)),
            precisions=tuple(parse_precisions(precision)),
            parts=tuple(v.lower() for v in split_list(parts)),
            frames=math.ceil(frames / config.stride),
            size=hw,
            raw_frames=frames,
            random_weights=checkpoint is None,
            checkpoint=str(checkpoint) if checkpoint else None,
            sfc_checkpoint=str(sfc_checkpoint) if sfc_checkpoint else None,
            device=device,
            calibration=Calibration(calibrate, videos=calibrate_videos) if calibrate is not None else None,
            sfc_pieces=sfc_pieces,
        )
        check_options(out, options, force)  # --device cuda without a GPU: one line, before any work
        model = create_model(  # bad checkpoints fail here, before any warning or work
            config, tau=tau_value(tau), split=split, checkpoint=checkpoint, sfc_checkpoint=sfc_checkpoint,
            num_classes=num_classes, trust_checkpoint=trust_checkpoint,
        )
        if checkpoint is None:
            console.print(
                "[bold yellow]WARNING: no --checkpoint: exporting RANDOM backbone weights. "
                "Fine for speed and parity work, useless for accuracy.[/]"
            )
        if sfc_checkpoint is None:
            console.print("[yellow]note: no --sfc-checkpoint: the SFC module is untrained (random init).[/]")
        with console.status("exporting") as status:
            manifest = export_model(model, out, options, force=force, progress=lambda m: _step(status, m))
            console.print(f"wrote {len(manifest.artifacts)} artifacts and manifest.json to {out}")
            if no_verify:
                return
            _step(status, "verifying every artifact against PyTorch")
            parity = run_verify(manifest, progress=lambda m: _step(status, m)).to_dict()
        manifest.with_parity(parity).save()
        print_report(parity)
        if not parity["passed"]:
            raise typer.Exit(1)

    @app.command()
    def verify(
        root: Annotated[Path, typer.Argument(help="An export folder (with manifest.json).")],
        runtime: Annotated[list[str] | None, typer.Option("--runtime", "-r", help="Runtimes to check (default: every exported format).")] = None,
        precision: Annotated[list[str] | None, typer.Option("--precision", "-p", help="Precisions to check (default: all exported); bf16 with --runtime pytorch (the weights converted at load).")] = None,
        graph: Annotated[list[str] | None, typer.Option("--graph", "-g", help="ONNX SFC graphs to check: portable, custom (default both).")] = None,
        dense_clips: Annotated[int, typer.Option("--dense-clips", min=1, max=10, help="Temporal clips x 3 crops in the dense pipeline check (10 = the full 30-crop protocol).")] = 2,
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="Intra-op threads of every runtime (default: the runtime's choice).")] = None,
        record: Annotated[bool, typer.Option("--record/--no-record", help="Store the results in manifest.json.")] = True,
        device: Annotated[str | None, typer.Option("--device", help="Where every runtime runs: " + DEVICE_HELP + " Default: each artifact where it was compiled for (AOTInductor CUDA packages on CUDA), the rest on the runtime's default.")] = None,
    ) -> None:
        """Run every artifact this machine can run against PyTorch; exit 1 when a tolerance is exceeded."""
        from sfc_deploy.export.formats import check_runtime, parse_runtime_precisions
        from sfc_deploy.export.manifest import load_manifest
        from sfc_deploy.verify import verify as run_verify

        runtimes = [check_runtime(r.lower()) for r in split_list(runtime)] if runtime else None
        precisions = parse_runtime_precisions(precision) if precision else None
        manifest = load_manifest(root)
        with console.status("verifying against PyTorch") as status:
            report = run_verify(
                manifest, runtimes=runtimes, precisions=precisions, graphs=[g.lower() for g in split_list(graph)] if graph else None,
                dense_clips=dense_clips, threads=threads, device=device, progress=lambda m: _step(status, m),
            ).to_dict()
        if record:
            manifest.with_parity(report).save()
        print_report(report)
        if not report["passed"]:
            raise typer.Exit(1)


def _step(status, message: str) -> None:
    """Show the current step and keep a log line of each finished one (exports take minutes)."""
    console.log(message)
    status.update(message)


def print_report(report: dict) -> None:
    """The parity table, the tolerances, what was not run and why, and the pass/fail count."""
    table = Table(title="parity against PyTorch")
    for col in ("runtime", "prec", "graph", "part", "input", "max abs", "max rel", "top-1", "top-5", "result"):
        table.add_column(col)
    for c in report["checks"]:
        agree = lambda v: "" if v is None else f"{v:.0%}"  # noqa: E731
        table.add_row(
            c["runtime"] + (f"@{c['device']}" if c.get("device") else ""), c["precision"], c["variant"], c["part"], c["input"], f"{c['max_abs']:.2e}",
            f"{c['max_rel']:.2e}", agree(c["top1_agree"]), agree(c["top5_agree"]),
            "[green]pass[/]" if c["passed"] else "[red]FAIL[/]",
        )
    out = Console()
    if not out.is_terminal:  # logs and pipes: do not truncate the table to 80 columns
        out = Console(width=170)
    out.print(table)
    tol = ", ".join(f"{p}: rtol {t['rtol']:g}, atol {t['atol_scaled']:g} x max|ref|" for p, t in report["tolerances"].items())
    out.print(f"tolerances: {tol}")
    for c in report["checks"]:
        if c.get("error"):
            out.print(f"[red]FAILED[/] {c['runtime']} {c['precision']} ({c['variant']}): {c['error']}", soft_wrap=True)
    if report.get("topk_cuda"):
        topk = report["topk_cuda"]
        out.print(f"TopK on CUDA: {topk['impl']}" + (f" ({topk['library'] or topk['reason']})" if topk["library"] or topk["reason"] else ""))
    for n in report["not_run"]:
        out.print(f"[yellow]not run[/] {n['runtime']} {n['precision']}: {n['reason']}")
    failed = sum(not c["passed"] for c in report["checks"])
    out.print(f"{len(report['checks']) - failed} passed, {failed} failed, {len(report['not_run'])} not run")
