"""The one binary convolution (and its token-wise linear form), plus a low-bit conv for EBSR-SQ.

`BinaryConv2d` is an `nn.Conv2d` whose weight goes through a weight binarizer and whose input goes through an
activation binarizer (Larq `QuantConv2D(input_quantizer=..., kernel_quantizer=...)`). Profiling, checkpoint
packing, ONNX packing and the bitpack backend find binary convs by this class (docs/architecture.md):
  - ``input_quantizer`` set   -> 1-bit activations x 1-bit weights: counted as BOPs.
  - ``input_quantizer=None``  -> FP activations x binary weights (Ma et al. 2019): counted as FLOPs, its weight
    still counts as a binary parameter.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bsr_cli.nn.quantizers import LsqQuantizer, MeanAbsSign

__all__ = ["BinaryConv2d", "BinaryLinear", "QuantConv2d"]


class BinaryConv2d(nn.Conv2d):
    """Conv2d (stride 1, padding k//2) with binarized weights and (optionally) binarized inputs.

    out = conv(input_quantizer(x), weight_quantizer(W)) + bias.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        input_quantizer: nn.Module | None = None,
        weight_quantizer: nn.Module | None = None,
        bias: bool = False,
        groups: int = 1,
    ):
        super().__init__(in_ch, out_ch, kernel_size, stride=1, padding=kernel_size // 2, bias=bias, groups=groups)
        self.input_quantizer = input_quantizer
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else MeanAbsSign()
        if hasattr(self.weight_quantizer, "init_from"):
            self.weight_quantizer.init_from(self.weight)

    @property
    def binary_activations(self) -> bool:
        """True when inputs are 1-bit too (an XNOR-popcount conv), False for binary-weight-only (Ma 2019)."""
        return self.input_quantizer is not None

    # False only during a binary-activation-only warm-up (E2FIF's first stage, `bsr train --fp-weight-iters`):
    # the latent weight is used as is. A plain attribute, not state: checkpoints never see it.
    binarize_weight = True

    def binarized_weight(self) -> torch.Tensor:
        """The weight exactly as used in forward: +-alpha_o per output channel (or +-1 for `PlainSign`)."""
        if not self.binarize_weight:
            return self.weight
        return self.weight_quantizer(self.weight)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    # shape of alpha and bias broadcast over the output: (O, 1, 1) for a conv's (N, O, H, W)
    out_shape = (-1, 1, 1)

    def exact_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W_b / alpha, alpha) for binary-activation convs: the conv runs on signs and alpha (shaped
        ``out_shape``) scales its output, so a dot product of ±1 values is an exact integer in every runtime
        (torch, onnxruntime, the bitpack kernel) and the next layer's sign cannot flip on summation order. alpha
        is detached: the gradient reaching W_b is the same as for conv(x, W_b). alpha is None when the weight is
        not ±alpha per output channel (FP activations, the E2FIF warm-up)."""
        w = self.binarized_weight()
        if self.input_quantizer is None or not self.binarize_weight:
            return w, None
        alpha = w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
        alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
        return w / alpha, alpha.view(self.out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, alpha = self.exact_weight()
        if alpha is None:
            return self._conv_forward(self.quantize_input(x), w, self.bias)
        y = self._conv_forward(self.quantize_input(x), w, None) * alpha
        return y if self.bias is None else y + self.bias.view(self.out_shape)


class BinaryLinear(BinaryConv2d):
    """A binary fully connected layer on tokens (..., C_in) -> (..., C_out), stored as a 1x1 `BinaryConv2d`
    (weight (C_out, C_in, 1, 1)) so that profiling and packing treat it as every other binary conv.

    Activation quantizers with per-channel parameters are switched to the last dimension (``channel_dim=-1``).
    """

    def __init__(self, in_features: int, out_features: int, input_quantizer=None, weight_quantizer=None, bias=True):
        super().__init__(in_features, out_features, 1, input_quantizer, weight_quantizer, bias=bias)
        if input_quantizer is not None and hasattr(input_quantizer, "channel_dim"):
            input_quantizer.channel_dim = -1

    out_shape = (-1,)  # tokens (..., O)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, alpha = self.exact_weight()
        if alpha is None:
            return F.linear(self.quantize_input(x), w.flatten(1), self.bias)
        y = F.linear(self.quantize_input(x), w.flatten(1)) * alpha
        return y if self.bias is None else y + self.bias


class QuantConv2d(nn.Conv2d):
    """Low-bit conv (stride 1, padding k//2): LSQ-quantized weights (`w_bits`) and inputs (`a_bits`), as in the
    quantized spatial re-scaling branch of EBSR-SQ (EBSR Table 4, "following [5]" = LSQ).

    Profiling counts its MACs as w_bits * a_bits bit operations (so OPs += MACs * w_bits * a_bits / 64) and its
    weight as w_bits bits per element in Params_bi.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, w_bits: int = 4, a_bits: int = 4, bias=True):
        super().__init__(in_ch, out_ch, kernel_size, stride=1, padding=kernel_size // 2, bias=bias)
        self.w_bits, self.a_bits = int(w_bits), int(a_bits)
        self.weight_quantizer = LsqQuantizer(w_bits, signed=True)
        self.weight_quantizer.init_from(self.weight)
        self.input_quantizer = LsqQuantizer(a_bits, signed=True, step_init=4.0 / 2 ** max(a_bits - 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)
