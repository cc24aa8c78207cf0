"""R(2+1)D with bottleneck blocks (R(2+1)D-152 of VMZ / IG-65M) whose stage list a split slices.

The network is torchvision's ``VideoResNet`` as VMZ builds ``r2plus1d_152`` (Tran et al., "A Closer Look
at Spatiotemporal Convolutions", CVPR 2018; Ghadiyaram et al., "Large-scale weakly-supervised pre-training
for video action recognition", CVPR 2019), so its parameter names are the released checkpoints' own and
checkpoint import needs no renaming (the ``vmz`` layout of :mod:`sfc_deploy.models.checkpoint`):

``stem``       ``stem.0`` conv 1x7x7 3 -> 45 stride (1,2,2), ``stem.1`` BN, ReLU, ``stem.3`` conv 3x1x1
               45 -> 64, ``stem.4`` BN, ReLU, then (``stem.6``) max-pool 1x3x3 stride (1,2,2) (VMZ's
               ``use_pool1``, the default of its ``r2plus1d_152``)
``layerN.M``   bottleneck: ``conv1`` = (1x1x1 conv, BN, ReLU); ``conv2`` = (Conv2Plus1D, BN, ReLU) where the
               Conv2Plus1D is ``conv2.0.0`` 1x3x3 conv (spatial stride), ``conv2.0.1`` BN, ReLU,
               ``conv2.0.3`` 3x1x1 conv (temporal stride); ``conv3`` = (1x1x1 conv, BN); ``downsample`` =
               (1x1x1 conv with the block's stride in time and space, BN) on block 0 of every stage
``fc``         linear classifier on the global average

The (2+1)D middle width follows VMZ: ``mid = floor(t*d*d*in*out / (d*d*in + t*out))`` with t = 3, d = 3,
which keeps the parameter count of the full 3x3x3 convolution it factorises (2.25 x planes here).
BatchNorm eps is 1e-3 (Caffe2's). layer2..layer4 halve time as well as space in their first block, so
the network changes the frame rate: after layer2 ("res3", the paper's split) one head step covers two
input frames, and a 32-frame clip ends with 4 time steps. :meth:`BackboneConfig.head_temporal_stride`
says it; SFC, the export specs and the attention's timestamps use it.

Stage names map as everywhere in sfc-deploy: stem, res2 = layer1, res3 = layer2, res4 = layer3, res5 = layer4.
"""

from __future__ import annotations

import torch
from torch import nn

from sfc_deploy.errors import ConfigError
from sfc_deploy.models.config import BackboneConfig, check_split
from sfc_deploy.models.resnet3d import StagedBackbone

#: BatchNorm epsilon of the VMZ (Caffe2) models.
BN_EPS = 1e-3
#: Output channels of the stem's spatial convolution (fixed by VMZ's ``R2Plus1dStem``).
STEM_MID = 45
#: Bottleneck expansion: a stage's output width over its planes.
EXPANSION = 4


def mid_channels(in_channels: int, out_channels: int, *, t: int = 3, d: int = 3) -> int:
    """VMZ's (2+1)D middle width: as many parameters as the t x d x d convolution it replaces."""
    return (t * d * d * in_channels * out_channels) // (d * d * in_channels + t * out_channels)


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS)


class Conv2Plus1D(nn.Sequential):
    """1x3x3 spatial conv -> BN -> ReLU -> 3x1x1 temporal conv (the (2+1)D factorisation of a 3x3x3)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, temporal_kernel: int = 3) -> None:
        mid = mid_channels(in_channels, out_channels, t=temporal_kernel)
        kt = temporal_kernel
        super().__init__(
            nn.Conv3d(in_channels, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            _bn(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_channels, (kt, 1, 1), stride=(stride, 1, 1), padding=(kt // 2, 0, 0), bias=False),
        )


class Bottleneck(nn.Module):
    """1x1x1 -> (2+1)D 3x3x3 (stride in time and space) -> 1x1x1, with a projection on block 0."""

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, temporal_kernel: int = 3) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        self.conv1 = nn.Sequential(nn.Conv3d(in_channels, planes, 1, bias=False), _bn(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(
            Conv2Plus1D(planes, planes, stride=stride, temporal_kernel=temporal_kernel),
            _bn(planes),
            nn.ReLU(inplace=True),
        )
        self.conv3 = nn.Sequential(nn.Conv3d(planes, out_channels, 1, bias=False), _bn(out_channels))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False), _bn(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))).add_(identity))  # in place: resnet3d.Bottleneck


class R2Plus1D(StagedBackbone):
    """R(2+1)D whose stages can be cut into a head and a tail (the interface of ``ResNet3d``).

    ``forward(clip)`` is the whole network on one clip; ``forward_head``/``forward_tail`` are the halves
    SFC sits between, a slice of :attr:`stages`. Config fields used: ``stem_channels``, ``mids``
    (the planes of res2..res5), ``widths`` (= 4 x planes), ``depths``, ``temporal_kernels`` (of the
    (2+1)D temporal convs), ``temporal_strides`` (of block 0 of each stage; its spatial stride is the
    same as in every ResNet: 1 in res2, 2 after), ``num_classes``.
    """

    def __init__(self, config: BackboneConfig, *, split: str = "res3") -> None:
        super().__init__()
        self.config = config
        self.split = check_split(split)
        for i, (planes, width) in enumerate(zip(config.mids, config.widths)):
            if width != planes * EXPANSION:
                raise ConfigError(f"{config.name}: res{i + 2} width {width} is not {EXPANSION} x its planes "
                                  f"{planes}; register the backbone with widths = {EXPANSION} x mids")
            if config.temporal_strides[i] != (1 if i == 0 else 2):
                raise ConfigError(f"{config.name}: VMZ's R(2+1)D strides time like space (1, 2, 2, 2), "
                                 f"got temporal_strides {config.temporal_strides}; register it with (1, 2, 2, 2)")
        kt = config.stem_temporal_kernel
        self.stem = nn.Sequential(
            nn.Conv3d(3, STEM_MID, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            _bn(STEM_MID),
            nn.ReLU(inplace=True),
            nn.Conv3d(STEM_MID, config.stem_channels, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False),
            _bn(config.stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        in_ch = config.stem_channels
        for i, depth in enumerate(config.depths):
            stride = config.temporal_strides[i]
            blocks = [
                Bottleneck(in_ch if j == 0 else config.widths[i], config.mids[i], stride=stride if j == 0 else 1,
                           temporal_kernel=config.temporal_kernels[i])
                for j in range(depth)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = config.widths[i]
        self.fc = nn.Linear(in_ch, config.num_classes)

    def _stem_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stem without its max-pool: the head when splitting after the stem (as in ResNet3d)."""
        for layer in list(self.stem)[:-1]:
            x = layer(x)
        return x

    @property
    def stages(self) -> list[nn.Module]:
        """The network as the flat list a split slices: stem convs, stem pool, layer1..layer4."""
        return [self._stem_features, self.stem[-1], *(getattr(self, f"layer{i}") for i in range(1, 5))]
