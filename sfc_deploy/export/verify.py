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
* the dense pipeline (:class:`~sfc_deploy.runtime.pipeline.DensePipeline`, same code as the
  30-crop baseline) on ``dense_clips`` temporal clips x 3 crops: 2 by default, because at the
  paper's size the full 10 clips cost ~7 SFC passes per runtime while checking no extra code.
  The custom-op graph shares head, tail and clip with the portable one, so only its SFC part and
  the end-to-end pipeline are rerun.

A check passes when every element satisfies ``|out - ref| <= atol * max|ref| + rtol * |ref|``
(the atol is scaled by the reference's magnitude because random-weight activations span orders
of magnitude). An artifact that cannot run on this machine is reported as not run, with the
reason, never as passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.export.manifest import Manifest
from sfc_deploy.export.parts import PARTS

#: runtimes that run ONNX graphs, and so have both SFC graph variants
ONNX_RUNTIMES = ("onnxruntime", "tensorrt")

#: (rtol, atol as a fraction of max |reference|) per precision. fp16 is compared with the fp32 model.
TOLERANCES = {"fp32": (1e-3, 1e-4), "fp16": (5e-2, 2e-2)}


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
    top1_agree: float | None = None
    top5_agree: float | None = None
    passed: bool = False


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

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerances": {p: {"rtol": r, "atol_scaled": a} for p, (r, a) in self.tolerances.items()},
            "checks": [asdict(c) for c in self.checks],
            "not_run": [asdict(n) for n in self.not_run],
        }


def compare(out: torch.Tensor, ref: torch.Tensor, precision: str) -> dict:
    """Error statistics of ``out`` against ``ref`` and whether they are within tolerance."""
    rtol, atol = TOLERANCES[precision]
    out, ref = out.detach().float().cpu(), ref.detach().float().cpu()
    if out.shape != ref.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "mean_abs": float("inf"), "median_abs": float("inf"), "passed": False}
    err = (out - ref).abs()
    scale = ref.abs().max().clamp_min(1e-12)
    ok = bool((err <= atol * scale + rtol * ref.abs()).all()) and bool(torch.isfinite(out).all())
    return {
        "max_abs": float(err.max()),
        "max_rel": float((err / ref.abs().clamp_min(1e-6 * float(scale))).max()),
        "mean_abs": float(err.mean()),
        "median_abs": float(err.median()),
        "passed": ok,
    }


