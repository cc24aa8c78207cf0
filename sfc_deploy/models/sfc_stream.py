"""SFC over the head's time axis in chunks, with the unstreamed module's output (issue 15 item 6).

The whole-video SFC holds every intermediate of the abstraction layer, theta and the logits at full
length (about 14 MB per sampled frame at 256x312 in fp32). What it must hold is less: the value
tensor (until the attention map is known) and F_abs (until the query is known). The rest streams:

1. **head chunks -> F_abs chunks.** Theta_abs is two bottlenecks whose time kernel is 1, so each
   chunk's F_abs is exactly the whole video's F_abs for those frames. The value chunks (F_head, or
   F_abs for ``kqv="abs_all"``) and the F_abs chunks are kept as a list (never concatenated).
2. **the query.** The pool (TopK, avg or max over the whole time axis) is independent per channel,
   so it runs over groups of channels, each group joined over time: the same per-row computation as
   the unstreamed op (TopK's lower-index tie rule included), with a transient of one group only.
   theta_q (3x1x1) runs over chunks of the k pooled steps with a one-step halo.
3. **keys and logits.** theta_k runs per F_abs chunk with one neighbour frame each side (zeros at
   the video's ends: the conv's own padding); each key chunk becomes its (N, k, t) slice of the
   logits and is dropped. The logits (N, k, T) are small; softmax runs once over the whole row,
   in fp32, with the scale and prior of :meth:`SFC.normalise`.
4. **output.** out = M @ value accumulated chunk by chunk in place (fp32), freeing each value chunk
   once used.

Peak memory per sampled frame: the value chunk + the F_abs chunk (3.2 MB at 256x312, res3, fp32),
then the value + the output (k/T of a value frame). Every variant of the module streams (pool
topk/avg/max, kqv abs/head/abs_all, theta 3x1x1/3x3x3/1x1x1, prior on/off); training mode does not
(the abstraction's BatchNorm would see per-chunk batches).

One driver for every runtime that streams: :func:`stream_sfc` orchestrates the steps above and calls
the module's weights only through :class:`StreamPieces` (the abstraction on a chunk, theta on a chunk
with its halo, the pool, the softmax's normalisation). :meth:`SFC.stream_pieces` gives PyTorch's
pieces; ONNX Runtime, TorchScript and AOTInductor deployments give runners of the same pieces exported
as files of their own (:mod:`sfc_deploy.runtime.sfc_stream`). Slicing, halos, the logits' matmul and the
output's accumulation are the driver's own, the same for all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sfc_deploy.errors import ConfigError

HeadChunks = torch.Tensor | Iterable[torch.Tensor] | Callable[[], Iterable[torch.Tensor]]


def _no_context(_device: torch.device):
    return contextlib.nullcontext()


@dataclass(frozen=True)
class StreamPieces:
    """What :func:`stream_sfc` needs of an SFC module: its weighted steps as callables.

    Attributes:
        kqv: the module's ``kqv`` option (which tensor is the value).
        abstraction: F_head chunk -> F_abs chunk (None: F_abs is F_head, ``kqv="head"``).
        pool: (F_abs rows joined over time, k) -> the pooled (N, c, k, h, w) query rows.
        theta_q, theta_k: a chunk with ``halo`` neighbour frames each side -> theta of the chunk
            (:func:`conv_valid_time`: the conv without temporal padding).
        halo: the frames each side theta reads (kernel // 2 in time).
        normalise: (logits (N, k, T) fp32, T, k, d) -> the attention map, as :meth:`SFC.normalise`.
        fp32_context: device -> the context the logits and softmax run in (autocast off).
        keep: applied to each chunk the driver holds on to (F_head and F_abs chunks). A runtime whose
            outputs live in its own memory pool, such as ONNX Runtime's arena, copies them out here, so
            that the pool can be given back between chunks instead of growing with the video.
    """

    kqv: str
    abstraction: Callable[[torch.Tensor], torch.Tensor] | None
    pool: Callable[[torch.Tensor, int], torch.Tensor]
    theta_q: Callable[[torch.Tensor], torch.Tensor]
    theta_k: Callable[[torch.Tensor], torch.Tensor]
    halo: int
    normalise: Callable[[torch.Tensor, int, int, int], torch.Tensor]
    fp32_context: Callable[[torch.device], contextlib.AbstractContextManager] = _no_context
    keep: Callable[[torch.Tensor], torch.Tensor] = lambda x: x


def split_time(x: torch.Tensor, chunk: int) -> list[torch.Tensor]:
    """Views of ``x`` of at most ``chunk`` steps along time (no copy)."""
    return list(x.split(chunk, dim=2))


def _pieces(f_head: HeadChunks, chunk: int) -> Iterator[torch.Tensor]:
    source = f_head() if callable(f_head) and not isinstance(f_head, torch.Tensor) else f_head
    if isinstance(source, torch.Tensor):
        source = (source,)
    for piece in source:
        if not isinstance(piece, torch.Tensor) or piece.dim() != 5:
            raise ConfigError("SFC.forward_streamed takes (N, C, T, H, W) head features or an iterable of such chunks")
        yield from split_time(piece, chunk)


def time_halo(conv: torch.nn.Conv3d) -> int:
    """The frames each side a 'same' temporal convolution reads, or a one-line error for another conv."""
    p = conv.kernel_size[0] // 2
    if conv.padding[0] != p or conv.stride[0] != 1 or conv.dilation[0] != 1:
        raise ConfigError("streamed SFC needs a 'same' temporal convolution (stride 1, padding kernel//2)")
    return p


def conv_valid_time(conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` on ``x`` without temporal padding (the halo frames around a chunk stand in for it)."""
    return F.conv3d(x, conv.weight, conv.bias, conv.stride, (0, *conv.padding[1:]), conv.dilation, conv.groups)


def with_halo(chunks: list[torch.Tensor], p: int) -> Iterator[torch.Tensor]:
    """Each chunk with ``p`` frames of its neighbours each side (zeros at the ends, as a conv's own
    zero padding), so that a conv without temporal padding on it matches the padded conv on
    ``cat(chunks)`` for those frames."""
    if p and min(c.shape[2] for c in chunks) < p:
        raise ConfigError(f"streamed SFC chunks must hold at least {p} frames for its theta halo; raise chunk")
    for i, x in enumerate(chunks):
        if p:
            left = chunks[i - 1][:, :, -p:] if i else torch.zeros_like(x[:, :, :p])
            right = chunks[i + 1][:, :, :p] if i + 1 < len(chunks) else torch.zeros_like(x[:, :, :p])
            x = torch.cat([left, x, right], 2)
        yield x


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(N, C, t, h, w) -> (N, t, C*h*w) in fp32: the paper's reshape Gamma."""
    return x.transpose(1, 2).flatten(2).float()


def _query(pieces: StreamPieces, abs_chunks: list[torch.Tensor], k: int, chunk: int) -> torch.Tensor:
    """theta_q(pool(F_abs)) flattened, (N, k, C*h*w) fp32, from the F_abs chunks."""
    ref = abs_chunks[0]
    n, c, _, h, w = ref.shape
    t = sum(a.shape[2] for a in abs_chunks)
    pooled = ref.new_empty((n, c, k, h, w))
    group = max(1, (c * chunk) // t)  # one group joined over time is about one chunk's worth of F_abs
    for c0 in range(0, c, group):
        x = torch.cat([a[:, c0 : c0 + group] for a in abs_chunks], 2)
        pooled[:, c0 : c0 + group] = pieces.pool(x, k)
        del x
    q = None
    start = 0
    for piece in with_halo(split_time(pooled, chunk), pieces.halo):
        flat = _flat(pieces.theta_q(piece))
        if q is None:
            q = flat.new_empty((n, k, flat.shape[-1]))
        q[:, start : start + flat.shape[1]] = flat
        start += flat.shape[1]
    return q


def time_rows(x: torch.Tensor) -> torch.Tensor | None:
    """(N, C, T, H, W) in NTHWC memory (channels-last-3d, or a time slice of it) as its (N, T, H*W*C)
    view, where M applies as one matrix product per video; None for any other layout.

    Applying M along time as C batches of (T, H*W) matrices, as NCTHW memory allows, would make the
    matrix product copy every one of those batches out of NTHWC memory first (oneDNN's channels-last
    activations on the CPU): 512 copies and 9% of SFC's time on the CPU for slow8x8 at 256x312.
    """
    n, c, t, h, w = x.shape
    if c == 1 or x.stride(1) != 1:
        return None
    try:
        return x.permute(0, 2, 3, 4, 1).view(n, t, h * w * c)  # H, W and C are one block of memory per frame
    except RuntimeError:  # not one block (a spatial crop of NTHWC memory, say)
        return None


def from_time_rows(rows: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """(N, k, H*W*C) -> the (N, C, k, H, W) view (channels-last-3d memory) of :func:`time_rows`."""
    return rows.reshape(rows.shape[0], rows.shape[1], h, w, c).permute(0, 4, 1, 2, 3)


def attend(m: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """M (N, k, T) applied along time: (N, C, T, H, W) value -> (N, C, k, H, W) in value's dtype, one
    matrix product without copying value in either layout (the output keeps value's layout)."""
    n, c, t, h, w = value.shape
    m = m.to(value.dtype)
    rows = time_rows(value)
    if rows is not None:
        return from_time_rows(torch.bmm(m, rows), c, h, w)
    # (N, 1, k, T) @ (N, C, T, H*W) -> (N, C, k, H*W): no transpose of the large value tensor
    return torch.matmul(m.unsqueeze(1), value.reshape(n, c, t, h * w)).reshape(n, c, -1, h, w)


def _output(m: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
    """M (N, k, T) @ value, accumulated chunk by chunk in fp32; ``values`` is emptied as it goes."""
    n, c, _, h, w = values[0].shape
    k = m.shape[1]
    dtype = values[0].dtype
    rows = time_rows(values[0])
    acc = m.new_zeros((n, k, h * w * c) if rows is not None else (n, c, k, h * w))
    start = 0
    while values:
        v = values.pop(0)
        t = v.shape[2]
        rows = time_rows(v)
        if rows is not None and acc.dim() == 3:  # NTHWC chunks: one product per chunk
            acc.baddbmm_(m[:, :, start : start + t], rows.float())
        else:
            if acc.dim() == 3:  # the chunks changed layout: carry on in NCTHW
                acc = from_time_rows(acc, c, h, w).reshape(n, c, k, h * w)
            for i in range(n):
                mi = m[i, :, start : start + t].unsqueeze(0).expand(c, k, t)
                acc[i].baddbmm_(mi, v[i].reshape(c, t, h * w).float())
        start += t
        del v, rows
    out = from_time_rows(acc, c, h, w) if acc.dim() == 3 else acc.reshape(n, c, k, h, w)
    return out if dtype == torch.float32 else out.to(dtype)


def stream_sfc(pieces: StreamPieces, f_head: HeadChunks, *, chunk: int, k_of: Callable[[int], int]):
    """(out (N, C, k, H, W), M (N, k, T) fp32) of SFC on head features given in chunks.

    ``k_of(T)`` is the compressed length; see :meth:`SFC.forward_streamed` for the arguments. The
    caller checks the module is in eval mode (a graph always is).
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"streamed SFC chunk must be a whole number of frames >= 1, got {chunk!r}")
    abs_chunks: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for piece in _pieces(f_head, chunk):
        piece = pieces.keep(piece)
        f_abs = pieces.keep(pieces.abstraction(piece)) if pieces.abstraction is not None else piece
        abs_chunks.append(f_abs)
        values.append(f_abs if pieces.kqv == "abs_all" else piece)
        del piece, f_abs
    if not abs_chunks:
        raise ConfigError("SFC.forward_streamed got no head features (an empty video?)")
    t = sum(a.shape[2] for a in abs_chunks)
    k = int(k_of(t))
    device = abs_chunks[0].device
    q = _query(pieces, abs_chunks, k, chunk)  # theta convs as in forward (under autocast where it is on)
    logits = q.new_empty((q.shape[0], k, t))
    start = 0
    for piece in with_halo(abs_chunks, pieces.halo):
        key = pieces.theta_k(piece)
        step = key.shape[2]
        with pieces.fp32_context(device):  # the logits in fp32, as forward does
            logits[:, :, start : start + step] = torch.bmm(q, _flat(key).transpose(1, 2))
        start += step
        del key, piece
    d = q.shape[-1]
    del q
    abs_chunks.clear()  # F_abs is no longer needed (where it is the value, ``values`` still holds it)
    with pieces.fp32_context(device):
        m = pieces.normalise(logits, t, k, d)
        del logits
        out = _output(m, values)
    return out, m
