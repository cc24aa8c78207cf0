"""Parity of every artifact with PyTorch: per part and end to end, with explicit tolerances.

Each check runs the same input through an artifact's runner and through the PyTorch model the
folder was exported from (rebuilt from ``model.safetensors``), and reports max abs / max rel /
mean / median error, and for logits the top-1 and top-5 agreement. Inputs: random normal tensors
(batch 2) and a synthetic video (batch 1, rendered by :mod:`sfc_deploy.data.synth`, preprocessed
like real input).

What runs, per runtime, precision and SFC graph (the cost is in units of one full-size SFC pass):

* per part, isolated (each part gets the reference's input, so errors do not compound): head,
  sfc and tail on the random batch; sfc and tail on the synthetic video;
* end to end, through the same :class:`~sfc_deploy.runtime.pipeline.SFCPipeline` users call:
  the synthetic video, and a shorter one where the time axis is dynamic;
* the dense pipeline (:class:`~sfc_deploy.runtime.pipeline.ClipPipeline`, the one dense path,
  which also computes the reference) on ``dense_clips`` temporal clips x 3 crops: 2 by default, because at the
  paper's size the full 10 clips cost ~7 SFC passes per runtime while checking no extra code.
  The custom-op graph shares head, tail and clip with the portable one, so only its SFC part and
  the end-to-end pipeline are rerun.

A check passes when every element satisfies ``|out - ref| <= atol * max|ref| + rtol * |ref|``
(the atol is scaled by the reference's magnitude because random-weight activations span orders
of magnitude). An artifact whose runtime or device is missing on this machine is reported as not
run, with the reason, never as passed; an artifact that fails to load is a failure.

SFC streamed over time (with ``--head-chunk``, on every runtime whose format writes SFC's pieces: ONNX
Runtime, TorchScript and AOTInductor; :mod:`sfc_deploy.runtime.sfc_stream`) is checked where the export
has the pieces: each piece alone on the random batch against the PyTorch module's own step (the abstraction;
theta_q and theta_k on zero-padded input against the padded convs; the normalisation of the reference
logits against the attention), and the streamed pipeline end to end on the synthetic video in chunks
against the unstreamed PyTorch model (head chunks need a head without temporal receptive field;
elsewhere only the pieces are checked).

ONNX Runtime serves graphs rewritten for it at export time (variant "ort"); they go through every
check above, and the files they were derived from (what TensorRT builds from) get the per-part
checks on the random batch too, where ONNX Runtime can run them as they are.

Devices: by default each artifact runs where it was compiled for (an AOTInductor CUDA package on
CUDA, recorded in the manifest) and the rest on their runtime's default; ``device`` runs every
runtime there (one that cannot is "not run"). The reference stays the fp32 PyTorch model on the
CPU, so a CUDA artifact is held to its precision's row of the one tolerance table. fp32 on CUDA is
checked with TF32 off (cuDNN convolutions default to TF32, ~1e-3 relative error: fp16-like, not fp32).

int8 (ONNX Runtime only; other runtimes skip it) goes through the same checks against the fp32
PyTorch model with the int8 row of the table, which is necessarily loose (head and tail on the
synthetic video only: random inputs lie outside the ranges calibrated on videos), plus the check that
matters for it: video-level top-1 agreement with fp32 on a synthetic set of ``agreement_videos``
rendered videos (one motion class each, in turn), which must reach
:data:`~sfc_deploy.verify.tolerances.MIN_TOP1_AGREEMENT` when the folder holds trained weights
(with random weights the top classes are near ties, so agreement is reported, not enforced).
The attention of the int8 pipeline is not held to a tolerance: SFC itself is the fp32 graph (checked
in isolation, exactly), but its softmax over C*h*w-dimensional dot products turns the int8 head's
feature error into weight moved between neighbouring frames (measured: up to 0.19 of a weight on the
trained tiny model whose logits stay within 5% and agree on top-1); the logits and agreement judge it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from sfc_deploy.common.device import is_cuda, resolve_device
from sfc_deploy.common.precision import EXPORT_PRECISIONS, QUANTIZED, WEIGHTS_RUNTIME, get_precision, serves_precision
from sfc_deploy.data.samplers import sample_tensor
from sfc_deploy.data.synth import MOTIONS, VideoSpec, render_video
from sfc_deploy.data.video import normalize
from sfc_deploy.errors import ArtifactError, BackendUnavailableError, ConfigError
from sfc_deploy.export.formats import FORMATS, SFC_GRAPHS, check_graph, check_runtime, format_of_runtime, parse_runtime_precisions
from sfc_deploy.export.parts import PARTS
from sfc_deploy.export.manifest import Manifest
from sfc_deploy.export.weights import model_from_manifest
from sfc_deploy.ops import cuda_implementation_record
from sfc_deploy.runtime.pipeline import Deployment, SFCPipeline
from sfc_deploy.runtime.sfc_stream import StreamedSFC
from sfc_deploy.runtime.registry import check_device, make_runner
from sfc_deploy.verify.tolerances import MIN_TOP1_AGREEMENT, TOLERANCES, compare, topk_agreement


@dataclass
class Check:
    runtime: str
    precision: str
    part: str
    input: str
    variant: str = "default"
    shape: list[int] = field(default_factory=list)
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    median_abs: float = 0.0
    max_ref: float = 0.0  # max |reference|, the scale of the atol
    top1_agree: float | None = None
    top5_agree: float | None = None
    passed: bool = False
    error: str | None = None  # an artifact that failed to load or run: the one-line reason
    device: str | None = None  # where the artifact ran, when not its runtime's default


@dataclass
class NotRun:
    runtime: str
    precision: str
    reason: str


@dataclass
class VerifyReport:
    checks: list[Check]
    not_run: list[NotRun]
    tolerances: dict
    topk_cuda: dict | None = None  # which TopK implementation the op ran on CUDA (when a check called it there)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerances": {p: {"rtol": r, "atol_scaled": a} for p, (r, a) in self.tolerances.items()},
            "checks": [asdict(c) for c in self.checks],
            "not_run": [asdict(n) for n in self.not_run],
            **({"topk_cuda": self.topk_cuda} if self.topk_cuda is not None else {}),
        }


def synthetic_video(raw_frames: int, size: tuple[int, int], preprocess, *, seed: int = 0,
                    motion: str = MOTIONS[0]) -> torch.Tensor:
    """(1, 3, raw_frames, H, W) normalised frames of a rendered synthetic action video."""
    start = raw_frames // 4
    spec = VideoSpec(motion, raw_frames, tuple(size), start, start + raw_frames // 2, (seed,))
    frames = torch.from_numpy(render_video(spec)).permute(3, 0, 1, 2).float()
    return normalize(frames, preprocess)[None]


def verify(
    manifest: Manifest,
    *,
    runtimes: list[str] | None = None,
    precisions: list[str] | None = None,
    graphs: list[str] | None = None,
    batch: int = 2,
    dense_clips: int = 2,
    threads: int | None = None,
    device: str | None = None,
    agreement_videos: int = 8,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run every artifact this machine can run against the PyTorch reference.

    Args:
        runtimes: runtimes to check (default: the runtime of every exported format).
        precisions: precisions to check (default: every exported one).
        graphs: SFC graphs for the runtimes that have two, "portable" and/or "custom" (default both);
            other runtimes have one SFC artifact.
        batch: batch size of the random input (the synthetic video is batch 1), so both a batch of
            several and of one go through the dynamic batch axis.
        dense_clips: temporal clips of the dense pipeline check (10 is the full 30-crop protocol).
        threads: intra-op threads of every runner (default: each runtime's own choice).
        device: "cpu", "cuda", "cuda:N" or "auto" for every runtime; default each artifact where it
            was compiled for (AOTInductor packages record it), the rest on the runtime's default.
        agreement_videos: synthetic videos of the int8 top-1 agreement check (module doc).
        progress: called with a short message before each stage.

    Raises:
        ArtifactError: a listed file is missing or does not match its sha256 (before any work).
        ConfigError: an unknown runtime, precision or graph, or ``dense_clips`` outside 1..10.
        BackendUnavailableError: ``device`` is CUDA and no CUDA device is visible.
    """
    say = progress or (lambda _msg: None)
    runtimes = [check_runtime(r) for r in runtimes] if runtimes else [FORMATS[f].runtime for f in manifest.formats]
    precisions = parse_runtime_precisions(precisions) if precisions else list(manifest.precisions)
    unwritten = [p for p in precisions if p not in EXPORT_PRECISIONS]  # bf16: the pytorch runtime's own
    if unwritten and WEIGHTS_RUNTIME not in runtimes:
        raise ConfigError(f"precision {unwritten[0]} has no files to check: the {WEIGHTS_RUNTIME} runtime serves it from the "
                          f"weights (converted at load); add --runtime {WEIGHTS_RUNTIME}")
    graphs = [check_graph(g) for g in (graphs or SFC_GRAPHS)]
    if "portable" not in graphs and not any(format_of_runtime(r).has_graph("custom") for r in runtimes):
        raise ConfigError(
            f"the custom-op SFC graph is ONNX-only, but the runtimes are {', '.join(runtimes)}; "
            "add --runtime onnxruntime or drop --graph custom"
        )
    if not 1 <= dense_clips <= 10:
        raise ConfigError(f"dense_clips must be 1..10 (10 is the 30-crop protocol), got {dense_clips}")
    device = resolve_device(device) if device is not None else None  # no GPU here: one line, before any work
    manifest.check_files()  # refuse a tampered folder before minutes of work
    say("rendering the synthetic video and running the PyTorch reference")
    ref = _Reference(model_from_manifest(manifest), manifest, batch=batch, dense_clips=dense_clips,
                     agreement_videos=agreement_videos)
    checks: list[Check] = []
    not_run: list[NotRun] = []
    for runtime in runtimes:
        fmt = format_of_runtime(runtime)
        for precision in precisions:
            if not serves_precision(runtime, precision):
                continue  # int8: written for ONNX Runtime only; bf16: the pytorch runtime's, from the weights
            for graph in [g for g in SFC_GRAPHS if g in graphs and fmt.has_graph(g)] or ["portable"]:
                label = graph if fmt.has_graph("custom") else "default"
                say(f"verifying {runtime} {precision} ({label} SFC graph)")
                try:
                    dev = _device_for(manifest, runtime, precision, device)
                    with _strict_fp32(dev, precision):
                        _check_deployment(checks, manifest, runtime, precision, graph, label, ref, threads, dev)
                except BackendUnavailableError as exc:
                    not_run.append(NotRun(runtime, precision, f"{label} graph: {exc}"))
                except ArtifactError as exc:  # a file that does not load is a failure, not "not run"
                    checks.append(_failure(runtime, precision, label, exc))
            if fmt.served_variant:
                say(f"verifying the {fmt.name} files {runtime} serves rewritten ({precision}), as written")
                try:
                    dev = _device_for(manifest, runtime, precision, device)
                    with _strict_fp32(dev, precision):
                        _check_sources(checks, manifest, runtime, precision, ref, threads, dev)
                except BackendUnavailableError as exc:
                    not_run.append(NotRun(runtime, precision, f"source graphs: {exc}"))
                except ArtifactError as exc:
                    checks.append(_failure(runtime, precision, "as written", exc))
    # which TopK CUDA tensors ran, where a runtime calls the op (not AOTInductor/TorchScript: aten inside)
    on_cuda = any(c.device is not None and is_cuda(c.device) and format_of_runtime(c.runtime).topk_impl == "op"
                  for c in checks)
    return VerifyReport(checks, not_run, dict(TOLERANCES), cuda_implementation_record() if on_cuda else None)


