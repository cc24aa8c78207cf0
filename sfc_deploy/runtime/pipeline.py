"""The SFC and dense pipelines, built from runners of any backend, and the ``load`` entry point.

``load(DIR, runtime=...)`` returns a :class:`Deployment` whose ``predict`` runs head -> SFC -> tail
and whose ``predict_dense`` runs the 30-crop baseline, both on the same backend, threads and
precision, from the same manifest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sfc_deploy.data.crops import dense_crops
from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.export.formats import RUNTIME_FORMAT, check_runtime
from sfc_deploy.export.manifest import PRECISIONS, Artifact, Manifest, load_manifest
from sfc_deploy.models.config import BackboneConfig
from sfc_deploy.runtime.base import TORCH_DTYPES, Runner

SFC_VARIANTS = ("portable", "custom")


def make_runner(manifest: Manifest, art: Artifact, runtime: str, **options) -> Runner:
    """Instantiate the runner class for ``runtime`` on one artifact (not yet activated)."""
    if runtime == "pytorch":
        from sfc_deploy.export.exporter import copy_for_export, model_from_manifest
        from sfc_deploy.export.parts import build_parts
        from sfc_deploy.runtime.torch_runner import PyTorchRunner

        model = options.pop("model", None) or model_from_manifest(manifest)
        dtype = TORCH_DTYPES[art.inputs[0].dtype]
        inp = manifest.data["input"]
        parts = build_parts(copy_for_export(model, dtype, topk_impl="op"), frames=inp["frames"], size=tuple(inp["size"]), dtype=dtype)
        return PyTorchRunner(art, None, module=parts[art.part].module, **options)
    path = manifest.path_of(art)
    options.pop("model", None)
    if runtime == "onnxruntime":
        from sfc_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(art, path, **options)
    if runtime == "torchscript":
        from sfc_deploy.runtime.torchscript_runner import TorchScriptRunner

        return TorchScriptRunner(art, path, **options)
    if runtime == "aoti":
        from sfc_deploy.runtime.aoti_runner import AOTIRunner

        return AOTIRunner(art, path, **options)
    if runtime == "tensorrt":
        from sfc_deploy.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(art, path, **options)
    raise ConfigError(f"unknown runtime {runtime!r}")


def pytorch_artifact(manifest: Manifest, part: str, precision: str) -> Artifact:
    """A synthetic artifact record for the PyTorch runtime: the part's I/O, served from the weights."""
    from dataclasses import replace

    base = _any_artifact(manifest, part, precision)
    return replace(base, format="pytorch", file=manifest.find("weights", "pytorch").file, variant="default")


def _any_artifact(manifest: Manifest, part: str, precision: str) -> Artifact:
    for art in manifest.artifacts:
        if art.part == part and art.precision == precision and art.variant in ("default", "portable"):
            if not any(isinstance(d, int) for d in art.inputs[0].shape[2:3]) or part != "sfc":
                return art
    for art in manifest.artifacts:
        if art.part == part and art.precision == precision:
            return art
    raise ArtifactError(f"{manifest.root} has no {part} artifact in {precision}; re-export with --precision {precision}")


class SFCPipeline:
    """head -> SFC -> tail. ``head_chunk`` streams the head over time (identical output where the
    head has no temporal receptive field), so peak memory stops growing with video length."""

    def __init__(self, head: Runner, sfc: Runner, tail: Runner, *, head_chunk: int | None = None) -> None:
        self.head, self.sfc, self.tail = head, sfc, tail
        self.head_chunk = head_chunk

    def _head(self, frames: torch.Tensor) -> torch.Tensor:
        t = frames.shape[2]
        if not self.head_chunk or t <= self.head_chunk:
            return self.head.infer({"video": frames})["f_head"]
        bounds = list(range(0, t, self.head_chunk))
        if t - bounds[-1] < 2 and len(bounds) > 1:
            bounds.pop()  # a 1-frame chunk would hit the export's minimum time; merge it
        ends = bounds[1:] + [t]
        return torch.cat([self.head.infer({"video": frames[:, :, a:b]})["f_head"] for a, b in zip(bounds, ends)], 2)

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_head = self._head(frames)
        out = self.sfc.infer({"f_head": f_head})
        logits = self.tail.infer({"f_sfc": out["f_sfc"]})["logits"]
        return logits, out["attention"]


