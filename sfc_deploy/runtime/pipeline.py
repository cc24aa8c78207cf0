"""The SFC and clip pipelines, built from runners of any backend, and the ``load`` entry point.

Every command runs the same two pipelines:

* :class:`SFCPipeline`: head -> SFC -> tail on the whole video;
* :class:`ClipPipeline`: the clip model on a batch of clips (single, uniform, or the 30-crop dense
  baseline SFC replaces), ``batch_size`` crops at a time, logits averaged per video. It is the one
  dense path: bench, eval, verify and the runtime API all call it, on exported artifacts or on a
  PyTorch model alike (:meth:`Deployment.from_model`).

``load(DIR, runtime=..., device=...)`` returns a :class:`Deployment` whose ``predict`` runs the SFC
pipeline and whose ``predict_dense`` runs the dense one, on the same backend, device, threads and
precision, from the same manifest.

On a GPU the input is decoded on the CPU, copied once to the device (from pinned memory, without
waiting), stays there between head -> SFC -> tail and between clip batches, and the logits come
back to the host once at the end; on the CPU nothing is copied at all. Which frames and crops a
video becomes is the data layer's job (:func:`sfc_deploy.data.inputs.model_input`); a deployment
says what it takes (:attr:`input_spec`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from sfc_deploy.common.device import resolve_device
from sfc_deploy.common.precision import check_runtime_precision, get_precision
from sfc_deploy.data.inputs import InputSpec
from sfc_deploy.data.samplers import sample_tensor
from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.export.formats import check_graph, check_runtime, format_of_runtime
from sfc_deploy.export.manifest import WEIGHTS, Artifact, Manifest, TensorSpec, load_manifest
from sfc_deploy.export.parts import build_parts
from sfc_deploy.models.config import BackboneConfig
from sfc_deploy.models.sfc_model import SFCModel
from sfc_deploy.runtime.base import Runner
from sfc_deploy.runtime.registry import check_device, check_runner_options, make_runner, served_model
from sfc_deploy.runtime.sfc_stream import StreamedSFC, pieces_of
from sfc_deploy.runtime.torch_runner import PyTorchRunner


def to_runner(x: torch.Tensor, runner: Runner, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` where ``runner`` takes its input. To a GPU: pinned, copied without waiting
    (the host may decode the next video meanwhile), then cast there (half the bytes would cross the
    bus as fp16, but the cast is far cheaper on the GPU than on the CPU); on the CPU: ``x.to(dtype)``."""
    device = runner.input_device
    if device.type == "cuda" and x.device.type == "cpu":
        x = (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
    return x.to(dtype)


#: Sampled frames from which SFC itself streams with the head chunks (``head_chunk`` set). Shorter
#: videos run the whole-video SFC graph, which is faster (on ONNX Runtime streaming took 1.16-1.18x its
#: time at 36 and 144 sampled frames, on PyTorch about the same; ``benchmarks/memory_streaming``) and
#: whose extra memory is bounded by this length (about 1 GB at 72 frames of 256x312 for slow8x8 on ONNX
#: Runtime, against 0.55 GB streamed). 72 sampled frames are 576 raw frames at stride 8, twice the
#: paper's 288.
STREAM_SFC_FROM = 72


def check_stream_sfc_from(frames: int) -> int:
    """``frames`` if it is a valid ``stream_sfc_from`` (whole sampled frames >= 0), else a one-line error."""
    if not isinstance(frames, int) or frames < 0:
        raise ConfigError(f"--stream-sfc-from must be >= 0 sampled frames (0: always), got {frames!r}")
    return frames


class SFCPipeline:
    """head -> SFC -> tail. ``head_chunk`` streams the head over time (identical output where the
    head has no temporal receptive field), so peak memory stops growing with video length.

    With ``head_chunk`` the head and SFC stream together where the runtime can, on videos of at least
    ``stream_sfc_from`` sampled frames: head chunks feed the streamed SFC as they come, so neither the
    whole F_head as one tensor nor SFC's full-length intermediates exist (issue 15 item 6). On
    PyTorch that is :meth:`~sfc_deploy.models.sfc.SFC.forward_streamed`; on ONNX Runtime, TorchScript
    and AOTInductor ``sfc_stream``, the same driver on runners of SFC's exported pieces
    (:mod:`sfc_deploy.runtime.sfc_stream`). Elsewhere (TensorRT, int8), for shorter videos, and for
    exports without the pieces, the SFC graph runs on the whole time axis: the head chunks are joined
    first.
    """

    def __init__(self, head: Runner, sfc: Runner, tail: Runner, *, head_chunk: int | None = None,
                 sfc_stream: StreamedSFC | None = None, stream_sfc_from: int = STREAM_SFC_FROM) -> None:
        self.head, self.sfc, self.tail = head, sfc, tail
        self.head_chunk = head_chunk
        self.sfc_stream = sfc_stream
        self.stream_sfc_from = check_stream_sfc_from(stream_sfc_from)

    def _head_chunks(self, frames: torch.Tensor):
        """The head's output chunk by chunk (one chunk without ``head_chunk``)."""
        t = frames.shape[2]
        if not self.head_chunk or t <= self.head_chunk:
            yield self.head.infer({"video": frames})["f_head"]
            return
        bounds = list(range(0, t, self.head_chunk))
        if t - bounds[-1] < 2 and len(bounds) > 1:
            bounds.pop()  # a 1-frame chunk would hit the export's minimum time; merge it
        for a, b in zip(bounds, bounds[1:] + [t]):
            yield self.head.infer({"video": frames[:, :, a:b]})["f_head"]

    def _head(self, frames: torch.Tensor) -> torch.Tensor:
        chunks = list(self._head_chunks(frames))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, 2)

    @property
    def streams_sfc(self) -> bool:
        """Whether SFC can run chunk by chunk with the head (``head_chunk``, on PyTorch or with
        ``sfc_stream``); it does on videos of at least ``stream_sfc_from`` sampled frames."""
        return bool(self.head_chunk) and (isinstance(self.sfc, PyTorchRunner) or self.sfc_stream is not None)

    def streams_sfc_at(self, frames: int) -> bool:
        """Whether SFC streams on a video of ``frames`` sampled frames."""
        return self.streams_sfc and frames >= self.stream_sfc_from

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stream = self.streams_sfc_at(frames.shape[2])
        if stream and self.sfc_stream is not None:
            f_sfc, attention = self.sfc_stream(self._head_chunks(frames), chunk=self.head_chunk)
        elif stream:
            if not self.sfc.active:
                raise ArtifactError(f"{self.sfc.describe()} is not active; use it as a context manager (with runner: ...)")
            with torch.inference_mode():
                f_sfc, attention = self.sfc.module.sfc.forward_streamed(
                    self._head_chunks(frames), chunk=self.head_chunk, return_attention=True)
        else:
            out = self.sfc.infer({"f_head": self._head(frames)})
            f_sfc, attention = out["f_sfc"], out["attention"]
        logits = self.tail.infer({"f_sfc": f_sfc})["logits"]
        return logits, attention


