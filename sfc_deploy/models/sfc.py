"""The Selective Feature Compression module (paper section 3.1, widths from SPEC section 3).

    F_abs = Theta_abs(F_head)                       two bottlenecks C -> C/2 -> C, first one strided
    q     = theta_q(pool(F_abs))                    pool: TopK along time (T -> k = round(T / tau))
    kk    = theta_k(F_abs)                          theta: Conv3d C -> C, kernel (3, 1, 1)
    M     = softmax_T(q . kk^T [* 1/sqrt(d)] [+ prior])   in fp32, (N, k, T)
    out   = M . F_head                              v is the head feature untouched: (N, C, k, H, W)

Ablations (paper Table 6b/6c/6d) are options of the same module: ``pool`` in {topk, avg, max},
``kqv`` in {abs (default), head, abs_all}, ``theta_kernel`` in {3x3x3, 3x1x1, 1x1x1}.

``SFC.forward_streamed`` computes the same output over the time axis in chunks, for every one of
these options, so memory stops following the video's length (:mod:`sfc_deploy.models.sfc_stream`).
"""

from __future__ import annotations

import contextlib

import dataclasses
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sfc_deploy.ops import topk_temporal_select  # also registers torch.ops.sfc.topk_temporal_pool
from sfc_deploy.errors import ConfigError
from sfc_deploy.models.resnet3d import Bottleneck
from sfc_deploy.models.sfc_stream import HeadChunks, StreamPieces, attend, conv_valid_time, stream_sfc, time_halo

POOLS = ("topk", "avg", "max")
KQV = {
    "abs": "k=q=F_abs, v=F_head (paper default)",
    "head": "k=q=v=F_head (no abstraction layer, plain self-attention)",
    "abs_all": "k=q=v=F_abs",
}
THETA_KERNELS = {"3x3x3": (3, 3, 3), "3x1x1": (3, 1, 1), "1x1x1": (1, 1, 1)}
LOGIT_SCALES = ("sqrt_d", "none")


@dataclass(frozen=True)
class SFCConfig:
    """Hyper-parameters of one SFC module; written into checkpoints and manifests.

    Attributes:
        channels: C, the channels of the head's output at the split.
        tau: compression ratio; the query keeps k = round(T / tau) time steps (half up, >= 1).
        pool: how the query is shortened along time.
        kqv: which features serve as key, query and value.
        theta_kernel: kernel of theta_q and theta_k ("3x1x1" in the paper).
        logit_scale: "sqrt_d" divides the logits by sqrt(C*h*w); "none" is the paper's form.
        prior: add a learnable positional prior that starts SFC as uniform stride-tau subsampling.
            Off by default: in our recorded experiment (benchmarks/accuracy) the paper's form beat
            it by 4 points top-1 at tau=2 on two seeds; the prior won at tau=4. ``--prior`` turns it on.
    """

    channels: int
    tau: float = 2.0
    pool: str = "topk"
    kqv: str = "abs"
    theta_kernel: str = "3x1x1"
    logit_scale: str = "sqrt_d"
    prior: bool = False

    def __post_init__(self) -> None:
        if not self.tau >= 1:
            raise ConfigError(f"tau must be >= 1 (1, 4/3, 2, 4, ...), got {self.tau}")
        for name, value, allowed in (
            ("pool", self.pool, POOLS),
            ("kqv", self.kqv, tuple(KQV)),
            ("theta_kernel", self.theta_kernel, tuple(THETA_KERNELS)),
            ("logit_scale", self.logit_scale, LOGIT_SCALES),
        ):
            if value not in allowed:
                raise ConfigError(f"unknown SFC {name} {value!r}; expected one of {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SFCConfig":
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"SFC config is malformed ({exc}); re-create it with this version of sfc-deploy") from exc


#: a tau past this keeps one frame of any video SFC can hold in memory (the paper tops out at 4)
MAX_TAU = 4096.0


def parse_tau(value: str | float) -> float:
    """Accept "2", "1.5" or "4/3" (the paper's tau values)."""
    try:
        tau = float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ConfigError(f"tau must be a number >= 1 such as 2 or 4/3, got {value!r}") from exc
    if tau > MAX_TAU:  # callers check the lower bound in their own words
        raise ConfigError(f"tau must be at most {MAX_TAU:g} (k = round(T / tau) frames are kept), got {value!r}")
    return tau


