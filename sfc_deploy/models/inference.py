"""The model the PyTorch runtime serves, rewritten for inference (eval only; training never sees it).

Eager PyTorch ran SFC at 11% of the CPU's matmul peak where ONNX Runtime reached 55-83% on the
same graphs (issue 15 item 5). The profile (``benchmarks/eager_cpu/``) put the time in
``aten::mkldnn_convolution`` on 5D tensors, in BatchNorm as a separate pass over every activation,
and in the stem's 3D max-pool. :func:`prepare_for_inference` rewrites a module tree in place so
that the same network runs the way ONNX Runtime's served graphs do (:mod:`sfc_deploy.export.ort_graph`
does the same on ONNX graphs; the two work on different representations, so only the idea is shared):

* **BatchNorm folded into the convolution before it.** In eval mode BN is a per-channel affine map,
  so ``bn(conv(x))`` is one convolution with scaled weights and a bias. A ``BatchNorm3d`` is paired
  with the ``Conv3d`` registered just before it in the same parent (the stem's conv/bn, every
  bottleneck's conv_a/bn_a ... shortcut_conv/shortcut_bn) when their channels agree; the BN is
  replaced by :class:`FoldedBatchNorm`, which checks at run time that its input really is that
  conv's output and raises otherwise, so a module tree that breaks the convention fails loudly
  instead of computing something else.
* **Unit-time 3D convolutions as 2D ones.** A Conv3d whose temporal kernel, stride and padding are
  1, 1, 0 is exactly a 2D convolution of the (N*T, C, H, W) frames; a (kt, 1, 1) one with unit
  spatial stride is a 2D (kt, 1) convolution of the (N, C, T, H*W) view. oneDNN's 2D kernels are
  its fastest; the max-pool of the stem goes the same way. The modules stay ``nn.Conv3d`` /
  ``nn.MaxPool3d`` subclasses with their 5D weights (FLOP counting, streamed SFC's chunked theta
  and state dicts see what they saw before).
* **Channels-last activations** (``channels_last=True``, the CPU default of the runtime): every
  folded layer reads and writes NTHWC memory (``channels_last_3d``), so the (N*T, C, H, W) and
  (N, C, T, H*W) views are free and oneDNN runs its native NHWC kernels with no reorder per call.

The code is device-agnostic (plain tensor ops on the module's own device); on CUDA the layout
choice was not measured here (no GPU), so the runtime leaves ``channels_last`` off there.
"""

from __future__ import annotations

import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from sfc_deploy.errors import ConfigError

#: the runner option that turns the rewrite off, named in the error a broken pairing raises
OPTION = "inference_rewrite"


def _plain(conv: nn.Conv3d) -> bool:
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def fold_kind(conv: nn.Conv3d) -> str | None:
    """How ``conv`` runs as a 2D convolution: "frames" (time kernel, stride and padding 1, 1, 0),
    "time" (kernel (kt, 1, 1), unit spatial stride, no spatial padding), or None (stays 3D)."""
    if not _plain(conv):
        return None
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if kt == 1 and st == 1 and pt == 0:
        return "frames"
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0) and conv.dilation[1:] == (1, 1):
        return "time"
    return None