def _device_for(manifest: Manifest, runtime: str, precision: str, device: str | None) -> str | None:
    """Where ``runtime``'s ``precision`` artifacts run: ``device`` if given, else the device they were
    compiled for when that is CUDA (None: the runtime's default).

    Raises:
        BackendUnavailableError: they need a device this machine lacks, or were compiled for another
            device type than ``device`` (verify reports either as not run, with the fix).
    """
    fmt = format_of_runtime(runtime)
    compiled = {a.device or "cpu" for a in manifest.artifacts
                if fmt.compiled_for_device and a.format == fmt.name and a.precision == precision}
    if device is not None:
        other = compiled - {torch.device(device).type}
        if other:
            raise BackendUnavailableError(
                f"its artifacts are compiled for {', '.join(sorted(other))}, not {device}; verify with "
                f"--device {sorted(other)[0]} (or re-export with --device {torch.device(device).type})"
            )
        return device
    if "cuda" in compiled:
        return resolve_device("cuda")
    return None


@contextmanager
def _strict_fp32(device: str | None, precision: str) -> Iterator[None]:
    """TF32 off for fp32 checks on CUDA (restored after): fp32 parity means fp32 arithmetic."""
    if device is None or not is_cuda(device) or precision != "fp32":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class _Reference:
    """Inputs and the PyTorch model's outputs for them, computed once for every runtime."""

    def __init__(self, model, manifest: Manifest, *, batch: int, dense_clips: int, agreement_videos: int = 8) -> None:
        cfg = model.config
        self.agreement_videos, self._agreement, self._pieces = agreement_videos, None, None
        inp = manifest.input
        frames, size, stride = inp.frames, tuple(inp.size), inp.stride
        self.model, self.dense_clips = model, dense_clips
        torch.manual_seed(0)
        video = synthetic_video(frames * stride, size, cfg.preprocess)
        self.dense_video = _resize_short(video, cfg.preprocess.crop)
        self.dense_crops = sample_tensor(self.dense_video, "dense", cfg, num_clips=dense_clips).tensor
        self.short_t = max(frames // 2 + 1, 2)
        with torch.no_grad():
            self.random = _sfc_intermediates(model, torch.randn(batch, 3, frames, *size))
            self.synthetic = _sfc_intermediates(model, video[:, :, ::stride][:, :, :frames].contiguous())
            self.short_video = self.synthetic["video"][:, :, : self.short_t].contiguous()
            self.short_logits = model(self.short_video)
            self.dense = self.clip_logits = None
            if "clip" in manifest.parts:
                # the same dense path as every runtime's, on the model as trained (not the pytorch
                # runtime's inference rewrite, which is itself checked against this reference)
                with Deployment.from_model(model, inference_rewrite=False) as dep:
                    self.dense = dep.predict_clips(self.dense_crops)
                self.clip_logits = model.backbone(self.dense_crops[:batch])  # per-crop logits, for the clip model alone
        self.manifest = manifest

    def pieces(self) -> dict[str, torch.Tensor]:
        """The PyTorch module's own intermediates between SFC's pieces, on the random batch (first use)."""
        if self._pieces is None:
            sfc, f_head = self.model.sfc, self.random["f_head"]
            with torch.no_grad():
                f_abs = sfc.abstraction(f_head) if sfc.abstraction is not None else f_head
                pooled = sfc.pool(f_abs, self.random["attention"].shape[1])
                q, key = sfc.theta_q(pooled), sfc.theta_k(f_abs)
                logits = torch.bmm(q.transpose(1, 2).flatten(2), key.transpose(1, 2).flatten(2).transpose(1, 2))
            self._pieces = {"f_head": f_head, "f_abs": f_abs, "pooled": pooled, "q": q, "key": key, "logits": logits}
        return self._pieces

    def agreement_set(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The synthetic videos of the agreement check (SFC input) and the fp32 model's logits of them
        (rendered on first use: only quantised precisions need them)."""
        if self._agreement is None:
            inp, cfg = self.manifest.input, self.model.config
            videos = [synthetic_video(inp.frames * inp.stride, tuple(inp.size), cfg.preprocess, seed=100 + i,
                                      motion=MOTIONS[i % len(MOTIONS)])[:, :, ::inp.stride][:, :, :inp.frames].contiguous()
                      for i in range(self.agreement_videos)]
            with torch.no_grad():
                self._agreement = videos, torch.cat([self.model(v) for v in videos])
        return self._agreement


def _check_deployment(out: list[Check], manifest, runtime, precision, graph, label, ref: _Reference, threads,
                      device: str | None = None) -> None:
    """Append to ``out`` the per-part and end-to-end checks of one runtime/precision/graph.

    Parts the folder lacks (an export of a subset of parts) are skipped; the end-to-end SFC check
    needs head, sfc and tail, the dense one the clip model.
    """
    record = _recorder(out, runtime, precision, label, device)
    options = {"threads": threads} if threads and "threads" in format_of_runtime(runtime).runner_options else {}
    if device is not None:
        options["device"] = device
    with Deployment(manifest, runtime, precision=precision, sfc_variant=graph, **options) as dep:
        have = {part for part in PARTS if dep.has(part)}
        dtype, shared = dep.dtype, graph != "custom"  # head, tail, clip: checked with the portable graph
        for name, r in (("random", ref.random), ("synthetic", ref.synthetic)):
            # int8 head and tail on the video only: random N(0, 1) inputs fall outside the activation ranges
            # calibrated on videos, so they clip (measured: 39-42% of max|ref|), which says nothing of real input
            on_input = (name == "random") != (precision in QUANTIZED)
            if "head" in have and shared and on_input:
                record("head", name, dep.runner("head").infer({"video": r["video"].to(dtype)})["f_head"], r["f_head"])
            if "sfc" in have:
                got = dep.runner("sfc").infer({"f_head": r["f_head"].to(dtype)})
                record("sfc", name, got["f_sfc"], r["f_sfc"])
                record("sfc.attention", name, got["attention"], r["attention"])
            if "tail" in have and shared and (name == "synthetic" or precision not in QUANTIZED):
                got = dep.runner("tail").infer({"f_sfc": r["f_sfc"].to(dtype)})["logits"]
                record("tail", name, got, r["logits"], logits=True)
        if {"head", "sfc", "tail"} <= have:
            logits, attention = dep.predict_with_attention(ref.synthetic["video"])
            record("sfc_pipeline", "synthetic", logits, ref.synthetic["logits"], logits=True)
            if precision not in QUANTIZED:  # int8: module doc
                record("sfc_pipeline.attention", "synthetic", attention, ref.synthetic["attention"])
            if not dep.artifact("sfc").static_time:  # dynamic time: another length
                record("sfc_pipeline", f"synthetic[T={ref.short_t}]", dep.predict(ref.short_video), ref.short_logits, logits=True)
            if precision in QUANTIZED and ref.agreement_videos and shared:
                _check_agreement(out, manifest, dep, ref, runtime, precision, label, device)
        stream = dep.sfc_stream() if "sfc" in have else None
        if stream is not None and shared:
            _check_stream(record, manifest, dep, stream, ref, have)
        if "clip" in have and shared and ref.dense is not None:
            got = dep.predict_clips(ref.dense_crops)
            record("dense_pipeline", f"synthetic[{ref.dense_clips}x3 crops]", got, ref.dense, logits=True)


def _check_stream(record, manifest: Manifest, dep: Deployment, stream: StreamedSFC, ref: _Reference,
                  have: set[str]) -> None:
    """SFC's piece graphs alone (random batch), then SFC streamed in the pipeline (module doc)."""
    pieces, dtype = stream.pieces, dep.dtype
    r = ref.pieces()
    if pieces.abstraction is not None:
        record("sfc_abs", "random", pieces.abstraction(r["f_head"].to(dtype)), r["f_abs"])
    for name, theta, x, want in (("sfc_theta_q", pieces.theta_q, r["pooled"], r["q"]),
                                 ("sfc_theta_k", pieces.theta_k, r["f_abs"], r["key"])):
        padded = F.pad(x, (0, 0, 0, 0, pieces.halo, pieces.halo))  # the zeros a chunk at either end gets
        record(name, "random", theta(padded.to(dtype)), want)
    record("sfc_normalise", "random", pieces.normalise(r["logits"], 0, 0, 0), ref.random["attention"])
    if not ({"head", "tail"} <= have and manifest.input.head_streamable):
        return
    video = ref.synthetic["video"]
    chunk = max(2, -(-video.shape[2] // 3))  # three chunks, the last one shorter where T does not divide
    pipeline = SFCPipeline(dep.runner("head"), dep.runner("sfc"), dep.runner("tail"), head_chunk=chunk,
                           sfc_stream=stream, stream_sfc_from=0)  # streamed whatever the length
    logits, attention = pipeline(video.to(dtype))
    name = f"synthetic[streamed, head_chunk={chunk}]"
    record("sfc_pipeline", name, logits.float(), ref.synthetic["logits"], logits=True)
    if dep.precision not in QUANTIZED:
        record("sfc_pipeline.attention", name, attention, ref.synthetic["attention"])


def _check_sources(out: list[Check], manifest: Manifest, runtime: str, precision: str, ref: _Reference, threads,
                   device: str | None = None) -> None:
    """Per-part checks of the files a runtime serves in rewritten form, run as written (random batch).

    The custom-op graph is left out: ONNX Runtime runs ``sfc::TopKTemporalPool`` only in its served
    form (moved to onnxruntime-extensions' domain); TensorRT runs it through its plugin. So are SFC's
    streaming pieces: ONNX Runtime runs them in their served form only, checked by :func:`_check_stream`.
    """
    fmt = format_of_runtime(runtime)
    options = {"threads": threads} if threads else {}
    if device is not None:
        check_device(runtime, device)  # e.g. a CPU-only ONNX Runtime asked for CUDA: not run
        options["device"] = device
    r = ref.random
    feeds = {"head": ({"video": r["video"]}, {"f_head": r["f_head"]}),
             "sfc": ({"f_head": r["f_head"]}, {"f_sfc": r["f_sfc"], "attention": r["attention"]}),
             "tail": ({"f_sfc": r["f_sfc"]}, {"logits": r["logits"]})}
    if ref.clip_logits is not None:
        feeds["clip"] = ({"clip": ref.dense_crops[: ref.clip_logits.shape[0]]}, {"logits": ref.clip_logits})
    for art in manifest.artifacts:
        if art.format != fmt.name or art.precision != precision or art.derived_from or art.part not in feeds:
            continue
        if art.variant == "custom":
            continue
        record = _recorder(out, runtime, precision, f"{art.variant} (as written: {art.file})", device)
        feed, want = feeds[art.part]
        dtype = get_precision(precision).dtype
        with make_runner(manifest, art, runtime, **options) as runner:
            got = runner.infer({k: v.to(dtype) for k, v in feed.items()})
        for name, value in want.items():
            part = art.part if name in ("f_head", "f_sfc", "logits") else f"{art.part}.{name}"
            record(part, "random", got[name], value, logits=name == "logits")


def _check_agreement(out: list[Check], manifest: Manifest, dep: Deployment, ref: _Reference, runtime: str,
                     precision: str, label: str, device: str | None) -> None:
    """Video-level top-1 agreement of a quantised deployment with the fp32 model (module doc)."""
    videos, want = ref.agreement_set()
    got = torch.cat([dep.predict(v) for v in videos])
    stats = compare(got, want, precision)
    top1, top5 = topk_agreement(got.float(), want.float())
    enforced = not manifest.random_weights
    name = f"synthetic set[{len(videos)} videos]" + ("" if enforced else " (random weights: agreement not enforced)")
    passed = stats.pop("passed") and (not enforced or top1 >= MIN_TOP1_AGREEMENT[precision])
    out.append(Check(runtime, precision, "sfc_pipeline.agreement", name, label, list(got.shape), **stats,
                     top1_agree=top1, top5_agree=top5, passed=passed, device=device))


def _failure(runtime: str, precision: str, label: str, exc: Exception) -> Check:
    inf = float("inf")
    return Check(runtime, precision, "load", "-", label, max_abs=inf, max_rel=inf, mean_abs=inf, median_abs=inf,
                 passed=False, error=str(exc))


def _recorder(out: list[Check], runtime: str, precision: str, label: str, device: str | None = None):
    def record(part, input_name, got, want, logits=False):
        stats = compare(got, want, precision)
        check = Check(runtime, precision, part, input_name, label, list(got.shape), **stats, device=device)
        if logits:
            check.top1_agree, check.top5_agree = topk_agreement(got.float().cpu(), want.float().cpu())
        out.append(check)

    return record


def _resize_short(video: torch.Tensor, short: int) -> torch.Tensor:
    """Resize (N, 3, T, H, W) frames so that the short side is ``short`` (dense sampling's input)."""
    n, c, t, h, w = video.shape
    if min(h, w) == short:
        return video
    scale = short / min(h, w)
    out = torch.nn.functional.interpolate(
        video.transpose(1, 2).flatten(0, 1), size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True
    )
    return out.reshape(n, t, c, *out.shape[-2:]).transpose(1, 2)


def _sfc_intermediates(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor the SFC parts exchange, from the PyTorch model."""
    f_head = model.head(x)
    f_sfc, attention = model.sfc(f_head, return_attention=True)
    return {"video": x, "f_head": f_head, "f_sfc": f_sfc, "attention": attention, "logits": model.tail(f_sfc)}
