"""Attention blocks of BNN-SR-attention (Fig. 1): squeeze-and-excitation, spatial and global attention.

Each block computes a sigmoid map from a full-precision `guide` tensor and multiplies it into `x`:
``block(x, guide)`` = x * map(guide) (guide defaults to x). Which tensor is `x` and which is the guide is the
business of the unit that uses the block (`bsr_cli.nn.blocks.AttentionBinaryUnit`).

Every map starts *open* (sigmoid ~ ``OPEN_MAP`` = 0.95: the last conv's bias is logit(0.95), its weights
keep PyTorch's default init). A map multiplies its stream, and "Both" units (Fig. 5) multiply the residual
stream itself: at the sigmoid's neutral 0.5, 33 units scale the gradient reaching the first binary conv by
~0.5^33 ~ 1e-10, below Adam's eps (issue #12 measured 7.9e-12 per element); open maps keep it at ~0.2.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bsr_cli.nn.rescaling import Mul

__all__ = ["SEAttention", "SpatialAttention", "GlobalAttention", "ATTENTIONS", "make_attention", "OPEN_MAP"]

OPEN_MAP = 0.95  # initial value of every attention map (see the module docstring)


def open_init(conv: nn.Conv2d, level: float = OPEN_MAP) -> nn.Conv2d:
    """Set the bias of the conv that feeds a sigmoid so that the map starts at ~`level`; returns the conv."""
    with torch.no_grad():
        conv.bias.fill_(math.log(level / (1.0 - level)))
    return conv


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mul = Mul()

    def attention_map(self, guide: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        return self.mul(x, self.attention_map(x if guide is None else guide))


class SEAttention(_Attention):
    """Squeeze-and-excitation (Hu et al.; BNN-SR-attention Fig. 1a): GAP -> Linear(C -> C/r) -> ReLU ->
    Linear(C/r -> C) -> sigmoid, a per-channel map. r = 16 (SE-Net default; the paper gives none).
    Linears are 1x1 convs on the pooled vector."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = open_init(nn.Conv2d(hidden, channels, 1))

    def attention_map(self, guide):
        return torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(guide)))))


class SpatialAttention(_Attention):
    """Spatial attention (Fig. 1b): one 1x1 conv C -> 1, sigmoid: a per-pixel map (N, 1, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = open_init(nn.Conv2d(channels, 1, 1))

    def attention_map(self, guide):
        return torch.sigmoid(self.conv(guide))


class GlobalAttention(_Attention):
    """Global attention (Fig. 1c): GAP, then a 1x1 conv, sigmoid. The paper says it captures inter-channel
    dependencies regardless of position, so the 1x1 conv maps C -> C (a per-channel map), not C -> 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = open_init(nn.Conv2d(channels, channels, 1))

    def attention_map(self, guide):
        return torch.sigmoid(self.conv(self.pool(guide)))


ATTENTIONS = {"se": SEAttention, "spatial": SpatialAttention, "global": GlobalAttention}


def make_attention(kind: str, channels: int) -> nn.Module:
    return ATTENTIONS[kind](channels)
