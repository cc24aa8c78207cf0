"""One way from a decoded video to a model's input, for every command.

A model (a PyTorch module or an export) takes SFC input of any length and size, or graphs fixed at
export: a number of sampled frames T (TorchScript, AOTInductor, the custom-op ONNX graph) and a
frame size HxW (every exported head). :class:`InputSpec` says which; :func:`model_input` samples a
video file or a tensor with a strategy (:mod:`sfc_deploy.data.samplers`) and fits the result to
the spec with the same rules everywhere (predict, eval, bench, verify):

* a fixed T: the sampler is asked for exactly T frames (a longer video becomes segments, a shorter
  one repeats its last frame: the sampler's own rules for long and short videos); strategy
  ``segments`` (S segments of F sampled frames, paper section 6) must fill it exactly (S*F == T),
  else a one-line :class:`ConfigError` names the fix (:func:`check_segments`);
* a fixed HxW: frames resized (short side) larger than the export are centre-cropped to it, smaller
  ones are refused with the fix (re-export with a ``--size`` that fits): never stretched, so the
  model sees the aspect ratio it was trained on.

Clip strategies (single, uniform, dense) always produce square crops of the config's crop size,
which is what the clip model takes, so they need no fitting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.data.samplers import SampledVideo, sample_tensor, sample_video
from sfc_deploy.data.video import VideoInfo
from sfc_deploy.errors import ConfigError, VideoError
from sfc_deploy.models.config import BackboneConfig

#: Segments a long video is cut into when a fixed time axis caps the sampled frames (plan_sfc's default).
SEGMENTS = 8


@dataclass(frozen=True)
class InputSpec:
    """What SFC input a model takes: a fixed number of sampled frames and a fixed HxW (None: any)."""

    frames: int | None = None
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class ModelInput:
    """A sampled video fitted to a model, and the centre crop taken to fit it (None: none)."""

    sampled: SampledVideo
    crop: tuple[int, int] | None = None

    @property
    def tensor(self) -> torch.Tensor:
        return self.sampled.tensor


def model_input(
    source: str | Path | torch.Tensor,
    strategy: str,
    config: BackboneConfig,
    spec: InputSpec = InputSpec(),
    *,
    info: VideoInfo | None = None,
    max_frames: int | None = None,
    reference_only: bool = False,
    **opts: Any,
) -> ModelInput:
    """The input ``strategy`` feeds a model of ``config`` taking ``spec``, from a file or a tensor.

    Args:
        source: a video file (decoded here) or a video tensor at its full frame rate (see
            :func:`~sfc_deploy.data.samplers.sample_tensor`).
        strategy: sfc, segments, single, uniform or dense.
        spec: the model's fixed dims (from ``Deployment.input_spec``).
        info: a previous probe of ``source``.
        max_frames: SFC only: most sampled frames (a longer video becomes segments); None: all.
        reference_only: a file decodes its reference frames only (``--fast-decode``; see
            :func:`~sfc_deploy.data.video.read_frames`); a tensor is already decoded.
        **opts: the strategy's other options (``num_clips`` for uniform/dense...).

    Raises:
        VideoError: missing, corrupt or empty video; frames smaller than a fixed-size export.
        ConfigError: ``max_frames`` against a fixed time axis; a bad strategy or option.
    """
    where = str(source) if not isinstance(source, torch.Tensor) else "the video"
    if strategy == "sfc":
        opts = {**opts, "max_frames": max_frames}
        if spec.frames is not None:
            t = spec.frames
            if max_frames is not None and max_frames != t:
                raise ConfigError(f"the export's SFC graph takes exactly {t} frames; drop --max-frames {max_frames} "
                                  f"(or pass --max-frames {t}), or re-export with --frames for another length")
            opts.update(max_frames=t, min_frames=t, segments=min(SEGMENTS, t))
    elif max_frames is not None:
        raise ConfigError(f"max_frames applies to the sfc strategy only, not {strategy!r}")
    if strategy == "segments":
        check_segments(spec, opts.get("segments", 8), opts.get("frames_per_segment", 32))
    if isinstance(source, torch.Tensor):
        sampled = sample_tensor(source, strategy, config, **opts)
    else:
        sampled = sample_video(source, strategy, config, info=info, reference_only=reference_only, **opts)
    if strategy not in ("sfc", "segments"):
        return ModelInput(sampled)
    if spec.frames is not None and sampled.tensor.shape[2] != spec.frames:  # pragma: no cover
        raise ConfigError(f"{where}: sampled {sampled.tensor.shape[2]} frames but the export takes {spec.frames}")
    return fit_size(sampled, spec.size, where=where)


def sfc_input(
    path: str | Path,
    config: BackboneConfig,
    spec: InputSpec = InputSpec(),
    *,
    info: VideoInfo | None = None,
    max_frames: int | None = None,
    segments: tuple[int, int] | None = None,
    reference_only: bool = False,
) -> ModelInput:
    """SFC's input from a file as predict, classify, serve and bench read it: the whole video, or with
    ``segments`` (S, F) S uniformly spaced segments of F consecutive sampled frames (paper section 6).

    Raises:
        ConfigError: ``max_frames`` with ``segments``; S*F against a fixed time axis.
        VideoError: as :func:`model_input`.
    """
    if segments is None:
        return model_input(path, "sfc", config, spec, info=info, max_frames=max_frames, reference_only=reference_only)
    if max_frames is not None:
        raise ConfigError("--max-frames applies to whole-video input; drop it with --segments/--segment-frames")
    return model_input(path, "segments", config, spec, info=info, reference_only=reference_only,
                       segments=segments[0], frames_per_segment=segments[1])


def check_segments(spec: InputSpec, segments: int, frames_per_segment: int) -> None:
    """Refuse S segments of F frames for a fixed time axis T unless S*F == T (one line naming the fix)."""
    s, f = int(segments), int(frames_per_segment)
    if spec.frames is not None and s * f != spec.frames:
        raise ConfigError(f"the export's SFC graph takes exactly {spec.frames} frames but --segments {s} "
                          f"--segment-frames {f} gives {s * f}; pick S x F = {spec.frames}, or re-export with --frames "
                          f"{s * f} x the backbone's stride (--frames counts raw frames), or run it with "
                          "--runtime pytorch (any length)")


def fit_size(sampled: SampledVideo, size: tuple[int, int] | None, *, where: str = "the video") -> ModelInput:
    """Centre-crop SFC input to a fixed HxW; refuse frames smaller than it."""
    if size is None or tuple(sampled.tensor.shape[-2:]) == tuple(size):
        return ModelInput(sampled)
    (h, w), (eh, ew) = sampled.tensor.shape[-2:], size
    if h < eh or w < ew:
        raise VideoError(f"{where}: frames resize to {h}x{w} but the export takes {eh}x{ew}; "
                         f"re-export with --size {h}x{w} (or smaller) to classify this video")
    top, left = (h - eh) // 2, (w - ew) // 2
    tensor = sampled.tensor[..., top : top + eh, left : left + ew].contiguous()
    return ModelInput(dataclasses.replace(sampled, tensor=tensor, crops=((top, left),) * len(sampled.crops)), (top, left))
