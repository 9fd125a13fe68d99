"""SCALES (Wei et al., arXiv 2303.12270 v2, "SCALES: Boost Binary Neural Network for Image Super-Resolution with
Efficient Scalings"): layer-wise scaling factor + spatial re-scaling + channel-wise re-scaling."""
from __future__ import annotations

from torch import nn

from bsr_cli.models.e2fif import e2fif_tail
from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import SRNet, conv3x3
from bsr_cli.nn.binary_conv import BinaryConv2d
from bsr_cli.nn.blocks import BinaryResBlock, BinaryUnit
from bsr_cli.nn.quantizers import MeanAbsSign, ScalesSign
from bsr_cli.nn.rescaling import ChannelRescale, SpatialRescale

_PAPER = "SCALES (Wei et al. 2023, arXiv 2303.12270v2)"


def scales_unit(channels: int, spatial_kernel: int = 1) -> BinaryUnit:
    """SCALES binary conv (Fig. 8a): BinConv(ScalesSign(x)) * C(x) * S(x) + x with the channel re-scaling
    GAP -> Conv1d(k=5) -> sigmoid (Eq. 5) and spatial re-scaling conv C -> 1 + sigmoid (Eq. 4)."""
    conv = BinaryConv2d(channels, channels, 3, input_quantizer=ScalesSign(channels), weight_quantizer=MeanAbsSign())
    return BinaryUnit(conv, rescalers=[ChannelRescale(channels, 5), SpatialRescale(channels, spatial_kernel)])


def scales_net(scale: int, channels: int, n_blocks: int = 16) -> SRNet:
    blocks = [
        BinaryResBlock(scales_unit(channels), scales_unit(channels), mid_act=nn.LeakyReLU(0.1, inplace=True))
        for _ in range(n_blocks)
    ]
    return SRNet(scale, conv3x3(3, channels), nn.Sequential(*blocks), e2fif_tail(scale, channels), nn.Identity())


@register_model("scales", paper=_PAPER, family="scales", binarized="body (32 convs)")
def scales(scale: int) -> nn.Module:
    """SRResNet-SCALES, 16 blocks x 64 (Table III): E2FIF shape without BN (FP head, FP conv->3s^2+PixelShuffle
    tail), every body conv a SCALES binary conv with its FP skip.

    Choices: spatial re-scaling kernel 1x1 (the text drops the size; Table V's +0.11 G for the spatial branch
    fits 1x1 and not 3x3, which would add 0.60 G); LeakyReLU(0.1) between the two units (E2FIF block)."""
    return scales_net(scale, 64)


@register_model("scales-c40", paper=_PAPER, family="scales", binarized="body (32 convs)")
def scales_c40(scale: int) -> nn.Module:
    """SRResNet-SCALES with 40 channels (SCALES Table VI, the latency-oriented variant); otherwise as `scales`."""
    return scales_net(scale, 40)
