"""Binarization parts: quantizers, the binary conv, re-scaling branches, attention blocks, shared blocks."""
from bsr_cli.nn.binary_conv import BinaryConv2d, BinaryLinear, QuantConv2d
from bsr_cli.nn.quantizers import (
    ApproxSign,
    LearnableScaleSign,
    LsqQuantizer,
    MeanAbsSign,
    PlainSign,
    RSign,
    ScaledSign,
    ScalesSign,
)

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "QuantConv2d",
    "ApproxSign",
    "RSign",
    "ScaledSign",
    "ScalesSign",
    "MeanAbsSign",
    "LearnableScaleSign",
    "PlainSign",
    "LsqQuantizer",
]
