"""Parity of every artifact with PyTorch: per part and end to end, with explicit tolerances.

Each check runs the same input through an artifact's runner and through the PyTorch model the
folder was exported from (rebuilt from ``model.safetensors``), and reports max abs / max rel /
mean / median error, and for logits the top-1 and top-5 agreement. Inputs: random normal tensors
and a synthetic video (rendered by :mod:`sfc_deploy.data.synth`, preprocessed like real input).
Dynamic-time artifacts are also checked at a second, different length.

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
        progress: called with a short message before each runtime/precision/graph.
    """
    from sfc_deploy.export.exporter import model_from_manifest
    from sfc_deploy.export.formats import FORMATS, check_runtime, parse_precisions
    from sfc_deploy.runtime.pipeline import SFC_VARIANTS, Deployment

    say = progress or (lambda _msg: None)
    runtimes = [check_runtime(r) for r in runtimes] if runtimes else [FORMATS[f].runtime for f in manifest.data["formats"]]
    precisions = parse_precisions(precisions) if precisions else list(manifest.data["precisions"])
    graphs = list(graphs or SFC_VARIANTS)
    for g in graphs:
        if g not in SFC_VARIANTS:
            raise ConfigError(f"unknown SFC graph {g!r}; expected any of {', '.join(SFC_VARIANTS)}")
    if "custom" in graphs and "portable" not in graphs and not set(runtimes) & set(ONNX_RUNTIMES):
        raise ConfigError(
            f"the custom-op SFC graph is ONNX-only, but the runtimes are {', '.join(runtimes)}; "
            "add --runtime onnxruntime or drop --graph custom"
        )
    say("running the PyTorch reference")
    reference = model_from_manifest(manifest)
    cfg = reference.config
    inp = manifest.data["input"]
    frames, size, stride = inp["frames"], tuple(inp["size"]), inp["stride"]
    torch.manual_seed(0)
    video = synthetic_video(frames * stride, size, cfg.preprocess)
    sfc_frames = video[:, :, ::stride][:, :, :frames]
    dense_video = _resize_short(video, cfg.preprocess.crop)
    inputs = {"random": torch.randn(batch, 3, frames, *size), "synthetic": sfc_frames}
    with torch.no_grad():
        refs = {name: _sfc_intermediates(reference, x) for name, x in inputs.items()}
        dense_ref = _dense_reference(reference, dense_video) if "clip" in manifest.data.get("parts", PARTS) else None
    short_t = max(frames // 2 + 1, 2)
    checks: list[Check] = []
    not_run: list[NotRun] = []
    for runtime in runtimes:
        for precision in precisions:
            variants = [g for g in SFC_VARIANTS if g in graphs] if runtime in ONNX_RUNTIMES else ["portable"]
            for variant in variants:
                label = variant if runtime in ONNX_RUNTIMES else "default"
                say(f"verifying {runtime} {precision} ({label} SFC graph)")
                try:
                    with Deployment(manifest, runtime, precision=precision, sfc_variant=variant) as dep:
                        _check_deployment(
                            checks, dep, label, inputs, refs, dense_video, dense_ref, reference, short_t
                        )
                except BackendUnavailableError as exc:
                    not_run.append(NotRun(runtime, precision, f"{label} graph: {exc}"))
    return VerifyReport(checks, not_run, dict(TOLERANCES))


def _resize_short(video: torch.Tensor, short: int) -> torch.Tensor:
    n, c, t, h, w = video.shape
    if min(h, w) == short:
        return video
    scale = short / min(h, w)
    out = torch.nn.functional.interpolate(
        video.transpose(1, 2).flatten(0, 1), size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True
    )
    return out.reshape(n, t, c, *out.shape[-2:]).transpose(1, 2)


def _sfc_intermediates(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    f_head = model.head(x)
    f_sfc, attention = model.sfc(f_head, return_attention=True)
    return {"video": x, "f_head": f_head, "f_sfc": f_sfc, "attention": attention, "logits": model.tail(f_sfc)}


def _dense_reference(model, video: torch.Tensor) -> torch.Tensor:
    from sfc_deploy.models.dense import dense_logits

    return dense_logits(model.backbone, video)


def _check_deployment(out, dep, variant, inputs, refs, dense_video, dense_ref, reference, short_t) -> None:
    """Append to ``out`` the per-part and end-to-end checks of one opened deployment.

    Parts the folder lacks (an export with ``parts`` a subset) are skipped; the end-to-end SFC
    check needs head, sfc and tail, the dense one the clip model.
    """
    precision, runtime, dtype = dep.precision, dep.runtime, dep.dtype
    have = {part for part in PARTS if dep.has(part)}

    def record(part, input_name, got, ref, logits=False):
        stats = compare(got, ref, precision)
        check = Check(runtime, precision, part, input_name, variant, list(got.shape), **stats)
        if logits:
            check.top1_agree, check.top5_agree = topk_agreement(got.float(), ref.float())
        out.append(check)

    for name, ref in refs.items():
        if variant != "custom" or name == "random":  # head and tail are shared by both graphs
            if "head" in have:
                head = dep.runner("head").infer({"video": ref["video"].to(dtype)})["f_head"]
                record("head", name, head, ref["f_head"])
            if "tail" in have:
                tail = dep.runner("tail").infer({"f_sfc": ref["f_sfc"].to(dtype)})["logits"]
                record("tail", name, tail, ref["logits"], logits=True)
        if "sfc" in have:
            sfc = dep.runner("sfc").infer({"f_head": ref["f_head"].to(dtype)})
            record("sfc", name, sfc["f_sfc"], ref["f_sfc"])
            record("sfc.attention", name, sfc["attention"], ref["attention"])
        if {"head", "sfc", "tail"} <= have:
            logits, _ = dep.predict_with_attention(ref["video"])
            record("sfc_pipeline", name, logits, ref["logits"], logits=True)
    # a different video length, where the artifacts have a dynamic time axis
    if {"head", "sfc", "tail"} <= have and isinstance(dep.artifact("sfc").inputs[0].shape[2], str):
        x = refs["synthetic"]["video"][:, :, :short_t]
        with torch.no_grad():
            ref_logits = reference(x)
        record("sfc_pipeline", f"synthetic[T={short_t}]", dep.predict(x), ref_logits, logits=True)
    if variant != "custom" and "clip" in have:
        record("dense_pipeline", "synthetic", dep.predict_dense(dense_video), dense_ref, logits=True)