def compressed_length(t: int, tau: float) -> int:
    """k = round(T / tau), rounding half up, at least 1.

    Integer arithmetic on a rational tau so that it also works on symbolic sizes (dynamic time
    axis under ``torch.export``).
    """
    if isinstance(t, torch.Tensor):  # torch.jit.trace hands sizes over as tensors: the trace freezes k
        t = int(t)
    frac = Fraction(tau).limit_denominator(64)
    p, q = frac.numerator, frac.denominator
    return torch.sym_max((2 * t * q + p) // (2 * p), 1)


def pool_time(x: torch.Tensor, k: int, pool: str, *, topk_impl: str = "op") -> torch.Tensor:
    """The query's pool (``SFCConfig.pool``) of (N, C, T, h, w) along time to k steps; it has no weights,
    so a runtime serving SFC's other steps as graphs runs it here too."""
    if pool == "topk":
        if topk_impl == "aten":
            return topk_temporal_select(x, k)
        return torch.ops.sfc.topk_temporal_pool(x, k)
    size = (k, x.shape[3], x.shape[4])
    return F.adaptive_avg_pool3d(x, size) if pool == "avg" else F.adaptive_max_pool3d(x, size)


class Abstraction(nn.Module):
    """Theta_abs: two bottlenecks C -> C/2 -> C; the first halves H and W and projects its shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 2
        self.block1 = Bottleneck(channels, mid, channels, spatial_stride=2)
        self.block2 = Bottleneck(channels, mid, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))


class SFC(nn.Module):
    """Selective Feature Compression: (N, C, T, H, W) head features -> (N, C, k, H, W)."""

    def __init__(self, config: SFCConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        kernel = THETA_KERNELS[config.theta_kernel]
        padding = tuple(kk // 2 for kk in kernel)
        self.abstraction = Abstraction(c) if config.kqv != "head" else None
        self.theta_q = nn.Conv3d(c, c, kernel, padding=padding)
        self.theta_k = nn.Conv3d(c, c, kernel, padding=padding)
        self.prior_gain = nn.Parameter(torch.ones(())) if config.prior else None
        #: "op": one ``sfc::topk_temporal_pool`` node (ONNX custom/portable emission, TensorRT plugin);
        #: "aten": the same selection in plain aten ops, for runtimes that cannot call a Python op
        #: (TorchScript and AOTInductor loaded from C++).
        self.topk_impl = "op"

    def pool(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return pool_time(x, k, self.config.pool, topk_impl=self.topk_impl)

    def prior(self, t: int, k: int, device: torch.device) -> torch.Tensor:
        """Gaussian bias that centres output step t' on input time c(t') = (t'+0.5) T/k - 0.5."""
        ts = torch.arange(t, device=device, dtype=torch.float32)
        centres = (torch.arange(k, device=device, dtype=torch.float32) + 0.5) * (t / k) - 0.5
        sigma = t / (2.0 * k)
        dist2 = (ts[None, :] - centres[:, None]) ** 2
        return -4.0 * self.prior_gain.float() * dist2 / (2.0 * sigma * sigma)

    def attention(self, f_head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention map M (N, k, T) in fp32, and the value tensor it is applied to."""
        t = f_head.shape[2]
        k = compressed_length(t, self.config.tau)
        f_abs = self.abstraction(f_head) if self.abstraction is not None else f_head
        q = self.theta_q(self.pool(f_abs, k))
        key = self.theta_k(f_abs)
        # (N, C, k, h, w) -> (N, k, C*h*w): the paper's reshape Gamma.
        q = q.transpose(1, 2).flatten(2).float()
        key = key.transpose(1, 2).flatten(2).float()
        with self.fp32_context(f_head.device):
            logits = torch.bmm(q, key.transpose(1, 2))
            m = self.normalise(logits, t, k, q.shape[-1])
        value = f_abs if self.config.kqv == "abs_all" else f_head
        return m, value

    @staticmethod
    def fp32_context(device: torch.device):
        """The logits are dot products over C*h*w terms: fp32 even under autocast (which would
        otherwise run their bmm in fp16/bf16 and can overflow or flatten the softmax)."""
        if device.type in ("cuda", "cpu") and torch.is_autocast_enabled(device.type):
            return torch.autocast(device.type, enabled=False)
        return contextlib.nullcontext()  # no context at all when exporting (no autocast then)

    def normalise(self, logits: torch.Tensor, t: int, k: int, d: int) -> torch.Tensor:
        """Logits (N, k, T) -> the attention map M: [1/sqrt(d)] [+ prior], softmax over time."""
        if self.config.logit_scale == "sqrt_d":
            logits = logits * (d ** -0.5)
        if self.prior_gain is not None:
            logits = logits + self.prior(t, k, logits.device)
        return torch.softmax(logits, dim=-1)

    def forward(self, f_head: torch.Tensor, return_attention: bool = False):
        m, value = self.attention(f_head)
        out = attend(m, value)
        return (out, m) if return_attention else out

    def forward_streamed(self, f_head: HeadChunks, *, chunk: int, return_attention: bool = False):
        """:meth:`forward` over the time axis in chunks of at most ``chunk`` frames, in eval mode.

        ``f_head``: the (N, C, T, H, W) head features, an iterable of time chunks of them (a
        generator running the head chunk by chunk, so the whole F_head is never one tensor), or a
        callable returning such an iterable. Same output as :meth:`forward` within fp32 rounding;
        memory per frame is the value and F_abs chunks, not the full-length intermediates
        (:mod:`sfc_deploy.models.sfc_stream`).
        """
        if self.training and self.abstraction is not None:
            raise ConfigError("SFC.forward_streamed runs in eval mode (BatchNorm would see per-chunk batches); call .eval()")
        out, m = stream_sfc(self.stream_pieces(), f_head, chunk=chunk,
                            k_of=lambda t: compressed_length(t, self.config.tau))
        return (out, m) if return_attention else out

    def stream_pieces(self) -> StreamPieces:
        """This module's weighted steps for the streamed driver (:func:`~sfc_deploy.models.sfc_stream.stream_sfc`)."""
        halo = time_halo(self.theta_q)
        if time_halo(self.theta_k) != halo:
            raise ConfigError("streamed SFC needs theta_q and theta_k of the same temporal kernel")
        return StreamPieces(
            kqv=self.config.kqv,
            abstraction=self.abstraction,
            pool=self.pool,
            theta_q=lambda x: conv_valid_time(self.theta_q, x),
            theta_k=lambda x: conv_valid_time(self.theta_k, x),
            halo=halo,
            normalise=self.normalise,
            fp32_context=self.fp32_context,
        )
