"""Classify video files with SFC and say where it looked: the library behind ``sfc-deploy predict``.

A :class:`Predictor` is an SFC model opened from checkpoints (:func:`from_checkpoints`) or from an
export folder on any runtime (:func:`from_export`); both give logits and the attention map M
(k, T) for one video, so everything after that is shared.

Both run through a :class:`~sfc_deploy.runtime.pipeline.Deployment` (a PyTorch model in memory or
an export folder), and the input is eval's ``sfc`` strategy fitted to what the deployment takes by
the one video-to-input function (:func:`~sfc_deploy.data.inputs.model_input`): the whole video at
the backbone's stride, short side resized; a fixed time axis gets exactly its T frames, a fixed
frame size a centre crop (smaller frames are refused), so ``predict``, ``eval`` and ``bench`` feed
a model the same tensor.

Where SFC looked: row i of M is compressed slot i's softmax over the T sampled frames, so the
column sums (the attention *mass* of each sampled frame) add up to k. Each sampled frame maps back
to a source frame index and so to a timestamp. :class:`Prediction` keeps the whole matrix, so a
Fig. 6-style rendering of attention over frames can be drawn from it without running the model again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.data.datasets import read_class_names
from sfc_deploy.data.inputs import InputSpec, sfc_input
from sfc_deploy.data.samplers import SampledVideo
from sfc_deploy.data.video import VideoInfo, probe_video
from sfc_deploy.errors import ConfigError
from sfc_deploy.eval.evaluate import sfc_at_tau
from sfc_deploy.models.config import BackboneConfig, head_step_frames
from sfc_deploy.models.factory import create_model
from sfc_deploy.models.sfc_model import read_sfc_checkpoint
from sfc_deploy.runtime.pipeline import Deployment, load

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ClassScore:
    """One class of a prediction: its index in the classifier, its name and its probability."""

    index: int
    name: str
    prob: float


@dataclass(frozen=True)
class Prediction:
    """One video's classification and SFC's attention over its frames.

    Attributes:
        path: the video file.
        num_frames: frames in the source video.
        fps: its average frame rate (0 where the container does not say).
        frame_indices: the source frame of each of the T sampled frames, in the order the model read
            them (non-decreasing; a very short video repeats its last frame). Where the head has a
            temporal stride s (R(2+1)D), T counts head steps: the first of every s sampled frames.
        size: (H, W) of the frames the model read.
        crop: (top, left) of the centre crop taken to fit an export's frame size, or None.
        logits: (classes,) float32.
        probs: (classes,) float32, the softmax of ``logits``.
        top: the most probable classes, most probable first.
        attention: (k, T) float32; row i is compressed slot i's softmax over the sampled frames.
        sampled_frames: the frames SFC read (more than T where the head strides time), or None: T.
    """

    path: Path
    num_frames: int
    fps: float
    frame_indices: tuple[int, ...]
    size: tuple[int, int]
    crop: tuple[int, int] | None
    logits: torch.Tensor
    probs: torch.Tensor
    top: tuple[ClassScore, ...]
    attention: torch.Tensor
    sampled_frames: int | None = None

    @property
    def read(self) -> str:
        """What SFC read, for titles: "24 frames (12 head steps)" where the head strides time, else "T=24 frames"."""
        t = len(self.frame_indices)
        if self.sampled_frames is None or self.sampled_frames == t:
            return f"T={t} frames"
        return f"{self.sampled_frames} frames (T={t} head steps)"

    @property
    def k(self) -> int:
        """Compressed length: the number of slots (rows of the attention map)."""
        return int(self.attention.shape[0])

    @property
    def mass(self) -> torch.Tensor:
        """(T,) attention received by each sampled frame, summed over the k slots (adds up to k)."""
        return self.attention.sum(0)

    @property
    def timestamps(self) -> list[float | None]:
        """Seconds from the start of the video of each sampled frame (None without a frame rate)."""
        return [i / self.fps if self.fps > 0 else None for i in self.frame_indices]

    def peaks(self, n: int = 3) -> list[int]:
        """Positions (into the sampled frames) of the ``n`` most attended frames, most attended first."""
        return self.mass.topk(min(n, self.mass.numel())).indices.tolist()

    def to_dict(self, *, matrix: bool = False) -> dict[str, Any]:
        """JSON-ready: path, top classes and the attention mass per sampled frame (``matrix``: and M)."""
        attention: dict[str, Any] = {
            "k": self.k,
            "frames": len(self.frame_indices),
            "source_frames": list(self.frame_indices),
            "timestamps_s": [None if t is None else round(t, 6) for t in self.timestamps],
            "mass": self.mass.tolist(),
        }
        if matrix:
            attention["matrix"] = self.attention.tolist()
        return {
            "path": str(self.path),
            "num_frames": self.num_frames,
            "fps": self.fps,
            "input_size": list(self.size),
            "crop": list(self.crop) if self.crop is not None else None,
            "top": [dataclasses.asdict(c) for c in self.top],
            "attention": attention,
        }


@dataclass
class Predictor:
    """An SFC model ready to classify: its config, what input it takes, and (logits, attention).

    Attributes:
        config: backbone config (stride, preprocessing, classes, stored class names).
        forward: (1, 3, T, H, W) float32 -> logits (1, classes) and attention (1, k, T), both float32.
        source: JSON-ready description of where the weights came from.
        frames: the sampled frames a fixed time axis takes, or None (any length).
        size: the (H, W) a fixed-size graph takes, or None (any size).
        class_names: names stored with the weights, if any.
        warnings: things the user should know about the weights (random, untrained).
        close: releases the runtime's sessions (use the predictor as a context manager).
    """

    config: BackboneConfig
    forward: Forward
    source: dict[str, Any]
    frames: int | None = None
    size: tuple[int, int] | None = None
    class_names: tuple[str, ...] | None = None
    warnings: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def from_checkpoints(
    backbone: str = "slow8x8",
    *,
    checkpoint: str | Path | None = None,
    sfc_checkpoint: str | Path | None = None,
    tau: float | None = None,
    trust_checkpoint: bool = False,
    device: str | None = None,
) -> Predictor:
    """SFC on PyTorch from backbone weights and a trained SFC (either may be missing: random).

    Args:
        backbone: registry name.
        checkpoint: backbone weights in any supported layout (None: random weights).
        sfc_checkpoint: SFC weights from ``sfc-deploy train`` (None: an untrained SFC).
        tau: compression ratio; default the SFC checkpoint's (the weights do not depend on tau, so a
            trained SFC runs at any tau, as in eval), or 2.
        trust_checkpoint: allow pickled objects in checkpoints you trust.
        device: "cpu" or "cuda:N" (see :func:`~sfc_deploy.common.device.resolve_device`); None: the CPU.
    """
    if tau is not None and tau < 1:
        raise ConfigError(f"--tau must be >= 1 (k = round(T / tau) <= T), got {tau:g}")
    model = create_model(backbone, checkpoint=checkpoint, sfc_checkpoint=sfc_checkpoint,
                         trust_checkpoint=trust_checkpoint, tau=2.0 if tau is None else tau)
    if sfc_checkpoint is not None and tau is not None:  # create_model ran it at its trained tau
        model = sfc_at_tau(model, tau)
    names = model.config.class_names
    if not names and sfc_checkpoint is not None:  # the SFC file records the config it was trained with
        saved = BackboneConfig.from_dict(read_sfc_checkpoint(sfc_checkpoint)[1]["backbone_config"])
        names = saved.class_names if saved.num_classes == model.config.num_classes else None
    warnings = []
    if checkpoint is None:
        warnings.append("no --checkpoint: the backbone has RANDOM weights, so the classes mean nothing")
    if sfc_checkpoint is None:
        warnings.append("no --sfc-checkpoint: the SFC module is untrained (random init)")

    dep = Deployment.from_model(model, device=device)
    source = {"kind": "checkpoints", "runtime": "pytorch", "precision": "fp32", "device": dep.device or "cpu",
              "backbone": model.config.name,
              "checkpoint": str(checkpoint) if checkpoint else None,
              "sfc_checkpoint": str(sfc_checkpoint) if sfc_checkpoint else None,
              "tau": model.sfc.config.tau, "split": model.split}
    return Predictor(config=model.config, forward=dep.predict_with_attention, source=source, class_names=names,
                     warnings=warnings, close=dep.close)


def from_export(export_dir: str | Path, *, runtime: str = "onnxruntime", precision: str = "fp32",
                threads: int | None = None, device: str | None = None) -> Predictor:
    """SFC from an export folder (head -> SFC -> tail of ``runtime`` at ``precision`` on ``device``,
    None: the runtime's default); close it after use."""
    dep = load(export_dir, runtime, precision=precision, device=device,
               **({} if threads is None else {"threads": threads}))
    try:
        dep.check(("head", "sfc", "tail"))  # missing or damaged files fail now, not after decoding
        spec = dep.input_spec
    except BaseException:
        dep.close()
        raise
    manifest = dep.manifest
    warnings = []
    if manifest.random_weights:
        warnings.append(f"{export_dir} was exported with RANDOM backbone weights, so the classes mean nothing")
    source = {"kind": "export", "export": str(export_dir), "runtime": runtime, "precision": precision,
              "device": dep.device, "backbone": dep.config.name, "checkpoint": manifest.checkpoint,
              "sfc_checkpoint": manifest.sfc_checkpoint, "tau": manifest.tau, "split": manifest.split}
    return Predictor(config=dep.config, forward=dep.predict_with_attention, source=source, frames=spec.frames,
                     size=spec.size, class_names=dep.config.class_names, warnings=warnings, close=dep.close)


def resolve_class_names(predictor: Predictor, classes_file: str | Path | None = None) -> tuple[tuple[str, ...], str]:
    """The names of the classifier's outputs and where they came from ("file", "weights" or "indices")."""
    n = predictor.config.num_classes
    if classes_file is not None:
        path = Path(classes_file)
        if not path.is_file():
            raise ConfigError(f"--classes {path}: file not found; pass a text file with one class name per line")
        names = read_class_names(path)
        if len(names) != n:
            raise ConfigError(f"--classes {path} lists {len(names)} class names but the model has {n} classes; "
                              "pass the class list the model was trained on")
        return names, "file"
    if predictor.class_names and len(predictor.class_names) == n:
        return tuple(predictor.class_names), "weights"
    return tuple(str(i) for i in range(n)), "indices"


def sample_for(predictor: Predictor, path: str | Path, *, info: VideoInfo | None = None,
               max_frames: int | None = None, segments: tuple[int, int] | None = None,
               reference_only: bool = False) -> tuple[SampledVideo, tuple[int, int] | None]:
    """SFC's input for ``path`` as ``predictor`` takes it, and the centre crop taken to fit it (or None).

    ``segments`` (S, F): the paper's section 6 input instead of the whole video, S uniformly spaced
    segments of F consecutive sampled frames, concatenated (S*F frames). ``reference_only``: the
    fast decode mode (``--fast-decode``, :func:`~sfc_deploy.data.video.read_frames`).

    Raises:
        VideoError: missing, corrupt or empty video; frames smaller than a fixed-size export.
        ConfigError: ``max_frames`` against a fixed time axis or with ``segments``; S*F against it.
    """
    fitted = sfc_input(path, predictor.config, InputSpec(predictor.frames, predictor.size), info=info,
                       max_frames=max_frames, segments=segments, reference_only=reference_only)
    return fitted.sampled, fitted.crop


def predict_video(
    predictor: Predictor,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    top: int = 5,
    max_frames: int | None = None,
    info: VideoInfo | None = None,
    segments: tuple[int, int] | None = None,
    prepared: tuple[SampledVideo, tuple[int, int] | None] | None = None,
) -> Prediction:
    """Classify one video with SFC; see :class:`Prediction`.

    Args:
        predictor: from :func:`from_checkpoints` or :func:`from_export`.
        path: the video file.
        class_names: one per class (default: :func:`resolve_class_names`).
        top: how many classes to keep (at most all of them).
        max_frames: most sampled frames (a longer video becomes segments), None: all.
        info: a previous :func:`probe_video` result.
        segments: (S, F): S uniformly spaced segments of F consecutive sampled frames (paper
            section 6, untrimmed videos) instead of the whole video; None: the whole video.
        prepared: what :func:`sample_for` returned for ``path`` (decoded ahead, e.g. by a
            :class:`~sfc_deploy.data.prefetch.Prefetcher`); None: sampled here.
    """
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    names = tuple(class_names) if class_names is not None else resolve_class_names(predictor)[0]
    path = Path(path)
    info = info or probe_video(path)
    sampled, crop = prepared or sample_for(predictor, path, info=info, max_frames=max_frames, segments=segments)
    logits, attention = predictor.forward(sampled.tensor)
    logits, attention = logits[0].float(), attention[0].float()
    if len(names) != logits.numel():
        raise ConfigError(f"{len(names)} class names for a model with {logits.numel()} classes; "
                          "pass the class list the model was trained on")
    indices = head_step_frames(sampled.frame_indices[0], attention.shape[-1])
    probs = logits.softmax(-1)
    best = probs.topk(min(top, probs.numel()))
    scores = tuple(ClassScore(int(i), names[int(i)], float(p)) for p, i in zip(best.values, best.indices))
    return Prediction(path=path, num_frames=info.num_frames, fps=info.fps, frame_indices=tuple(indices),
                      size=tuple(sampled.tensor.shape[-2:]), crop=crop, logits=logits, probs=probs, top=scores,
                      attention=attention, sampled_frames=len(sampled.frame_indices[0]))
