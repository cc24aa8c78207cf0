"""TPN: the Temporal Pyramid Network (Yang et al., CVPR 2020) on a slow-only 3D ResNet.

The backbone is :class:`~sfc_deploy.models.resnet3d.ResNet3d` unchanged (mmaction2's
``ResNet3dSlowOnly``: stem, res2..res5 without pool2); TPN adds a neck between res5 and the classifier
that fuses a two-level feature pyramid built from res4 and res5 (mmaction2's
``tpn_slowonly_r50`` config, the ``decisionforce/TPN`` ``r50f8s8`` model the SFC paper used):

``spatial modulation``   res4 (C4) -> C5 by strided 1x3x3 conv-BN-ReLU (log2(C5/C4) of them), so both levels
                         have res5's channels and size; res5 passes as is
``temporal modulation``  per level: grouped (3x1x1) conv C5 -> C4 (no BN, no ReLU), then a temporal max-pool
                         of ``frames`` steps (ceil mode): a dense clip's time collapses to one step
``top-down / bottom-up`` cascade flow: ``l0 += l1`` (the 1x1x1 upsampling is an identity), fused by level
                         fusion 1; then ``l1 += conv3x1x1(l0)``, fused by level fusion 2
``level fusion``         per level: grouped 1x1x1 conv-BN-ReLU C4 -> C4, concatenate, 1x1x1 conv-BN-ReLU -> C5
``pyramid fusion``       concatenate both fusions, 1x1x1 conv-BN-ReLU 2*C5 -> C5
``head``                 global average pool, dropout (a no-op in eval), linear classifier (``TPNHead``)

The auxiliary head that mmaction2 and the TPN repo train on res4 (``neck.aux_head.*``, ``necks.aux_head.*``)
is a training-only loss: it never reaches the logits, so it is not built and checkpoint import drops it.

Canonical names: the backbone and classifier keep ResNet3d's (``stem.*``, ``res2.0.conv_a.weight``,
``fc.*``); the neck keeps mmaction2's own names under ``neck.`` (``neck.spatial_modulation.
spatial_modulation.0.0.conv.weight``, ``neck.temporal_modulation_ops.0.conv.conv.weight``,
``neck.level_fusion_1.downsamples.0.conv.bn.weight``, ``neck.pyramid_fusion.conv.weight``...), so an
mmaction2 checkpoint's neck needs no renaming and the module tree reads like the reference code. The
TPN repo's ``necks.*`` (the same tensors, named after its bare Conv3d/BatchNorm3d modules) is renamed
by :mod:`sfc_deploy.models.checkpoint`.

SFC splits the backbone as for slow-only (after res3 by default): the tail is res4, res5, the neck
and the head. With the split after res4, the neck's res4 level is the compressed feature SFC returns.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sfc_deploy.errors import ConfigError
from sfc_deploy.models.config import BackboneConfig
from sfc_deploy.models.resnet3d import BN_EPS, ResNet3d

#: channel groups of TPN's temporal-modulation and level-fusion convolutions (mmaction2: 32)
GROUPS = 32
#: index of res4 in :attr:`ResNet3d.stages` (stem conv, stem pool, res2, res3, res4, res5)
_RES4 = 4


class ConvNorm(nn.Module):
    """Conv3d without bias, then optionally BatchNorm and ReLU: mmaction2's ``ConvModule`` as TPN uses it
    (attributes ``conv`` and ``bn``, so the state dict has its names)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (0, 0, 0),
        groups: int = 1,
        norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS) if norm else None
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x) if self.relu is not None else x


class PooledConv(nn.Module):
    """A :class:`ConvNorm` under ``.conv`` followed by an optional temporal max-pool (ceil mode).

    Stands for mmaction2's ``TemporalModulation`` and ``DownSample``: both hold their convolution as
    ``.conv``. The TPN-50 config gives every ``DownSample`` a 1x1x1 pool, an identity, so only the
    temporal modulation pools (``time_pool`` > 1).
    """

    def __init__(self, conv: ConvNorm, *, time_pool: int = 1) -> None:
        super().__init__()
        self.conv = conv
        self.pool = nn.MaxPool3d((time_pool, 1, 1), (time_pool, 1, 1), ceil_mode=True) if time_pool > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.pool(x) if self.pool is not None else x


