"""Attention blocks of BNN-SR-attention (Fig. 1): squeeze-and-excitation, spatial and global attention.

Each block computes a sigmoid map from a full-precision `guide` tensor and multiplies it into `x`:
``block(x, guide)`` = x * map(guide) (guide defaults to x). Which tensor is `x` and which is the guide is the
business of the unit that uses the block (`bsr_cli.nn.blocks.AttentionBinaryUnit`).
"""
from __future__ import annotations

import torch
from torch import nn

from bsr_cli.nn.rescaling import Mul

__all__ = ["SEAttention", "SpatialAttention", "GlobalAttention", "ATTENTIONS", "make_attention"]


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
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def attention_map(self, guide):
        return torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(guide)))))


class SpatialAttention(_Attention):
    """Spatial attention (Fig. 1b): one 1x1 conv C -> 1, sigmoid: a per-pixel map (N, 1, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def attention_map(self, guide):
        return torch.sigmoid(self.conv(guide))


class GlobalAttention(_Attention):
    """Global attention (Fig. 1c): GAP, then a 1x1 conv, sigmoid. The paper says it captures inter-channel
    dependencies regardless of position, so the 1x1 conv maps C -> C (a per-channel map), not C -> 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(channels, channels, 1)

    def attention_map(self, guide):
        return torch.sigmoid(self.conv(self.pool(guide)))


ATTENTIONS = {"se": SEAttention, "spatial": SpatialAttention, "global": GlobalAttention}


def make_attention(kind: str, channels: int) -> nn.Module:
    return ATTENTIONS[kind](channels)