class DensePipeline:
    """The 30-crop baseline on the clip model: crops batched ``batch_size`` at a time, logits averaged.

    ``num_clips`` x ``num_crops`` is 10 x 3 for the protocol the paper compares with; fewer clips
    run the same code for cheaper checks. The same crops and averaging as
    :func:`sfc_deploy.models.dense.dense_logits`, so both agree on the same weights.
    """

    def __init__(
        self, clip: Runner, config: BackboneConfig, *, batch_size: int = 30, num_clips: int = 10, num_crops: int = 3
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"dense batch size must be >= 1, got {batch_size}")
        self.clip, self.config, self.batch_size = clip, config, batch_size
        self.num_clips, self.num_crops = num_clips, num_crops

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """(N, 3, T_raw, H, W) normalised frames, short side = the crop size -> (N, classes) fp32."""
        crops = dense_crops(video, self.config, num_clips=self.num_clips, num_crops=self.num_crops)
        logits = torch.cat([self.clip.infer({"clip": c.contiguous()})["logits"] for c in crops.split(self.batch_size)])
        return logits.float().reshape(video.shape[0], -1, logits.shape[-1]).mean(1)


class Deployment:
    """An export folder opened on one runtime and precision."""

    def __init__(
        self,
        manifest: Manifest,
        runtime: str = "onnxruntime",
        *,
        precision: str = "fp32",
        sfc_variant: str = "portable",
        head_chunk: int | None = None,
        dense_batch: int = 30,
        **runner_options,
    ) -> None:
        self.manifest = manifest
        self.runtime = check_runtime(runtime)
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if sfc_variant not in SFC_VARIANTS:
            raise ConfigError(f"unknown SFC graph variant {sfc_variant!r}; expected one of {', '.join(SFC_VARIANTS)}")
        if sfc_variant == "custom" and runtime not in ("onnxruntime", "tensorrt"):
            raise ConfigError(f"the custom-op SFC graph is ONNX-only; it does not apply to --runtime {runtime}")
        self.sfc_variant = sfc_variant
        self.config = BackboneConfig.from_dict(manifest.data["backbone"])
        if head_chunk and not manifest.data["input"]["head_streamable"]:
            raise ConfigError(
                f"the head after {manifest.data['split']} mixes time steps, so it cannot stream in chunks; drop --head-chunk"
            )
        self.head_chunk = head_chunk
        self.dense_batch = dense_batch
        self.runner_options = runner_options
        self._runners: dict[str, Runner] = {}
        if runtime == "pytorch":
            from sfc_deploy.export.exporter import model_from_manifest

            self.runner_options["model"] = model_from_manifest(manifest)

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16}[self.precision]

    def artifact(self, part: str) -> Artifact:
        if self.runtime == "pytorch":
            return pytorch_artifact(self.manifest, part, self.precision)
        variant = self.sfc_variant if part == "sfc" and self.runtime in ("onnxruntime", "tensorrt") else None
        return self.manifest.find(part, RUNTIME_FORMAT[self.runtime], self.precision, variant)

    def has(self, part: str) -> bool:
        """Whether the folder has ``part`` for this runtime and precision (exports may be partial)."""
        try:
            self.artifact(part)
        except ArtifactError:
            return False
        return True

    def runner(self, part: str) -> Runner:
        if part not in self._runners:
            runner = make_runner(self.manifest, self.artifact(part), self.runtime, **dict(self.runner_options))
            self._runners[part] = runner.__enter__()
        return self._runners[part]

    def sfc_pipeline(self) -> SFCPipeline:
        return SFCPipeline(self.runner("head"), self.runner("sfc"), self.runner("tail"), head_chunk=self.head_chunk)

    def dense_pipeline(self, num_clips: int = 10) -> DensePipeline:
        return DensePipeline(self.runner("clip"), self.config, batch_size=self.dense_batch, num_clips=num_clips)

    def predict(self, frames: torch.Tensor) -> torch.Tensor:
        """SFC logits (N, classes) for (N, 3, T, H, W) normalised frames sampled at the backbone's stride."""
        return self.predict_with_attention(frames)[0]

    def predict_with_attention(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, attention = self.sfc_pipeline()(frames.to(self.dtype))
        return logits.float(), attention.float()

    def predict_dense(self, video: torch.Tensor, *, num_clips: int = 10) -> torch.Tensor:
        """30-crop logits (N, classes) for (N, 3, T_raw, H, W) normalised frames at the full frame
        rate, short side resized to the crop size (``num_clips`` < 10: the same, cheaper)."""
        return self.dense_pipeline(num_clips)(video.to(self.dtype))

    def close(self) -> None:
        for runner in self._runners.values():
            runner.__exit__(None, None, None)
        self._runners.clear()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(root: str | Path, runtime: str = "onnxruntime", **options) -> Deployment:
    """Open an export folder: ``load(DIR, runtime="onnxruntime").predict(frames)``."""
    return Deployment(load_manifest(root), runtime, **options)
