"""TopK temporal pooling: ``torch.ops.sfc.topk_temporal_pool`` and its NumPy reference.

For every element (n, c, h, w) of a (N, C, T, H, W) tensor, keep the ``k`` largest values along
time and return them **in their original temporal order** (SFC's query keeps "temporally
consecutive" features, paper section 3.1). Ties go to the lower time index, which is ONNX TopK's
documented rule, so every runtime can agree bit for bit.

The op is a ``torch.library.custom_op`` so that ``torch.export`` keeps it as one node; the ONNX
exporter then emits either the custom node ``sfc::TopKTemporalPool`` or a portable
TopK -> TopK -> GatherElements graph (see :mod:`sfc_deploy.export.onnx`). On CUDA tensors it runs
the project's CUDA kernel where that library is built (:mod:`sfc_deploy.ops.cuda_dispatch`), the
aten implementation below otherwise; the backward is the same either way.
"""

from __future__ import annotations

import numpy as np
import torch

AXIS = 2


def _time_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> a (N, C, H, W, T) copy: every row to sort is one block of memory.

    Sorting along the strided time axis in place cost 2-3x the copy and the sorts on rows (CPU,
    slow8x8's F_abs of 512 x 36 x 16x20; more in channels-last-3d memory, where time is the
    outermost axis after the batch).
    """
    return x.movedim(AXIS, -1).contiguous()


def _indices_time_last(rows: torch.Tensor, k: int) -> torch.Tensor:
    """(..., T) rows -> the (..., k) time indices kept, ascending.

    A stable descending sort puts equal values in index order, so the lower index wins ties;
    sorting the k winners' indices restores temporal order.
    """
    order = torch.sort(rows, dim=-1, descending=True, stable=True).indices
    return torch.sort(order.narrow(-1, 0, k), dim=-1).values


def topk_temporal_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Time indices of the kept values, ascending: (N, C, k, H, W) int64 (contiguous)."""
    return _indices_time_last(_time_last(x), k).movedim(-1, AXIS).contiguous()


def _check_k(x: torch.Tensor, k: int) -> None:
    torch._check(x.dim() == 5, lambda: f"topk_temporal_pool expects (N, C, T, H, W), got {x.dim()} dims")
    torch._check(k >= 1, lambda: f"k must be >= 1, got {k}")
    torch._check(k <= x.shape[AXIS], lambda: f"k={k} exceeds the time axis ({x.shape[AXIS]})")


def topk_temporal_select(x: torch.Tensor, k: int) -> torch.Tensor:
    """The op's selection in plain aten ops (stable sort, gather), without its checks on k: what a graph
    traced for a runtime that cannot call the op runs (TorchScript, AOTInductor from C++), where the
    checks would become guards on a symbolic time axis."""
    rows = _time_last(x)
    # contiguous, as the op's fake implementation says (compiled graphs rely on the strides)
    return torch.gather(rows, -1, _indices_time_last(rows, k)).movedim(-1, AXIS).contiguous()


def topk_temporal_pool_aten(x: torch.Tensor, k: int) -> torch.Tensor:
    """The op's aten implementation (every device): k checked, then :func:`topk_temporal_select`. The
    CUDA kernel's registration (:mod:`sfc_deploy.ops.cuda_dispatch`) falls back to it for other dtypes."""
    _check_k(x, k)
    return topk_temporal_select(x, k)


@torch.library.custom_op("sfc::topk_temporal_pool", mutates_args=())
def topk_temporal_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest values along time (axis 2), in temporal order; ties to the lower index."""
    return topk_temporal_pool_aten(x, k)


@topk_temporal_pool.register_fake
def _(x: torch.Tensor, k: int) -> torch.Tensor:
    # No checks on k here: with a symbolic time axis they would become export guards that sympy
    # cannot prove (k is a floor division of T); the eager kernel checks the concrete values.
    shape = list(x.shape)
    shape[AXIS] = k
    return x.new_empty(shape)


def _setup_context(ctx, inputs, output) -> None:
    x, k = inputs
    ctx.save_for_backward(x)
    ctx.k = k


def _backward(ctx, grad: torch.Tensor):
    (x,) = ctx.saved_tensors
    idx = topk_temporal_indices(x, ctx.k)
    return torch.zeros_like(x).scatter(AXIS, idx, grad), None


topk_temporal_pool.register_autograd(_backward, setup_context=_setup_context)


def topk_temporal_pool_reference(x: np.ndarray, k: int) -> np.ndarray:
    """The oracle for every implementation (PyTorch, ONNX graphs, CUDA kernel, TensorRT plugin).

    Written as the definition, independent of the torch code path: rank each time step by
    (value descending, index ascending), keep ranks < k, emit in time order.
    """
    x = np.asarray(x)
    n, c, t, h, w = x.shape
    if not 1 <= k <= t:
        raise ValueError(f"k must be in [1, {t}], got {k}")
    flat = np.moveaxis(x, AXIS, -1).reshape(-1, t)
    out = np.empty((flat.shape[0], k), dtype=x.dtype)
    for row in range(flat.shape[0]):
        values = flat[row]
        ranked = sorted(range(t), key=lambda s: (-float(values[s]), s))
        out[row] = values[sorted(ranked[:k])]
    return np.moveaxis(out.reshape(n, c, h, w, k), -1, AXIS)
