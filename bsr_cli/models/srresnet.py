"""FP twin: the "SRResNet" of the EBSR/SCALES tables (EDSR-baseline shape), and the SR skeleton shared by the
EDSR-shaped families.

EBSR Table 4 / SCALES Table III FP row, by arithmetic from their figures: 3x3 head 3->64, 16 residual blocks (3x3 conv, ReLU, 3x3 conv, no BN), one 3x3 conv after the body,
global skip, x4: two stages of 3x3 64->256 + PixelShuffle(2), 3x3 tail 64->3 at HR. 1,517,571 parameters at
x4 and 64.98 G FLOPs (2 x MACs) at LR 128x128 (SCALES Table III / EBSR Table 4).
"""
from __future__ import annotations

import torch
from torch import nn

from bsr_cli.models.registry import register_model
from bsr_cli.nn.blocks import MeanShift, pixel_shuffle_upsampler

__all__ = ["SRNet", "FPResBlock", "conv3x3"]


def conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class SRNet(nn.Module):
    """EDSR-style skeleton: y = add_mean(tail(upsampler(body(h) + h))), h = head(sub_mean(x)).

    `mean_shift`: EDSR MeanShift around the network (no cost); `global_skip`: body(h) + h (EDSR long skip);
    `pixel_range`: the value range the network works in (EDSR-PyTorch's `rgb_range`): the mean-shifted input is
    multiplied by it and the output divided by it, so the model still maps [0, 1] RGB to [0, 1] RGB.
    """

    def __init__(
        self,
        scale,
        head,
        body,
        upsampler,
        tail,
        mean_shift: bool = True,
        global_skip: bool = True,
        pixel_range: float = 1.0,
    ):
        super().__init__()
        self.scale = scale
        self.pixel_range = float(pixel_range)
        self.head, self.body, self.upsampler, self.tail = head, body, upsampler, tail
        self.global_skip = global_skip
        self.sub_mean = MeanShift(-1) if mean_shift else nn.Identity()
        self.add_mean = MeanShift(+1) if mean_shift else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        if self.pixel_range != 1.0:
            x = x * self.pixel_range
        h = self.head(x)
        f = self.body(h)
        if self.global_skip:
            f = f + h
        y = self.tail(self.upsampler(f))
        if self.pixel_range != 1.0:
            y = y / self.pixel_range
        return self.add_mean(y)


class FPResBlock(nn.Module):
    """EDSR residual block without BN: x + conv(ReLU(conv(x)))."""

    def __init__(self, channels: int, make_conv=conv3x3):
        super().__init__()
        self.conv1 = make_conv(channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = make_conv(channels, channels)

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


def edsr_baseline(scale: int, channels: int = 64, n_blocks: int = 16, make_body_conv=conv3x3) -> SRNet:
    """EDSR-baseline: FP head/upsampler/tail; residual-block convs from `make_body_conv` (FP by default)."""
    body = nn.Sequential(*[FPResBlock(channels, make_body_conv) for _ in range(n_blocks)], conv3x3(channels, channels))
    return SRNet(
        scale,
        head=conv3x3(3, channels),
        body=body,
        upsampler=pixel_shuffle_upsampler(scale, channels, conv3x3),
        tail=conv3x3(channels, 3),
    )


@register_model(
    "srresnet-fp",
    paper="EBSR/SCALES FP baseline (EDSR-baseline shape)",
    family="fp",
    binarized="nothing (full precision)",
)
def srresnet_fp(scale: int) -> nn.Module:
    """Full-precision SRResNet/EDSR-baseline, 16 blocks x 64 channels (the FP twin of every binary model).

    Matches the cost tables of EBSR Table 4 / SCALES Table III exactly: no BN, ReLU inside blocks, EDSR MeanShift, conv after the body, pixel-shuffle
    upsampler (x3: one 64->576 conv + PixelShuffle(3)), FP 3x3 tail at HR."""
    return edsr_baseline(scale)
