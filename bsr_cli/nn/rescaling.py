"""Input-dependent re-scaling branches that modulate a binary conv (EBSR, SCALES), and the two tiny
elementwise modules (`Mul`, `Sub`) through which every re-scaling/attention map is applied.

`Mul`/`Sub` exist so that the profiler sees the elementwise cost of applying a map (one op per output
element, see `bsr_cli.profiling`), the way the EBSR/SCALES cost tables include it.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Mul", "Sub", "SpatialRescale", "ChannelShiftRescale", "ChannelRescale"]


class Mul(nn.Module):
    """a * b (broadcast); profiled as numel(out) elementwise FLOPs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Sub(nn.Module):
    """a - b (broadcast); profiled as numel(out) elementwise FLOPs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


class SpatialRescale(nn.Module):
    """Spatial re-scaling S(A) (EBSR Eq. 5, SCALES Eq. 4): FP conv C -> 1 (k x k) on the real-valued input A,
    then sigmoid; returns the (N, 1, H, W) map that multiplies the binary conv output.

    EBSR uses k = 3 (Table 3: +0.60 G at 128x128 x4 = 32 convs of 3x3x64 MACs per pixel, x2). SCALES leaves k
    out of its text; k = 1 is the value its Table V implies (+0.11 G for 32 branches). `conv` may be replaced by a
    low-bit conv (EBSR-SQ).
    """

    def __init__(self, channels: int, kernel_size: int = 3, conv: nn.Module | None = None):
        super().__init__()
        self.conv = conv if conv is not None else nn.Conv2d(channels, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(a))


class ChannelShiftRescale(nn.Module):
    """EBSR Eq. 6 fused channel-wise shifting and re-scaling: GAP -> FC(C -> C/r) -> ReLU -> FC(C/r -> 2C),
    split into the shift C_s(A) (first C) and the scale C_r(A) = sigmoid(last C). Returns (shift, scale), each
    (N, C, 1, 1).

    EBSR does not give the hidden width; r = 16 (the SE-Net default) reproduces its parameter overheads
    (Table 3: +0.03M fused, +0.04M unfused for 32 convs at C = 64). FCs are 1x1 convs on the pooled vector.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channels = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, 2 * channels, 1)

    def forward(self, a: torch.Tensor):
        z = self.fc2(self.act(self.fc1(self.pool(a))))
        shift, logit = torch.split(z, self.channels, dim=1)
        return shift, torch.sigmoid(logit)


class ChannelRescale(nn.Module):
    """SCALES Eq. 5 channel-wise re-scaling: GAP -> Conv1d(1 -> 1, k = 5, over the channel axis, no bias) ->
    sigmoid. Returns the (N, C, 1, 1) scale; k FP parameters in total (ECA-style)."""

    def __init__(self, channels: int, kernel_size: int = 5):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        y = self.pool(a)  # (N, C, 1, 1)
        y = self.conv(y.flatten(2).transpose(1, 2))  # (N, 1, C)
        return torch.sigmoid(y.transpose(1, 2).unsqueeze(-1))
