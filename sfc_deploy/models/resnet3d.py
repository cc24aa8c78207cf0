"""Slow-only 3D ResNet (I3D R50 family) with a head/tail split that is a slice of its stage list.

Canonical parameter names (the "plain" checkpoint layout):
``stem.conv.weight``, ``stem.bn.*``, ``res2.0.conv_a.weight``, ``res2.0.bn_a.*`` (``_b``, ``_c``),
``res2.0.shortcut_conv.weight``, ``res2.0.shortcut_bn.*`` (block 0 of every stage), ``fc.weight``, ``fc.bias``.
"""

from __future__ import annotations

import torch
from torch import nn

from sfc_deploy.models.config import STAGES, BackboneConfig, check_split

BN_EPS = 1e-5


class Stem(nn.Module):
    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, out_channels, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """conv-bn-relu without the max-pool: the head when splitting after the stem."""
        return self.relu(self.bn(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


class Bottleneck(nn.Module):
    """1x1x1 (or kt x1x1) -> 1x3x3 (spatial stride here) -> 1x1x1, with an optional projection."""

    def __init__(
        self, in_channels: int, mid: int, out_channels: int, *, temporal_kernel: int = 1, spatial_stride: int = 1
    ) -> None:
        super().__init__()
        kt = temporal_kernel
        self.conv_a = nn.Conv3d(in_channels, mid, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn_a = nn.BatchNorm3d(mid, eps=BN_EPS)
        self.conv_b = nn.Conv3d(
            mid, mid, (1, 3, 3), stride=(1, spatial_stride, spatial_stride), padding=(0, 1, 1), bias=False
        )
        self.bn_b = nn.BatchNorm3d(mid, eps=BN_EPS)
        self.conv_c = nn.Conv3d(mid, out_channels, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_channels, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut_conv: nn.Conv3d | None = None
        self.shortcut_bn: nn.BatchNorm3d | None = None
        if in_channels != out_channels or spatial_stride != 1:
            self.shortcut_conv = nn.Conv3d(
                in_channels, out_channels, 1, stride=(1, spatial_stride, spatial_stride), bias=False
            )
            self.shortcut_bn = nn.BatchNorm3d(out_channels, eps=BN_EPS)

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual branch's output (bn_c's) and the shortcut's, before their sum."""
        identity = x
        if self.shortcut_conv is not None:
            identity = self.shortcut_bn(self.shortcut_conv(x))
        y = self.relu(self.bn_a(self.conv_a(x)))
        y = self.relu(self.bn_b(self.conv_b(y)))
        return self.bn_c(self.conv_c(y)), identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, identity = self.branches(x)
        # in place: no fresh activation-sized tensor per block, whose pages the CPU gets fresh from the OS
        # every pass (benchmarks/eager_cpu/residual_add_ab.py: SFC 1.07-1.13x, 30-crop 1.07-1.10x faster
        # in two runs); BatchNorm's backward does not read its output, so training computes the same
        return self.relu(y.add_(identity))


def make_stage(
    in_channels: int, mid: int, out_channels: int, depth: int, *, temporal_kernel: int, spatial_stride: int
) -> nn.Sequential:
    blocks = [
        Bottleneck(
            in_channels if i == 0 else out_channels,
            mid,
            out_channels,
            temporal_kernel=temporal_kernel,
            spatial_stride=spatial_stride if i == 0 else 1,
        )
        for i in range(depth)
    ]
    return nn.Sequential(*blocks)


class StagedBackbone(nn.Module):
    """A backbone as a flat list of stages that a split slices: stem convs, stem pool, res2..res5.

    Subclasses set ``split`` and ``fc`` and define the ``stages`` property; the head is the stages up
    to and including the split (its output time is ``config.head_frames(T, split)``: a head with
    temporal strides, R(2+1)D's, shortens it), the tail the rest, global average pooling and ``fc``.
    """

    stages: list[nn.Module]
    split: str
    fc: nn.Linear

    def _cut(self, split: str | None) -> int:
        return {"stem": 1, "res2": 3, "res3": 4, "res4": 5}[check_split(split or self.split)]

    def forward_head(self, x: torch.Tensor, split: str | None = None) -> torch.Tensor:
        """Stages up to and including the split, on (N, 3, T, H, W) normalised frames."""
        for stage in self.stages[: self._cut(split)]:
            x = stage(x)
        return x

    def forward_tail(self, f: torch.Tensor, split: str | None = None) -> torch.Tensor:
        """Remaining stages, global average pooling and the classifier: logits (N, classes)."""
        for stage in self.stages[self._cut(split) :]:
            f = stage(f)
        return self.fc(f.mean(dim=(2, 3, 4)))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_head(clip))


class ResNet3d(StagedBackbone):
    """A slow-only 3D ResNet whose stages can be cut into a head and a tail.

    ``forward(clip)`` is the whole network on one clip (dense sampling); ``forward_head`` and
    ``forward_tail`` are the two halves SFC sits between. The split is a slice of
    :attr:`stages`, never a rewrite, so head + tail is exactly the pretrained network.
    """

    def __init__(self, config: BackboneConfig, *, split: str = "res3") -> None:
        super().__init__()
        self.config = config
        self.split = check_split(split)
        self.stem = Stem(config.stem_channels)
        in_ch = config.stem_channels
        for i, name in enumerate(STAGES[1:]):
            stage = make_stage(
                in_ch,
                config.mids[i],
                config.widths[i],
                config.depths[i],
                temporal_kernel=config.temporal_kernels[i],
                spatial_stride=1 if i == 0 else 2,
            )
            self.add_module(name, stage)
            in_ch = config.widths[i]
        self.fc = nn.Linear(in_ch, config.num_classes)

    @property
    def stages(self) -> list[nn.Module]:
        """The network as a flat list that a split slices: the stem's max-pool is its own entry.

        A split after the stem ends before the max-pool, as in mmaction2/TPN's ResNet3d where the
        pool sits outside ``conv1`` (the paper used TPN-repo models); this reproduces Table 6a's
        163 GMACs (166, where keeping the pool in the head would give 158).
        """
        return [self.stem.features, self.stem.pool, *(getattr(self, name) for name in STAGES[1:])]

