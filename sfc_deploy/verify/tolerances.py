"""The one tolerance table (per precision) and the comparison that applies it.

A check passes when every element satisfies ``|out - ref| <= atol * max|ref| + rtol * |ref|``
(the atol is scaled by the reference's magnitude because random-weight activations span orders of
magnitude) and the output is finite. fp16 is compared with the fp32 model. Verify and the tests
both read this table.
"""

from __future__ import annotations

import torch

#: int8 (ONNX Runtime static quantisation, checked on video input only) is loose by necessity, and
#: chosen from measurement: the largest error seen was 3.7% of max|ref| (slow8x8 head at 36x256x312,
#: random weights; the SFC pipeline's logits 1.3%; benchmarks/int8), so 10% holds it with margin and
#: still fails a broken graph. Top-1 agreement (MIN_TOP1_AGREEMENT) is the check that matters for it.
#: (rtol, atol as a fraction of max |reference|) per precision. bf16 (PyTorch runtime only) keeps
#: 8 significand bits to fp16's 11, so its rounding error is ~8x fp16's; twice fp16's bounds hold it.
TOLERANCES = {"fp32": (1e-3, 1e-4), "fp16": (5e-2, 2e-2), "bf16": (1e-1, 4e-2), "int8": (0.1, 0.1)}
#: the least video-level top-1 agreement with fp32 a quantised precision must reach (issue 15), on a
#: model with trained weights (verify's agreement check; benchmarks/int8 measures it on a test set)
MIN_TOP1_AGREEMENT = {"int8": 0.99}


def compare(out: torch.Tensor, ref: torch.Tensor, precision: str) -> dict:
    """Error statistics of ``out`` against ``ref`` and whether they are within tolerance."""
    rtol, atol = TOLERANCES[precision]
    out, ref = out.detach().float().cpu(), ref.detach().float().cpu()
    if out.shape != ref.shape:
        inf = float("inf")
        return {"max_abs": inf, "max_rel": inf, "mean_abs": inf, "median_abs": inf, "max_ref": inf, "passed": False}
    err = (out - ref).abs()
    scale = ref.abs().max().clamp_min(1e-12)
    ok = bool((err <= atol * scale + rtol * ref.abs()).all()) and bool(torch.isfinite(out).all())
    return {
        "max_abs": float(err.max()),
        "max_rel": float((err / ref.abs().clamp_min(1e-6 * float(scale))).max()),
        "mean_abs": float(err.mean()),
        "median_abs": float(err.median()),
        "max_ref": float(scale),  # max |reference|: max_abs / max_ref is the atol that would pass with rtol 0
        "passed": ok,
    }


def topk_agreement(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Fraction of rows whose top-1 class is the same, and whose top-5 sets are the same."""
    k = min(5, ref.shape[-1])
    top1 = (out.argmax(-1) == ref.argmax(-1)).float().mean()
    same5 = [set(a.tolist()) == set(b.tolist()) for a, b in zip(out.topk(k, -1).indices, ref.topk(k, -1).indices)]
    return float(top1), sum(same5) / len(same5)
