"""Shared building blocks: RPReLU, MeanShift, the residual binary units, upsamplers, a profiled MatMul.

A binary unit is one `BinaryConv2d` plus where its FP shortcut, BN, activation and re-scaling maps sit;
papers differ only in those choices, so each model picks them here instead of defining its own conv class.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from bsr_cli.nn.attention import make_attention
from bsr_cli.nn.rescaling import Mul, Sub

__all__ = [
    "RPReLU",
    "MeanShift",
    "ScaleBias",
    "BinaryUnit",
    "BinaryResBlock",
    "AttentionBinaryUnit",
    "MatMul",
    "pixel_shuffle_upsampler",
    "ABNN_BLOCKS",
]


class RPReLU(nn.Module):
    """ReActNet RPReLU (BNN-SR-attention Eq. 9, BBCU Eq. 4): PReLU(x - gamma_c) + zeta_c, per-channel shifts
    gamma, zeta (init 0) and per-channel negative slope (init 0.25)."""

    def __init__(self, channels: int, init: float = 0.25):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.prelu = nn.PReLU(channels, init=init)
        self.zeta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        return self.prelu(x - self.gamma.view(shape)) + self.zeta.view(shape)


class MeanShift(nn.Module):
    """EDSR MeanShift on [0, 1] RGB: x + sign * mean (DIV2K RGB mean 0.4488, 0.4371, 0.4040). A buffer, no
    parameters, no conv (so it costs nothing in Eq. 7)."""

    def __init__(self, sign: int, mean=(0.4488, 0.4371, 0.4040)):
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.to(x.dtype)


class ScaleBias(nn.Module):
    """Scale block of BNN-SR-attention Eq. 10: a * y + b with scalar learnable a (init 1) and b (init 0)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.a * y + self.b


class BinaryUnit(nn.Module):
    """One binary conv with its full-precision shortcut:

        a   = x - C_s(x)                       (only with `shift_rescale`, EBSR Eq. 6)
        y   = conv(a)                          (BinaryConv2d: binarizes a and W itself)
        y   = y * C_r(x) * S_1(x) * ...        (re-scaling maps computed from the FP input x: EBSR Eq. 5-6, SCALES)
        y   = act(norm(y))                     (BN: E2FIF; RPReLU: BBCU; either may be None)
        out = y + x                            (shortcut=True: Bi-Real / E2FIF / BBCU residual around every conv)

    The shortcut needs in == out channels; set ``shortcut=False`` otherwise.
    """

    def __init__(
        self,
        conv: nn.Module,
        *,
        shift_rescale: nn.Module | None = None,
        rescalers: Sequence[nn.Module] = (),
        norm: nn.Module | None = None,
        act: nn.Module | None = None,
        shortcut: bool = True,
    ):
        super().__init__()
        self.conv = conv
        self.shift_rescale = shift_rescale
        self.rescalers = nn.ModuleList(rescalers)
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.shortcut = shortcut
        self.sub = Sub() if shift_rescale is not None else None
        self.mul = Mul() if (shift_rescale is not None or len(self.rescalers)) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x
        maps = []
        if self.shift_rescale is not None:
            shift, scale = self.shift_rescale(x)
            a = self.sub(x, shift)
            maps.append(scale)
        y = self.conv(a)
        for r in self.rescalers:
            maps.append(r(x))
        for m in maps:
            y = self.mul(y, m)
        y = self.act(self.norm(y))
        return y + x if self.shortcut else y


class BinaryResBlock(nn.Module):
    """Two binary units in sequence, an optional activation between them, an optional block-level skip:
    out = u2(act(u1(x))) (+ x). E2FIF: act = LeakyReLU(0.1), no block skip; BBCU: no act, no block skip."""

    def __init__(self, unit1: nn.Module, unit2: nn.Module, mid_act: nn.Module | None = None, block_skip=False):
        super().__init__()
        self.unit1 = unit1
        self.mid_act = mid_act if mid_act is not None else nn.Identity()
        self.unit2 = unit2
        self.block_skip = block_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.unit2(self.mid_act(self.unit1(x)))
        return y + x if self.block_skip else y


ABNN_BLOCKS = ("base", "base-residual", "rescale-pre", "rescale-post", "single", "dual", "both")
_ABNN_N_ATT = {"base": 0, "base-residual": 0, "rescale-pre": 1, "rescale-post": 1, "single": 1, "dual": 2, "both": 2}


class AttentionBinaryUnit(nn.Module):
    """BNN-SR-attention binary unit (Eq. 10) with its attention placements (Fig. 2-5).

    base (Eq. 10):   out = RPReLU(a * (sign(x) (*) W_b) + b) + x
    rescale-pre:     the conv input is att(x)            (Fig. 3a: re-scale the binary conv's input)
    rescale-post:    the conv output is att(conv)        (Fig. 3b: re-scale its output, before the scale block)
    single:          out = att(RPReLU(...)) + x          (Fig. 4a)
    dual:            out = att2(att1(RPReLU(...))) + x   (Fig. 4b)
    both:            out = att1(RPReLU(...)) + att2(x)   (Fig. 5: second attention on the residual branch)
    ("base-residual" is `base` units plus a block-level skip, built by the model.)

    Every attention map is computed from the unit's full-precision input x (the paper: "both residual and
    binary branches require information restriction based on the full-precision input").
    """

    def __init__(self, conv: nn.Module, channels: int, block: str = "base", atts: Sequence[str] = ()):
        super().__init__()
        if block not in _ABNN_N_ATT or len(atts) != _ABNN_N_ATT[block]:
            raise ValueError(f"block {block!r} takes {_ABNN_N_ATT.get(block)} attentions, got {list(atts)}")
        self.block = block
        self.conv = conv
        self.scale = ScaleBias()
        self.act = RPReLU(channels)
        self.atts = nn.ModuleList(make_attention(a, channels) for a in atts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.atts[0](x, x) if self.block == "rescale-pre" else x
        y = self.conv(a)
        if self.block == "rescale-post":
            y = self.atts[0](y, x)
        y = self.act(self.scale(y))
        if self.block in ("single", "dual", "both"):
            y = self.atts[0](y, x)
        if self.block == "dual":
            y = self.atts[1](y, x)
        res = self.atts[1](x, x) if self.block == "both" else x
        return y + res


class MatMul(nn.Module):
    """a @ b as a module so that the profiler counts its MACs (attention scores and weighted sums in SwinIR).
    ``binary=True`` marks both operands as 1-bit (BiBERT), counted as BOPs."""

    def __init__(self, binary: bool = False):
        super().__init__()
        self.binary = binary

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def pixel_shuffle_upsampler(
    scale: int, channels: int, make_conv: Callable[[int, int], nn.Module], make_act: Callable[[], nn.Module] | None = None
) -> nn.Sequential:
    """EDSR/SRResNet upsampler: x2 / x3: conv C -> C*s^2, PixelShuffle(s); x4: two x2 stages.
    `make_conv(cin, cout)` builds each conv (FP or a binary unit), `make_act()` an optional activation per stage."""
    stages = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for s in stages:
        layers += [make_conv(channels, channels * s * s), nn.PixelShuffle(s)]
        if make_act is not None:
            layers.append(make_act())
    return nn.Sequential(*layers)
