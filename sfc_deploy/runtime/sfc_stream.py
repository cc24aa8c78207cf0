"""SFC streamed over time on runners of its exported pieces (ONNX Runtime, TorchScript, AOTInductor), as PyTorch
streams its module.

The whole-video ``sfc`` graph holds every intermediate at full length: on ONNX Runtime peak memory grew
~17 MB per sampled frame at 256x312 even with the head in chunks (issue 15 item 6). The export also writes
SFC's weighted steps as files of their own (:data:`~sfc_deploy.models.parts.SFC_PIECES`: the
abstraction, theta_q and theta_k without temporal padding, the logits' normalisation) for every format
whose table row says ``sfc_pieces``, and :class:`StreamedSFC` hands runners of them to the one streamed
driver, :func:`~sfc_deploy.models.sfc_stream.stream_sfc`, the code ``SFC.forward_streamed`` runs on
PyTorch. Nothing here depends on the runtime: any :class:`~sfc_deploy.runtime.base.Runner` of the pieces
will do. What has no weights runs in the driver, in torch on the runners' device, for every runtime:
time slicing and halos, the query's pool (``sfc::topk_temporal_pool``, the op whose lowering the
portable graph carries; or the avg/max pool), the logits' matmul (fp32) and the output's chunk-by-chunk
accumulation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sfc_deploy.models.parts import SFC_PIECES
from sfc_deploy.models.sfc import THETA_KERNELS, SFCConfig, compressed_length, pool_time
from sfc_deploy.models.sfc_stream import HeadChunks, StreamPieces, stream_sfc
from sfc_deploy.runtime.base import Runner


def pieces_of(config: SFCConfig) -> tuple[str, ...]:
    """The pieces an SFC of ``config`` streams with (no abstraction graph where k=q=v=F_head)."""
    return tuple(p for p in SFC_PIECES if p != "sfc_abs" or config.kqv != "head")


def _as_is(x: torch.Tensor) -> torch.Tensor:
    return x


def _call(runner: Runner) -> Callable[[torch.Tensor], torch.Tensor]:
    """A one-input, one-output runner as a function of its input."""
    (name,), (out,) = runner.input_names, runner.output_names
    return lambda x: runner.infer({name: x})[out]


class StreamedSFC:
    """SFC over head chunks, from runners of its pieces (``runners``: piece name -> active runner)."""

    def __init__(self, config: SFCConfig, runners: dict[str, Runner]) -> None:
        self.config = config
        self.runners = runners
        normalise = _call(runners["sfc_normalise"])
        self.pieces = StreamPieces(
            kqv=config.kqv,
            abstraction=_call(runners["sfc_abs"]) if "sfc_abs" in runners else None,
            pool=lambda x, k: pool_time(x, k, config.pool),
            theta_q=_call(runners["sfc_theta_q"]),
            theta_k=_call(runners["sfc_theta_k"]),
            halo=THETA_KERNELS[config.theta_kernel][0] // 2,
            normalise=lambda logits, t, k, d: normalise(logits),  # t, k from its shape; d fixed by the frame size
            # a runner whose outputs live in its own pool (ONNX Runtime's arena) would have a chunk kept while
            # the next ones run pin its region (and the intermediates around it), so kept chunks are copied out;
            # other runners' outputs are tensors of their own, kept as they are
            keep=torch.clone if any(r.pooled_outputs for r in runners.values()) else _as_is,
        )

    def __call__(self, f_head: HeadChunks, *, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_sfc (N, C, k, H, W), attention (N, k, T) fp32), as the whole ``sfc`` graph's outputs."""
        with torch.inference_mode():
            return stream_sfc(self.pieces, f_head, chunk=chunk, k_of=lambda t: compressed_length(t, self.config.tau))