def topk_agreement(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Fraction of rows whose top-1 class is the same, and whose top-5 sets are the same."""
    k = min(5, ref.shape[-1])
    top1 = (out.argmax(-1) == ref.argmax(-1)).float().mean()
    same5 = [set(a.tolist()) == set(b.tolist()) for a, b in zip(out.topk(k, -1).indices, ref.topk(k, -1).indices)]
    return float(top1), sum(same5) / len(same5)


def synthetic_video(raw_frames: int, size: tuple[int, int], preprocess, *, seed: int = 0) -> torch.Tensor:
    """(1, 3, raw_frames, H, W) normalised frames of a rendered synthetic action video."""
    from sfc_deploy.data.synth import MOTIONS, VideoSpec, render_video
    from sfc_deploy.data.video import normalize

    start = raw_frames // 4
    spec = VideoSpec(MOTIONS[0], raw_frames, tuple(size), start, start + raw_frames // 2, (seed,))
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
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run every artifact this machine can run against the PyTorch reference.

    Args:
        runtimes: runtimes to check (default: the runtime of every exported format).
        precisions: precisions to check (default: every exported one).
        graphs: SFC graph variants for the ONNX runtimes, "portable" and/or "custom" (default both);
            other runtimes have one SFC artifact.
        batch: batch size of the random input (the synthetic video is batch 1), so both a batch of
            several and of one go through the dynamic batch axis.
        dense_clips: temporal clips of the dense pipeline check (10 is the full 30-crop protocol).
        threads: intra-op threads of every runner (default: each runtime's own choice).
        progress: called with a short message before each stage.
    """
    from sfc_deploy.export.exporter import model_from_manifest
    from sfc_deploy.export.formats import FORMATS, check_runtime, parse_precisions
    from sfc_deploy.runtime.pipeline import SFC_VARIANTS

    say = progress or (lambda _msg: None)
    runtimes = [check_runtime(r) for r in runtimes] if runtimes else [FORMATS[f].runtime for f in manifest.data["formats"]]
    precisions = parse_precisions(precisions) if precisions else list(manifest.data["precisions"])
    graphs = list(graphs or SFC_VARIANTS)
    for g in graphs:
        if g not in SFC_VARIANTS:
            raise ConfigError(f"unknown SFC graph {g!r}; expected any of {', '.join(SFC_VARIANTS)}")
    if "portable" not in graphs and not set(runtimes) & set(ONNX_RUNTIMES):
        raise ConfigError(
            f"the custom-op SFC graph is ONNX-only, but the runtimes are {', '.join(runtimes)}; "
            "add --runtime onnxruntime or drop --graph custom"
        )
    if not 1 <= dense_clips <= 10:
        raise ConfigError(f"dense_clips must be 1..10 (10 is the 30-crop protocol), got {dense_clips}")
    for art in manifest.artifacts:  # refuse a tampered folder before minutes of work
        manifest.path_of(art)
    say("rendering the synthetic video and running the PyTorch reference")
    ref = _Reference(model_from_manifest(manifest), manifest, batch=batch, dense_clips=dense_clips)
    checks: list[Check] = []
    not_run: list[NotRun] = []
    for runtime in runtimes:
        for precision in precisions:
            variants = [g for g in SFC_VARIANTS if g in graphs] if runtime in ONNX_RUNTIMES else ["portable"]
            for variant in variants:
                label = variant if runtime in ONNX_RUNTIMES else "default"
                say(f"verifying {runtime} {precision} ({label} SFC graph)")
                try:
                    _check_deployment(checks, manifest, runtime, precision, variant, label, ref, threads)
                except BackendUnavailableError as exc:
                    not_run.append(NotRun(runtime, precision, f"{label} graph: {exc}"))
    return VerifyReport(checks, not_run, dict(TOLERANCES))


class _Reference:
    """Inputs and the PyTorch model's outputs for them, computed once for every runtime."""

    def __init__(self, model, manifest: Manifest, *, batch: int, dense_clips: int) -> None:
        cfg = model.config
        inp = manifest.data["input"]
        frames, size, stride = inp["frames"], tuple(inp["size"]), inp["stride"]
        self.model, self.dense_clips = model, dense_clips
        torch.manual_seed(0)
        video = synthetic_video(frames * stride, size, cfg.preprocess)
        self.dense_video = _resize_short(video, cfg.preprocess.crop)
        self.short_t = max(frames // 2 + 1, 2)
        with torch.no_grad():
            self.random = _sfc_intermediates(model, torch.randn(batch, 3, frames, *size))
            self.synthetic = _sfc_intermediates(model, video[:, :, ::stride][:, :, :frames].contiguous())
            self.short_video = self.synthetic["video"][:, :, : self.short_t].contiguous()
            self.short_logits = model(self.short_video)
            self.dense = None
            if "clip" in manifest.data.get("parts", PARTS):
                from sfc_deploy.models.dense import dense_logits

                self.dense = dense_logits(model.backbone, self.dense_video, num_clips=dense_clips)


def _check_deployment(out: list[Check], manifest, runtime, precision, variant, label, ref: _Reference, threads) -> None:
    """Append to ``out`` the per-part and end-to-end checks of one runtime/precision/graph.

    Parts the folder lacks (an export of a subset of parts) are skipped; the end-to-end SFC check
    needs head, sfc and tail, the dense one the clip model.
    """
    from sfc_deploy.runtime.pipeline import Deployment

    def record(part, input_name, got, want, logits=False):
        stats = compare(got, want, precision)
        check = Check(runtime, precision, part, input_name, label, list(got.shape), **stats)
        if logits:
            check.top1_agree, check.top5_agree = topk_agreement(got.float(), want.float())
        out.append(check)

    options = {"threads": threads} if threads else {}
    with Deployment(manifest, runtime, precision=precision, sfc_variant=variant, **options) as dep:
        have = {part for part in PARTS if dep.has(part)}
        dtype, shared = dep.dtype, variant != "custom"  # head, tail, clip: checked with the portable graph
        for name, r in (("random", ref.random), ("synthetic", ref.synthetic)):
            if "head" in have and shared and name == "random":
                record("head", name, dep.runner("head").infer({"video": r["video"].to(dtype)})["f_head"], r["f_head"])
            if "sfc" in have:
                got = dep.runner("sfc").infer({"f_head": r["f_head"].to(dtype)})
                record("sfc", name, got["f_sfc"], r["f_sfc"])
                record("sfc.attention", name, got["attention"], r["attention"])
            if "tail" in have and shared:
                got = dep.runner("tail").infer({"f_sfc": r["f_sfc"].to(dtype)})["logits"]
                record("tail", name, got, r["logits"], logits=True)
        if {"head", "sfc", "tail"} <= have:
            logits, attention = dep.predict_with_attention(ref.synthetic["video"])
            record("sfc_pipeline", "synthetic", logits, ref.synthetic["logits"], logits=True)
            record("sfc_pipeline.attention", "synthetic", attention, ref.synthetic["attention"])
            if isinstance(dep.artifact("sfc").inputs[0].shape[2], str):  # dynamic time: another length
                record("sfc_pipeline", f"synthetic[T={ref.short_t}]", dep.predict(ref.short_video), ref.short_logits, logits=True)
        if "clip" in have and shared and ref.dense is not None:
            got = dep.predict_dense(ref.dense_video, num_clips=ref.dense_clips)
            record("dense_pipeline", f"synthetic[{ref.dense_clips}x3 crops]", got, ref.dense, logits=True)


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