class SpatialModulation(nn.Module):
    """Per level, strided 1x3x3 conv-BN-ReLUs doubling the channels until they reach the top level's;
    the top level's entry is empty (an identity)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.spatial_modulation = nn.ModuleList()
        for channels in in_channels:
            steps = int(math.log2(out_channels // channels))
            self.spatial_modulation.append(
                nn.Sequential(
                    *(
                        ConvNorm(channels * 2**i, channels * 2 ** (i + 1), (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
                        for i in range(steps)
                    )
                )
            )

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        return [op(x) for op, x in zip(self.spatial_modulation, levels)]


class LevelFusion(nn.Module):
    """Grouped 1x1x1 conv-BN-ReLU per level, concatenated, then a 1x1x1 conv-BN-ReLU."""

    def __init__(self, channels: int, levels: int, out_channels: int) -> None:
        super().__init__()
        self.downsamples = nn.ModuleList(PooledConv(ConvNorm(channels, channels, groups=GROUPS)) for _ in range(levels))
        self.fusion_conv = ConvNorm(channels * levels, out_channels)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return self.fusion_conv(torch.cat([op(x) for op, x in zip(self.downsamples, levels)], dim=1))


class TPNNeck(nn.Module):
    """The temporal pyramid over (res4, res5): two levels, cascade flow, as in mmaction2's TPN-50.

    Args:
        in_channels: channels of res4 and res5 (1024, 2048).
        channels: width of the pyramid levels (mmaction2's ``out_channels``, 1024).
        fused: width of the spatially modulated levels, of each level fusion and of the output (2048).
        time_pool: temporal max-pool of the modulation (mmaction2's ``downsample_scales``: the clip length).
    """

    def __init__(self, in_channels: tuple[int, int], channels: int, fused: int, *, time_pool: int) -> None:
        super().__init__()
        for c in (*in_channels, channels):
            if c % GROUPS:
                raise ConfigError(
                    f"TPN's grouped convolutions need channel counts divisible by {GROUPS}, got {c}; widen res4/res5"
                )
        self.spatial_modulation = SpatialModulation(in_channels, fused)
        self.temporal_modulation_ops = nn.ModuleList(
            PooledConv(
                ConvNorm(fused, channels, (3, 1, 1), padding=(1, 0, 0), groups=GROUPS, norm=False, relu=False),
                time_pool=time_pool,
            )
            for _ in in_channels
        )
        self.downsample_ops = nn.ModuleList(
            [PooledConv(ConvNorm(channels, channels, (3, 1, 1), padding=(1, 0, 0), norm=False, relu=False))]
        )
        self.level_fusion_1 = LevelFusion(channels, len(in_channels), fused)
        self.level_fusion_2 = LevelFusion(channels, len(in_channels), fused)
        self.pyramid_fusion = ConvNorm(2 * fused, fused)

    def forward(self, res4: torch.Tensor, res5: torch.Tensor) -> torch.Tensor:
        low, top = (op(x) for op, x in zip(self.temporal_modulation_ops, self.spatial_modulation([res4, res5])))
        low = low + top  # top-down: the 1x1x1 upsampling of the config is an identity
        top_down = self.level_fusion_1([low, top])
        top = top + self.downsample_ops[0](low)  # bottom-up, cascaded on the top-down result
        bottom_up = self.level_fusion_2([low, top])
        return self.pyramid_fusion(torch.cat([top_down, bottom_up], dim=1))


class TPN(ResNet3d):
    """Slow-only ResNet3d + temporal pyramid neck + TPNHead, cut into head and tail like the backbone.

    ``forward_head`` is ResNet3d's; ``forward_tail`` runs the remaining stages, keeps res4's output
    (or takes it as its input when the split is after res4), and classifies the neck's output.
    """

    def __init__(self, config: BackboneConfig, *, split: str = "res3") -> None:
        super().__init__(config, split=split)
        c4, c5 = config.widths[2], config.widths[3]
        self.neck = TPNNeck((c4, c5), c4, c5, time_pool=config.frames)

    def forward_tail(self, f: torch.Tensor, split: str | None = None) -> torch.Tensor:
        cut = self._cut(split)
        stages = self.stages
        res4 = f if cut == _RES4 + 1 else None
        for i in range(cut, len(stages)):
            f = stages[i](f)
            if i == _RES4:
                res4 = f
        return self.fc(self.neck(res4, f).mean(dim=(2, 3, 4)))