class ClipPipeline:
    """Clips through the clip model, ``batch_size`` at a time, logits averaged per video.

    With the 10 x 3 crops of :func:`~sfc_deploy.data.samplers.plan_dense` this is the 30-crop
    baseline the paper compares with; with one or N centre clips, the single/uniform strategies.
    """

    def __init__(self, clip: Runner, *, batch_size: int = 30) -> None:
        if batch_size < 1:
            raise ConfigError(f"dense batch size must be >= 1, got {batch_size}")
        self.clip, self.batch_size = clip, batch_size

    def __call__(self, clips: torch.Tensor, videos: int = 1) -> torch.Tensor:
        """(videos * n, 3, frames, crop, crop) clips, video-major -> (videos, classes) float32, on the
        runner's device (the clips and every batch's logits stay there)."""
        logits = torch.cat([self.clip.infer({"clip": c.contiguous()})["logits"] for c in clips.split(self.batch_size)])
        return logits.float().reshape(videos, -1, logits.shape[-1]).mean(1)


class Deployment:
    """A model opened on one runtime, device and precision: an export folder, or a PyTorch model in memory.

    ``device``: "cpu", "cuda", "cuda:N" or "auto" (resolved by
    :func:`~sfc_deploy.common.device.resolve_device`: no CUDA device here is a one-line error); None
    leaves it to the runtime (the CPU for the torch runtimes, the installed execution providers for
    ONNX Runtime, CUDA for TensorRT). ``precision`` bf16 is served by the PyTorch runtime only.
    Results come back as host tensors.
    """

    def __init__(
        self,
        manifest: Manifest | None,
        runtime: str = "onnxruntime",
        *,
        device: str | None = None,
        precision: str = "fp32",
        sfc_variant: str = "portable",
        head_chunk: int | None = None,
        stream_sfc_from: int = STREAM_SFC_FROM,
        dense_batch: int = 30,
        model: SFCModel | None = None,
        **runner_options,
    ) -> None:
        self.manifest = manifest
        self.runtime = check_runtime(runtime)
        self.precision = check_runtime_precision(precision, runtime).name
        self.sfc_variant = check_graph(sfc_variant, runtime, what="SFC graph variant")
        check_runner_options(runtime, runner_options)
        self.device = resolve_device(device) if device is not None else None
        if self.device is not None:
            check_device(runtime, self.device)  # e.g. ONNX Runtime without its CUDA provider: now, not mid-run
            runner_options["device"] = self.device
        if manifest is None and (model is None or runtime != "pytorch"):
            raise ConfigError("a deployment without an export folder runs a PyTorch model: pass model= and runtime='pytorch'")
        if runtime == "pytorch" and model is None:
            from sfc_deploy.export.weights import model_from_manifest

            model = model_from_manifest(manifest)
        self.model = model
        self.config: BackboneConfig = manifest.backbone if manifest is not None else model.config
        split = self.split = manifest.split if manifest is not None else model.split
        self.config.check_head_chunk(split, head_chunk)
        if dense_batch < 1:
            raise ConfigError(f"dense batch size must be >= 1, got {dense_batch}")
        self.head_chunk = head_chunk
        self.stream_sfc_from = check_stream_sfc_from(stream_sfc_from)
        self.dense_batch = dense_batch
        self.runner_options = runner_options
        self._runners: dict[str, Runner] = {}
        self._specs: dict[str, Artifact] | None = None
        self._served: SFCModel | None = None

    @classmethod
    def from_model(cls, model: SFCModel, **options) -> "Deployment":
        """A PyTorch model in memory served through the same pipelines as an export (eval, verify)."""
        return cls(None, "pytorch", model=model, **options)

    @property
    def dtype(self) -> torch.dtype:
        return get_precision(self.precision).dtype

    def artifact(self, part: str) -> Artifact:
        if self.runtime == "pytorch":
            specs = self._pytorch_artifacts()
            if part not in specs:
                where = self.manifest.root if self.manifest is not None else "the model"
                raise ArtifactError(f"{where} has no {part} part; it has {', '.join(specs)}. "
                                    f"Re-export with --parts including {part}")
            return specs[part]
        fmt = format_of_runtime(self.runtime)
        return self.manifest.find(part, fmt.name, self.precision, fmt.serves(part, self.sfc_variant))

    def _pytorch_artifacts(self) -> dict[str, Artifact]:
        """I/O records of the parts PyTorch serves: dynamic batch and time; HxW as exported, or free."""
        if self._specs is None:
            model, dtype = self.model, self.dtype
            if self.manifest is not None:
                inp = self.manifest.input
                parts = build_parts(model, frames=inp.frames, size=inp.size, dtype=dtype, example_batch=1)
                have = set(self.manifest.parts)
            else:
                parts = build_parts(model, frames=2 * model.config.frames, size=(64, 64), dtype=dtype, example_batch=1)
                have = set(parts)
            self._specs = {
                name: Artifact(file=WEIGHTS, part=name, format="pytorch", precision=self.precision,
                               inputs=_free(part.inputs, self.manifest is None), outputs=_free(part.outputs, self.manifest is None))
                for name, part in parts.items() if name in have
            }
        return self._specs

    def has(self, part: str) -> bool:
        """Whether this deployment has ``part`` for its runtime and precision (exports may be partial)."""
        try:
            self.artifact(part)
        except ArtifactError:
            return False
        return True

    def check(self, parts: tuple[str, ...] = ("head", "sfc", "tail", "clip")) -> None:
        """The artifacts of ``parts`` are listed and intact (sha256): fail before decoding and warnings."""
        for part in parts:
            art = self.artifact(part)
            if self.manifest is not None:
                self.manifest.path_of(art)

    @property
    def input_spec(self) -> InputSpec:
        """The SFC input this deployment takes: a fixed time axis and/or frame size, or any."""
        sfc, head = self.artifact("sfc").inputs[0].shape, self.artifact("head").inputs[0].shape
        # the SFC graph's time is the head's: a head with a temporal stride (R(2+1)D) reads that many frames per step
        frames = sfc[2] * self.config.head_temporal_stride(self.split) if isinstance(sfc[2], int) else None
        size = tuple(head[3:5]) if all(isinstance(d, int) for d in head[3:5]) else None
        return InputSpec(frames=frames, size=size)

    def _served_model(self) -> SFCModel | None:
        """The PyTorch runtime's model converted once for all parts (dtype, device, memory format)."""
        if self.runtime != "pytorch":
            return self.model
        if self._served is None:
            self._served = served_model(self.model, self.dtype, device=self.runner_options.get("device") or "cpu",
                                        memory_format=self.runner_options.get("memory_format"),
                                        inference_rewrite=self.runner_options.get("inference_rewrite"))
        return self._served

    def runner(self, part: str) -> Runner:
        if part not in self._runners:
            runner = make_runner(self.manifest, self.artifact(part), self.runtime, model=self._served_model(),
                                 **self.runner_options)
            self._runners[part] = runner.__enter__()
        return self._runners[part]

    def sfc_stream(self) -> StreamedSFC | None:
        """SFC streamed on runners of its exported pieces, where this runtime serves them and the export
        has them (:mod:`sfc_deploy.runtime.sfc_stream`); None otherwise: the PyTorch runtime streams its
        module itself, and other runtimes and older exports run the whole-video SFC graph."""
        if self.runtime == "pytorch" or not format_of_runtime(self.runtime).sfc_pieces:
            return None
        names = pieces_of(self.manifest.sfc)
        if not all(self.has(name) for name in names):
            return None
        return StreamedSFC(self.manifest.sfc, {name: self.runner(name) for name in names})

    def sfc_pipeline(self) -> SFCPipeline:
        stream = self.sfc_stream() if self.head_chunk else None
        return SFCPipeline(self.runner("head"), self.runner("sfc"), self.runner("tail"), head_chunk=self.head_chunk,
                           sfc_stream=stream, stream_sfc_from=self.stream_sfc_from)

    def clip_pipeline(self) -> ClipPipeline:
        return ClipPipeline(self.runner("clip"), batch_size=self.dense_batch)

    def predict(self, frames: torch.Tensor) -> torch.Tensor:
        """SFC logits (N, classes) for (N, 3, T, H, W) normalised frames sampled at the backbone's stride."""
        return self.predict_with_attention(frames)[0]

    def predict_with_attention(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SFC logits (N, classes) and attention (N, k, T), float32 host tensors."""
        pipeline = self.sfc_pipeline()
        logits, attention = pipeline(to_runner(frames, pipeline.head, self.dtype))
        return logits.float().cpu(), attention.float().cpu()

    def predict_clips(self, clips: torch.Tensor, videos: int = 1) -> torch.Tensor:
        """Averaged logits (videos, classes) of sampled clips (single, uniform or dense crops), on the host."""
        pipeline = self.clip_pipeline()
        return pipeline(to_runner(clips, pipeline.clip, self.dtype), videos).cpu()

    def predict_dense(self, video: torch.Tensor, *, num_clips: int = 10) -> torch.Tensor:
        """30-crop logits (N, classes) for (N, 3, T_raw, H, W) normalised frames at the full frame
        rate, short side resized to the crop size (``num_clips`` < 10: the same, cheaper)."""
        crops = torch.cat([sample_tensor(v, "dense", self.config, num_clips=num_clips).tensor for v in video])
        return self.predict_clips(crops, videos=video.shape[0])

    def close(self) -> None:
        for runner in self._runners.values():
            runner.__exit__(None, None, None)
        self._runners.clear()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _free(specs: tuple[TensorSpec, ...], free: bool) -> tuple[TensorSpec, ...]:
    """Make the spatial dims of 5D specs symbolic (a model in memory takes any frame size)."""
    if not free:
        return specs
    out = []
    for s in specs:
        shape = list(s.shape)
        if len(shape) == 5:
            shape[3], shape[4] = f"{s.name}_h", f"{s.name}_w"
        out.append(replace(s, shape=tuple(shape)))
    return tuple(out)


def check_export(root: str | Path, runtime: str, precision: str = "fp32",
                 parts: tuple[str, ...] = ("head", "sfc", "tail")) -> Manifest:
    """An export that ``runtime`` can serve at ``precision``: the manifest readable, every listed
    file intact (sha256), and the files of ``parts`` there. For commands that check before their
    work starts (bench, serve); nothing is loaded into a runtime."""
    manifest = load_manifest(root)
    manifest.check_files()
    if runtime != "pytorch":  # PyTorch serves the weights, checked above; its parts come from them
        fmt = format_of_runtime(runtime)
        check_runtime_precision(precision, runtime)
        for part in parts:
            manifest.find(part, fmt.name, precision, fmt.serves(part, "portable"))
    return manifest


def load(root: str | Path, runtime: str = "onnxruntime", **options) -> Deployment:
    """Open an export folder: ``load(DIR, runtime="onnxruntime", device="cuda:0", precision="fp16",
    threads=4).predict(frames)``; the options are :class:`Deployment`'s (``device`` None: the runtime's
    default, the CPU for the torch runtimes)."""
    return Deployment(load_manifest(root), runtime, **options)
