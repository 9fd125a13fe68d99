"""E2FIF (Lang et al. 2022, arXiv 2207.06893): end-to-end full-precision information flow."""
from __future__ import annotations

from torch import nn

from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import SRNet, conv3x3
from bsr_cli.nn.binary_conv import BinaryConv2d
from bsr_cli.nn.blocks import BinaryResBlock, BinaryUnit
from bsr_cli.nn.quantizers import ApproxSign, PlainSign


def e2fif_unit(channels: int) -> BinaryUnit:
    """BN(BinConv(x)) + x, BinConv = sign activations (ApproxSign gradient) x sign(W) (no scale, identity STE),
    with bias (E2FIF ResBlock default)."""
    conv = BinaryConv2d(channels, channels, 3, input_quantizer=ApproxSign(), weight_quantizer=PlainSign(), bias=True)
    return BinaryUnit(conv, norm=nn.BatchNorm2d(channels))


def e2fif_tail(scale: int, channels: int) -> nn.Sequential:
    """The E2FIF / EBSR / SCALES SRResNet "tail": one FP 3x3 conv C -> 3*s^2, then PixelShuffle(s)."""
    return nn.Sequential(conv3x3(channels, 3 * scale * scale), nn.PixelShuffle(scale))


@register_model("e2fif", paper="E2FIF (Lang et al. 2022)", family="e2fif", binarized="body (32 convs)")
def e2fif(scale: int, channels: int = 64, n_blocks: int = 16) -> nn.Module:
    """SRResNet-E2FIF (E2FIF paper and its official code, pppLang/E2FIF): MeanShift, FP head 3->64, 16 blocks of
    u = LReLU_0.1(BN(BinConv(x)) + x); out = BN(BinConv(u)) + u, global skip, FP conv 64 -> 3s^2 +
    PixelShuffle (registered as `upsampler`; `tail` is Identity).

    Choices: RGB in/out (the official scripts train on Y with n_colors=1; the EBSR/SCALES tables compare RGB).
    The network works in E2FIF's pixel range 0..255 (`rgb_range=255` in its scripts): its BN layers emit unit-
    variance features whatever the input range, so in a [0, 1] range the tail starts 255x too loud (measured:
    18.9 dB on Set5 after 600 iterations in [0, 1] vs the 0..255 range's normal start)."""
    blocks = [
        BinaryResBlock(e2fif_unit(channels), e2fif_unit(channels), mid_act=nn.LeakyReLU(0.1, inplace=True))
        for _ in range(n_blocks)
    ]
    return SRNet(scale, conv3x3(3, channels), nn.Sequential(*blocks), e2fif_tail(scale, channels), nn.Identity(),
                 pixel_range=255.0)
