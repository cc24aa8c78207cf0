"""Data commands: ``sfc-deploy synth`` writes the synthetic action dataset the demo trains on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sfc_deploy.common.outputs import check_output_dir
from sfc_deploy.data.synth import MOTIONS, SynthOptions, parse_size, write_synth_dataset


def synth(
    out: Annotated[Path, typer.Argument(help="Directory to create (must not exist unless --force).")],
    classes: Annotated[
        int, typer.Option(min=2, max=len(MOTIONS), help=f"Motion classes, first N of: {', '.join(MOTIONS)}.")
    ] = 8,
    train_per_class: Annotated[int, typer.Option(min=0, help="Training videos per class.")] = 50,
    test_per_class: Annotated[int, typer.Option(min=0, help="Test videos per class.")] = 15,
    frames: Annotated[int, typer.Option(min=16, help="Raw frames per video.")] = 256,
    size: Annotated[str, typer.Option(help="Frame size HEIGHTxWIDTH (even numbers).")] = "64x80",
    fps: Annotated[int, typer.Option(min=1, help="Frame rate written into the files.")] = 25,
    seed: Annotated[int, typer.Option(min=0, help="Same seed, same dataset (CSV and decoded frames).")] = 0,
    window_min: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Shortest action window, as a fraction of the video.")
    ] = 0.25,
    window_max: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Longest action window, as a fraction of the video.")
    ] = 0.45,
    workers: Annotated[int, typer.Option(min=0, help="Encoding processes; 0 = up to 4, one per CPU core.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write a synthetic motion dataset: mp4 files, train.csv/test.csv (path,label,start,end), classes.txt.

    A bright object performs the class's motion in a random window; the rest is clutter (paper Figure 1).
    """
    options = SynthOptions(
        classes=classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        frames=frames,
        size=parse_size(size),
        fps=fps,
        seed=seed,
        window=(window_min, window_max),
    ).validate()
    check_output_dir(out, option="OUT", existing_ok=True)  # a file, or a parent that is one; "exists" below
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("synth", total=None)
        summary = write_synth_dataset(
            out, options, force=force, workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(
        f"wrote {summary.num_train} train + {summary.num_test} test videos of {len(summary.class_names)} classes "
        f"({options.frames} frames, {options.size[0]}x{options.size[1]}) to {summary.out}"
    )


def register(app: typer.Typer) -> None:
    """Add the data commands to the ``sfc-deploy`` app."""
    app.command("synth")(synth)
