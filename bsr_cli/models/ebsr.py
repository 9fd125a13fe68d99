"""EBSR (Wei et al., arXiv 2303.12270 v1, "EBSR: Enhanced Binary Neural Network for Image Super-Resolution").

No official code exists for EBSR (arXiv 2303.12270 v1); each choice not stated in the paper is written in the builder's docstring.
Shared shape (EBSR §4, Fig. 7): FP head (one 3x3 conv), binary body of 16 (light) / 32 (EBSR) blocks of two
binary units, each unit with its own FP skip, no BN, global skip, FP tail (one 3x3 conv C -> 3s^2 +
PixelShuffle, the E2FIF tail).
"""
from __future__ import annotations

from torch import nn

from bsr_cli.models.e2fif import e2fif_tail
from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import SRNet, conv3x3
from bsr_cli.nn.binary_conv import BinaryConv2d, QuantConv2d
from bsr_cli.nn.blocks import BinaryResBlock, BinaryUnit
from bsr_cli.nn.quantizers import MeanAbsSign, ScaledSign
from bsr_cli.nn.rescaling import ChannelShiftRescale, SpatialRescale


def ebsr_unit(channels: int, spatial: str | None, channel: bool, w_bits: int = 4, a_bits: int = 4) -> BinaryUnit:
    """One unit. spatial: None, "fp" (3x3 conv C->1 + sigmoid, Eq. 5) or "sq" (same conv, LSQ W/A-quantized).
    channel: fused channel-wise shift + re-scale (Eq. 6); it then replaces the fixed RSign threshold beta of
    Eq. 2 (the paper: "beta_i in Eq. 2 is no longer fixed ... but generated according to the input")."""
    quant = ScaledSign(channels, threshold=not channel)
    conv = BinaryConv2d(channels, channels, 3, input_quantizer=quant, weight_quantizer=MeanAbsSign(), bias=False)
    rescalers = []
    if spatial == "fp":
        rescalers.append(SpatialRescale(channels, 3))
    elif spatial == "sq":
        rescalers.append(SpatialRescale(channels, conv=QuantConv2d(channels, 1, 3, w_bits=w_bits, a_bits=a_bits)))
    return BinaryUnit(conv, shift_rescale=ChannelShiftRescale(channels) if channel else None, rescalers=rescalers)


def ebsr_net(scale, channels, n_blocks, spatial=None, channel=False, **q) -> SRNet:
    """FP head, n_blocks x [unit, LeakyReLU(0.1), unit], global skip, E2FIF tail; EDSR MeanShift."""
    blocks = [
        BinaryResBlock(
            ebsr_unit(channels, spatial, channel, **q),
            ebsr_unit(channels, spatial, channel, **q),
            mid_act=nn.LeakyReLU(0.1, inplace=True),
        )
        for _ in range(n_blocks)
    ]
    return SRNet(scale, conv3x3(3, channels), nn.Sequential(*blocks), e2fif_tail(scale, channels), nn.Identity())


_PAPER = "EBSR (Wei et al. 2023, arXiv 2303.12270v1)"


@register_model("ebsr-baseline", paper=_PAPER, family="ebsr", binarized="body (32 convs)")
def ebsr_baseline(scale: int) -> nn.Module:
    """EBSR's strong baseline (§4) = SCALES' "LSF" ablation: E2FIF shape without BN, activations
    alpha*sign((x-beta_c)/alpha) (Eq. 2-4), weights mean|W|*sign(W) (Eq. 1), 16 blocks x 64.

    Choice: LeakyReLU(0.1) between the two units of a block, as E2FIF's block (EBSR's baseline is E2FIF
    without BN, Table 2). 1.57 G OPs at 128x128 x4 (SCALES Table V, LSF row)."""
    return ebsr_net(scale, 64, 16)


@register_model("ebsr-light", paper=_PAPER, family="ebsr", binarized="body (32 convs)")
def ebsr_light(scale: int) -> nn.Module:
    """EBSR-light: baseline + E-Conv (Fig. 6b): spatial re-scaling (FP 3x3 conv C->1 + sigmoid, Eq. 5) and fused
    channel-wise shift + re-scale (GAP -> FC C->C/16 -> ReLU -> FC -> 2C, Eq. 6), 16 blocks x 64.
    The E-Conv output is BinConv(x - C_s) * C_r * S + x. Choice: hidden width C/16 (matches Table 3 params)."""
    return ebsr_net(scale, 64, 16, spatial="fp", channel=True)


@register_model("ebsr", paper=_PAPER, family="ebsr", binarized="body (64 convs)")
def ebsr(scale: int) -> nn.Module:
    """EBSR: E-Conv network on the EDSR backbone, 32 blocks x 256 channels (§5.3)."""
    return ebsr_net(scale, 256, 32, spatial="fp", channel=True)


@register_model("ebsr-sq", paper=_PAPER, family="ebsr", binarized="body (32 convs); spatial branch W4A4")
def ebsr_sq(scale: int, w_bits: int = 4, a_bits: int = 4) -> nn.Module:
    """EBSR-SQ: EBSR-light whose spatial re-scaling conv is quantized to low bits (default W4A4, Table 4),
    "following [5]" = LSQ: learned step sizes for weight and input (`QuantConv2d`). Choice: signed 4-bit input
    levels (the branch input is the signed FP activation), per-tensor steps."""
    return ebsr_net(scale, 64, 16, spatial="sq", channel=True, w_bits=w_bits, a_bits=a_bits)
