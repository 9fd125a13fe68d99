"""BNN-SR-attention (Zharikov & Ovcharenko): binary EDSR whose body convs are attention binary units.

Names: ``abnn-<block>[-<att>[-<att>]]``, block in base, base-residual, rescale-pre, rescale-post, single, dual,
both; att in se, spatial, global (Table 1). The best, ``abnn-both-spatial-se``, puts spatial attention on the
binary branch and SE on the residual branch.
"""
from __future__ import annotations

import functools
import itertools

from torch import nn

from bsr_cli.models.registry import add_model
from bsr_cli.models.srresnet import SRNet, conv3x3
from bsr_cli.nn.attention import ATTENTIONS
from bsr_cli.nn.binary_conv import BinaryConv2d
from bsr_cli.nn.blocks import AttentionBinaryUnit, BinaryResBlock, pixel_shuffle_upsampler
from bsr_cli.nn.quantizers import ApproxSign, MeanAbsSign

_PAPER = "BNN-SR-attention (Zharikov & Ovcharenko)"


def abnn_net(scale: int, block: str, atts: tuple[str, ...], channels: int = 64, n_blocks: int = 16) -> SRNet:
    """EDSR-baseline (§4.1: "each convolution of the body is replaced with a modified binary block"): FP head,
    16 residual blocks of two `AttentionBinaryUnit`s plus the post-body conv as a third kind of unit (33 binary
    units), global skip, FP EDSR upsampler and tail, MeanShift.

    Unit (Eq. 10): RPReLU(a * (sign(x) (*) W_b) + b) + x; sign with the ApproxSign gradient (Eq. 5-6; 0 -> +1
    per the bsr sign convention), W_b = mean|W_o| * sign(W) (Eq. 7-8) with the clamp STE (as BBCU).
    Choices: "base-residual" adds the EDSR block-level skip around each pair of units (the other blocks do not);
    SE reduction 16; global attention = GAP -> 1x1 conv C->C -> sigmoid; maps computed from the unit's FP input.
    """
    unit_block = "base" if block == "base-residual" else block

    def unit():
        conv = BinaryConv2d(channels, channels, 3, input_quantizer=ApproxSign(), weight_quantizer=MeanAbsSign())
        return AttentionBinaryUnit(conv, channels, unit_block, atts)

    blocks = [BinaryResBlock(unit(), unit(), block_skip=(block == "base-residual")) for _ in range(n_blocks)]
    body = nn.Sequential(*blocks, unit())
    up = pixel_shuffle_upsampler(scale, channels, conv3x3)
    return SRNet(scale, conv3x3(3, channels), body, up, conv3x3(channels, 3))


def _variants():
    atts = list(ATTENTIONS)
    yield "base", ()
    yield "base-residual", ()
    for block in ("rescale-pre", "rescale-post", "single"):
        for a in atts:
            yield block, (a,)
    for a, b in itertools.permutations(atts, 2):
        yield "dual", (a, b)
    for a, b in itertools.product(atts, repeat=2):
        yield "both", (a, b)


def _register_all() -> None:
    for block, atts in _variants():
        name = "-".join(["abnn", block, *atts])
        builder = functools.partial(abnn_net, block=block, atts=atts)
        builder.__doc__ = f"BNN-SR-attention {block} block" + (f" with {'/'.join(atts)} attention" if atts else "")
        binarized = "body (33 convs)" + ("; attention FP" if atts else "")
        add_model(name, builder, paper=_PAPER, family="abnn", binarized=binarized)


_register_all()
