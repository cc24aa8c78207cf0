"""Option types shared by several commands (typer ``Annotated`` aliases and parsers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfc_deploy.common.device import DEVICE_HELP
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.sfc import parse_tau

BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help="Registered backbone (see `sfc-deploy info --list`).")]
TauOpt = Annotated[str, typer.Option("--tau", help="Compression ratio: k = round(T / tau); 1, 4/3, 2, 4 ...")]
SplitOpt = Annotated[str, typer.Option("--split", help="The head ends after this stage: stem, res2, res3, res4.")]
FramesOpt = Annotated[int, typer.Option("--frames", min=1, help="Raw frames of the video SFC reads (the paper: 288).")]
SizeOpt = Annotated[str, typer.Option("--size", help="HxW of the frames SFC reads (the paper: 256x312).")]
CheckpointOpt = Annotated[Path | None, typer.Option("--checkpoint", help="Backbone weights in any supported layout.")]
SfcCheckpointOpt = Annotated[Path | None, typer.Option("--sfc-checkpoint", help="Trained SFC weights (sfc-deploy train).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the model runs: " + DEVICE_HELP)]
TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow pickled objects in checkpoints you trust.")]
FastDecodeOpt = Annotated[bool, typer.Option("--fast-decode", help="Decode reference frames only (about half the "
                          "decoding work on H.264 with B-frames) and take the nearest decoded frame for each wanted one "
                          "(at most 1-2 frames away); see benchmarks/decode for its top-1 cost.")]


def parse_size(value: str) -> tuple[int, int]:
    """'256x312' -> (256, 312)."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 256x312 (HxW), got {value!r}") from None
    if h < 16 or w < 16:
        raise ConfigError(f"--size {value} is too small; frames must be at least 16x16")
    return h, w


def tau_value(value: str) -> float:
    return parse_tau(value)


SegmentsOpt = Annotated[int | None, typer.Option("--segments", min=1, help="Untrimmed videos (paper section 6): S uniformly "
                                                 "spaced segments (with --segment-frames; default: the whole video).")]
SegmentFramesOpt = Annotated[int | None, typer.Option("--segment-frames", min=1, help="With --segments: F consecutive "
                                                      "sampled frames per segment (the paper: 8 x 32 = 256, 8 x 128 = 1024).")]


def segments_pair(segments: int | None, segment_frames: int | None) -> tuple[int, int] | None:
    """``--segments S --segment-frames F`` -> (S, F); neither -> None; one alone is refused."""
    if (segments is None) != (segment_frames is None):
        given, missing = ("--segments", "--segment-frames") if segments is not None else ("--segment-frames", "--segments")
        raise ConfigError(f"{given} needs {missing}: pass both (e.g. --segments 8 --segment-frames 32) or neither")
    return None if segments is None else (segments, segment_frames)  # type: ignore[return-value]
