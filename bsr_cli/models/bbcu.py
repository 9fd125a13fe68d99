"""BBCU (Xia et al., ICLR 2023, "Basic Binary Convolution Unit for Binarized Image Restoration Network").

Follows BBCU (Xia et al., ICLR 2023) and its official code (BBCU-SR/quant_convs_bbcu.py, bbcul_arch.py, bbcum_arch.py).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import conv3x3
from bsr_cli.nn.binary_conv import BinaryConv2d
from bsr_cli.nn.blocks import BinaryResBlock, BinaryUnit, RPReLU, pixel_shuffle_upsampler
from bsr_cli.nn.quantizers import MeanAbsSign, RSign


def bbcu_conv(cin: int, cout: int) -> BinaryConv2d:
    """sign(x + b0) (RSign, ApproxSign gradient) x alpha_o*sign(W) (mean|W|, clamp STE), 3x3, no bias."""
    return BinaryConv2d(cin, cout, 3, input_quantizer=RSign(cin), weight_quantizer=MeanAbsSign(), bias=False)


def bbcu_unit(channels: int) -> BinaryUnit:
    """BBCU-V4 (Fig. 2d): out = RPReLU(BinConv(RSign(x))) + x, no BN."""
    return BinaryUnit(bbcu_conv(channels, channels), act=RPReLU(channels))


class BinaryUpConv(nn.Module):
    """BBCU-M binary upconv: u = PixelShuffle_s(RPReLU(BinConv_{C -> C s^2}(RSign(x)))) + NearestUp_s(x)."""

    def __init__(self, channels: int, s: int):
        super().__init__()
        self.s = s
        self.conv = bbcu_conv(channels, channels * s * s)
        self.act = RPReLU(channels * s * s)
        self.shuffle = nn.PixelShuffle(s)

    def forward(self, x):
        return self.shuffle(self.act(self.conv(x))) + F.interpolate(x, scale_factor=self.s, mode="nearest")


class BBCUNet(nn.Module):
    """out = tail(upsampler(body(head(k x)))) / k + bilinear_s(x)  (residual alignment, k = 130, BBCU §3.2)."""

    def __init__(self, scale, head, body, upsampler, tail, k: float = 130.0):
        super().__init__()
        self.scale, self.k = scale, float(k)
        self.head, self.body, self.upsampler, self.tail = head, body, upsampler, tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tail(self.upsampler(self.body(self.head(x * self.k))))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return y / self.k + base


def _init_fp(module: nn.Module) -> None:
    """BBCU default_init_weights: kaiming-normal x 0.1, bias 0, on the listed convs (latent weights included)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            m.weight.data.mul_(0.1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _lrelu():
    return nn.LeakyReLU(0.1, inplace=True)


def _bbcu_body(channels: int, n_blocks: int) -> nn.Sequential:
    return nn.Sequential(*[BinaryResBlock(bbcu_unit(channels), bbcu_unit(channels)) for _ in range(n_blocks)])


@register_model("bbcu-l", paper="BBCU (Xia et al. ICLR 2023)", family="bbcu", binarized="body (32 convs)")
def bbcu_l(scale: int, channels: int = 64, n_blocks: int = 16, k: float = 130.0) -> nn.Module:
    """BBCU-L: FP head LReLU(conv 3->64), binary body of 16 x 2 BBCU units (no long skip), FP pixel-shuffle
    upsampler with LReLU per stage, FP tail conv_last(LReLU(conv_hr)); k = 130 and the bilinear global skip."""
    head = nn.Sequential(conv3x3(3, channels), _lrelu())
    up = pixel_shuffle_upsampler(scale, channels, conv3x3, _lrelu)
    tail = nn.Sequential(conv3x3(channels, channels), _lrelu(), conv3x3(channels, 3))
    for m in (head, up, tail):
        _init_fp(m)
    return BBCUNet(scale, head, _bbcu_body(channels, n_blocks), up, tail, k)


@register_model(
    "bbcu-m", paper="BBCU (Xia et al. ICLR 2023)", family="bbcu", binarized="body, upsampler, conv_hr"
)
def bbcu_m(scale: int, channels: int = 64, n_blocks: int = 16, k: float = 130.0) -> nn.Module:
    """BBCU-M: as BBCU-L but the upconvs are `BinaryUpConv` units (no LReLU) and conv_hr is a binary BBCU unit
    followed by LReLU; conv_first and conv_last stay FP."""
    head = nn.Sequential(conv3x3(3, channels), _lrelu())
    stages = [2, 2] if scale == 4 else [scale]
    up = nn.Sequential(*[BinaryUpConv(channels, s) for s in stages])
    tail = nn.Sequential(bbcu_unit(channels), _lrelu(), conv3x3(channels, 3))
    for m in (head, up, tail):
        _init_fp(m)  # the official init also scales the latent binary weights by 0.1
    return BBCUNet(scale, head, _bbcu_body(channels, n_blocks), up, tail, k)