class InferenceConv3d(nn.Conv3d):
    """A Conv3d (BatchNorm possibly folded in) that runs as a 2D convolution where it is one.

    ``kind`` is :func:`fold_kind`'s answer; None keeps the 3D convolution (only the layout and the
    folded BatchNorm change). The weight stays 5D, so anything that reads ``conv.weight`` as a
    Conv3d's (streamed SFC's chunked theta, FLOP counters) still works.
    """

    kind: str | None
    channels_last: bool

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, *, channels_last: bool) -> "InferenceConv3d":
        new = cls.__new__(cls)
        new.__dict__.update(conv.__dict__)  # parameters, buffers, hooks: the same objects
        new._parameters = dict(conv._parameters)
        new._buffers = dict(conv._buffers)
        new._modules = dict(conv._modules)
        new.kind, new.channels_last = fold_kind(conv), channels_last
        new.last_output = {}  # thread id -> weak reference to this conv's latest output on that thread
        new.weight_2d = None
        return new

    def weight_view(self) -> torch.Tensor:
        """The 5D weight as the 2D convolution's 4D weight: a view, made again whenever ``weight`` is
        another tensor or holds other memory than when it was made (``.to()``, ``.half()``, ``.data =``)."""
        view = self.weight_2d
        if view is None or view._base is not self.weight or view.data_ptr() != self.weight.data_ptr():
            with torch.no_grad():
                view = self.weight.squeeze(2) if self.kind == "frames" else self.weight.flatten(3)
            self.weight_2d = view
        return view

    def __getstate__(self) -> dict:
        # weak references neither pickle nor mean anything in a copy: a copy starts with none
        return {**self.__dict__, "last_output": {}, "weight_2d": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._forward(x)
        self.last_output[threading.get_ident()] = weakref.ref(y)
        return y

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        if self.channels_last:  # a no-op after the first layer: every folded layer writes NTHWC
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.kind is None:
            return super().forward(x)
        n, c, t, h, w = x.shape
        if self.kind == "frames":
            # (N, C, T, H, W) -> (N*T, C, H, W): a free view of NTHWC (channels-last-3d) or NTCHW memory
            y = F.conv2d(x.transpose(1, 2).reshape(n * t, c, h, w), self.weight_view(), self.bias,
                         self.stride[1:], self.padding[1:], self.dilation[1:], self.groups)
            return y.reshape(n, t, *y.shape[1:]).transpose(1, 2)
        # kind == "time": (N, C, T, H*W), the time axis as the 2D kernel's height (a view of either layout)
        y = F.conv2d(x.reshape(n, c, t, h * w), self.weight_view(), self.bias, (self.stride[0], 1),
                     (self.padding[0], 0), (self.dilation[0], 1), self.groups)
        return y.reshape(n, y.shape[1], y.shape[2], h, w)


class InferenceMaxPool3d(nn.MaxPool3d):
    """A MaxPool3d over single frames (time kernel/stride 1, no time padding) run as a 2D max-pool."""

    @classmethod
    def from_pool(cls, pool: nn.MaxPool3d) -> "InferenceMaxPool3d":
        new = cls.__new__(cls)
        new.__dict__.update(pool.__dict__)
        return new

    @staticmethod
    def foldable(pool: nn.MaxPool3d) -> bool:
        k, s, p, d = (nn.modules.utils._triple(v) for v in (pool.kernel_size, pool.stride or pool.kernel_size,
                                                           pool.padding, pool.dilation))
        return not pool.return_indices and (k[0], s[0], p[0], d[0]) == (1, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        n, c, t, h, w = x.shape
        k, s, p, d = (nn.modules.utils._triple(v)[1:] for v in (self.kernel_size, self.stride or self.kernel_size,
                                                               self.padding, self.dilation))
        y = F.max_pool2d(x.transpose(1, 2).reshape(n * t, c, h, w), k, s, p, d, ceil_mode=self.ceil_mode)
        return y.reshape(n, t, *y.shape[1:]).transpose(1, 2)


class FoldedBatchNorm(nn.Module):
    """Stands where a BatchNorm3d folded into ``conv`` was: passes the conv's output on unchanged and
    refuses any other input (the fold would otherwise have changed what the network computes)."""

    def __init__(self, conv: InferenceConv3d, name: str) -> None:
        super().__init__()
        object.__setattr__(self, "conv", conv)  # not a submodule: the conv stays registered where it was
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ref = self.conv.last_output.get(threading.get_ident())
        if ref is None or ref() is not x:
            raise ConfigError(
                f"{self.name} was folded into the convolution registered before it, but its input is not that "
                f"convolution's output; this module tree does not follow conv-then-BN registration: serve it "
                f"with the runner option {OPTION}=False"
            )
        return x

    def extra_repr(self) -> str:
        return f"folded into the conv before it ({self.name})"


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> None:
    """Scale ``conv``'s weight and set its bias so that ``conv(x) == bn(conv_before(x))`` in eval mode.

    Computed in float64 from the parameters as they are, rounded once to their dtype.
    """
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(shift.to(dtype), requires_grad=False)


def _foldable_bn(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, InferenceConv3d) and type(bn) is nn.BatchNorm3d and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def prepare_for_inference(model: nn.Module, *, channels_last: bool = True, dtype: torch.dtype | None = None) -> dict[str, int]:
    """Rewrite ``model`` in place for eval-only serving (see the module doc); returns what changed.

    Every ``nn.Conv3d`` becomes an :class:`InferenceConv3d` (a 2D convolution where its time kernel
    allows), every BatchNorm3d registered right after a conv of its width is folded into it, every
    single-frame MaxPool3d runs as a 2D pool. ``dtype`` (e.g. fp16/bf16) casts the model after the
    folding, so each folded weight is rounded once, from the parameters as they were, not from
    parameters and statistics already rounded to it. With ``channels_last`` the weights move to
    channels-last-3d and the activations follow. The model is put in eval mode; it must not be
    trained afterwards (the BatchNorm statistics are gone into the weights).

    Raises:
        ConfigError: ``model`` is in training mode (call ``.eval()`` on a copy first: training keeps
            the unfolded model).
    """
    if model.training:
        raise ConfigError("prepare_for_inference rewrites a model for eval only and it is in training mode; "
                          "call .eval() first (and keep the unfolded model for training)")
    counts = {"conv2d": 0, "conv3d": 0, "batchnorm_folded": 0, "maxpool2d": 0}
    prefix_of = {id(m): name for name, m in model.named_modules()}
    for parent in list(model.modules()):
        children = list(parent.named_children())
        previous: tuple[str, nn.Module] | None = None
        for name, child in children:
            if isinstance(child, nn.Conv3d) and not isinstance(child, InferenceConv3d):
                child = InferenceConv3d.from_conv(child, channels_last=channels_last)
                setattr(parent, name, child)
                counts["conv3d" if child.kind is None else "conv2d"] += 1
            elif type(child) is nn.MaxPool3d and InferenceMaxPool3d.foldable(child):
                setattr(parent, name, InferenceMaxPool3d.from_pool(child))
                counts["maxpool2d"] += 1
            elif previous is not None and _foldable_bn(previous[1], child):
                fold_batchnorm(previous[1], child)
                full = ".".join(filter(None, (prefix_of.get(id(parent), ""), name)))
                setattr(parent, name, FoldedBatchNorm(previous[1], full))
                counts["batchnorm_folded"] += 1
            previous = (name, getattr(parent, name))
    if dtype is not None:
        model.to(dtype)
    for module in model.modules():
        if isinstance(module, InferenceConv3d):
            if channels_last:
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
            if module.kind is not None:
                module.weight_view()  # made now, not inside the first forward
    return counts
