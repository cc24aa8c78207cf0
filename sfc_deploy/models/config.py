"""Config dataclasses that travel with every model and every artifact.

A config is plain data (JSON-serialisable through :func:`dataclasses.asdict`) so that it can be
written into safetensors metadata, ``manifest.json`` and ONNX ``metadata_props`` and read back
without importing any model code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from sfc_deploy.errors import ConfigError

#: Stage names in network order. A split "after X" keeps stages up to and including X in the head.
STAGES: tuple[str, ...] = ("stem", "res2", "res3", "res4", "res5")
#: Split points the paper evaluates (Table 6a); "res3" is the paper's default.
SPLITS: tuple[str, ...] = ("stem", "res2", "res3", "res4")


@dataclass(frozen=True)
class Preprocess:
    """How raw RGB uint8 frames become network input.

    Attributes:
        convention: "pytorchvideo" (0-1 scale) or "mmaction2" (0-255 scale); recorded so a user
            can tell which toolbox the weights came from.
        scale: multiply uint8 pixels by this before normalising (1/255 or 1.0).
        mean: per-channel mean, in the scaled units.
        std: per-channel std, in the scaled units.
        short_side: frames are resized so that their short side has this length.
        crop: square crop size of a dense-sampling clip.
    """

    convention: str = "pytorchvideo"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    short_side: int = 256
    crop: int = 256

    @classmethod
    def mmaction2(cls) -> "Preprocess":
        return cls(
            convention="mmaction2",
            scale=1.0,
            mean=(123.675, 116.28, 103.53),
            std=(58.395, 57.12, 57.375),
        )


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone and feed it correctly.

    Attributes:
        name: registry name, e.g. "slow8x8".
        family: architecture family ("slowonly").
        frames: frames per clip for dense sampling.
        stride: temporal stride between sampled raw frames.
        stem_channels: output channels of the stem.
        widths: output channels of res2..res5.
        mids: bottleneck widths of res2..res5.
        depths: blocks in res2..res5.
        temporal_kernels: temporal kernel of conv_a in res2..res5.
        num_classes: classifier outputs.
        preprocess: input normalisation.
        class_names: names of the classifier's outputs, where the weights say.
        temporal_strides: temporal stride of block 0 of res2..res5 (R(2+1)D: 1, 2, 2, 2); a head
            with a stride > 1 changes the frame rate (see :meth:`head_temporal_stride`).
        stem_temporal_kernel: temporal kernel of the stem (R(2+1)D's 3x1x1 conv: 3).
    """

    name: str
    family: str = "slowonly"
    frames: int = 8
    stride: int = 8
    stem_channels: int = 64
    widths: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    mids: tuple[int, int, int, int] = (64, 128, 256, 512)
    depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    temporal_kernels: tuple[int, int, int, int] = (1, 1, 3, 3)
    num_classes: int = 400
    preprocess: Preprocess = field(default_factory=Preprocess)
    class_names: tuple[str, ...] | None = None
    temporal_strides: tuple[int, int, int, int] = (1, 1, 1, 1)
    stem_temporal_kernel: int = 1

    @property
    def clip_span(self) -> int:
        """Raw frames covered by one dense-sampling clip (64 for 8x8, 16x4 and 32x2)."""
        return self.frames * self.stride

    def stage_channels(self, stage: str) -> int:
        """Output channels of a stage, used to size the SFC module for a split."""
        if stage == "stem":
            return self.stem_channels
        return self.widths[STAGES.index(stage) - 1]

    def head_temporal_receptive_field(self, split: str) -> int:
        """Temporal receptive field (in frames) of the head for a split.

        1 means every head output frame depends on exactly one input frame, so the head can run
        over a long video in chunks of frames with bit-identical output.
        """
        rf, jump = self.stem_temporal_kernel, 1  # jump: input frames between two steps of this stage
        for i, stage in enumerate(STAGES[1 : STAGES.index(split) + 1]):
            rf += (self.temporal_kernels[i] - 1) * jump  # block 0's temporal conv, strided
            jump *= self.temporal_strides[i]
            rf += (self.temporal_kernels[i] - 1) * jump * (self.depths[i] - 1)
        return rf

    def head_temporal_stride(self, split: str) -> int:
        """Input frames per head time step for a split: 1 for slow-only, 2 for R(2+1)D after res3.

        SFC compresses the head's time axis, so its attention has ``head_frames(T, split)`` columns,
        each covering this many sampled frames (the first at column index x stride).
        """
        stride = 1
        for s in self.temporal_strides[: STAGES.index(split)]:
            stride *= s
        return stride

    def head_frames(self, frames: int, split: str) -> int:
        """Time steps of the head's output for ``frames`` input frames (strided convs round up)."""
        for s in self.temporal_strides[: STAGES.index(split)]:
            frames = -(-frames // s)
        return frames

    def check_head_chunk(self, split: str, head_chunk: int | None) -> None:
        """Refuse streaming the head in chunks where its output would change (a head that mixes time
        steps: temporal kernels or strides before the split, e.g. R(2+1)D's)."""
        if head_chunk and self.head_temporal_receptive_field(split) != 1:
            raise ConfigError(f"--head-chunk {head_chunk}: the head after {split} mixes time steps (temporal kernels "
                              "or strides), so it cannot stream in chunks with the same output; drop --head-chunk")

    def replace(self, **changes: Any) -> "BackboneConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BackboneConfig":
        try:
            data = dict(data)
            pre = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("preprocess").items()})
            tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
            return cls(**{**data, **tuples, "preprocess": pre})
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"backbone config is malformed ({exc}); re-export the artifact with this version of sfc-deploy"
            ) from exc


def head_step_frames(frame_indices, steps: int) -> list[int]:
    """The sampled frame each of SFC's ``steps`` attention columns stands for (timestamps, pictures).

    The attention runs on the head's time axis. A slow-only head keeps the frame rate (one column per
    sampled frame); a head with a temporal stride s (R(2+1)D: 2 after res3) has ceil(T / s) steps,
    step j reading sampled frames j*s .. j*s+s-1, and is shown at the first of them. s is the power of
    two with ceil(T / s) == steps, unique when steps >= 2 (for one step every s gives the first frame).

    Raises:
        ConfigError: no stride maps the T sampled frames onto ``steps`` columns.
    """
    frames = list(frame_indices)
    stride = 1
    while -(-len(frames) // stride) > steps and stride < len(frames):
        stride *= 2
    if steps < 1 or -(-len(frames) // stride) != steps:
        raise ConfigError(
            f"the attention covers {steps} time steps but {len(frames)} frames were sampled, which no head "
            "temporal stride explains; the export and the frames it was given do not match: re-export the model"
        )
    return frames[::stride]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} (the head ends after it)")
    return split
