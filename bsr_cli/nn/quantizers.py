"""Activation and weight binarizers, each owning its forward and its straight-through gradient.

Larq-style: a quantizer is a small callable module, independent of the layer that uses it
(`bsr_cli.nn.binary_conv.BinaryConv2d(input_quantizer=..., weight_quantizer=...)`).

Sign convention (docs/architecture.md): every binarizer maps 0 to +1, so that signs pack into bits.

Activation binarizers (input (N, C, H, W), or tokens (..., C) with ``channel_dim=-1``):
  - `ApproxSign`   sign(x), gradient of Bi-Real Net / BBCU Eq. 6: 2+2x on [-1,0), 2-2x on [0,1), 0 elsewhere.
  - `RSign`        sign(x - beta_c) (ReActNet), learnable per-channel threshold, ApproxSign gradient.
  - `ScaledSign`   EBSR Eq. 2: alpha * sign((x - beta_c) / alpha), gradients EBSR Eq. 3 (alpha) and Eq. 4 (beta).
  - `ScalesSign`   SCALES Eq. 1-3: layer-wise scale alpha with channel-wise threshold beta_c.
Weight binarizers (weight (C_out, ...)):
  - `MeanAbsSign`        XNOR-Net / BBCU: alpha_o = mean|W_o| (detached) * sign(W), gradient of clamp(W, -1, 1).
  - `LearnableScaleSign` Ma et al. 2019 Eq. 4: alpha_o a trained parameter, alpha_o * sign(W).
  - `PlainSign`          E2FIF: sign(W) without scale, identity straight-through gradient.
Low-bit (not binary):
  - `LsqQuantizer`       LSQ (Esser et al. 2020) uniform quantizer with a learned step, used by EBSR-SQ.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "sign",
    "approx_sign_grad",
    "ApproxSign",
    "RSign",
    "ScaledSign",
    "ScalesSign",
    "MeanAbsSign",
    "LearnableScaleSign",
    "PlainSign",
    "LsqQuantizer",
]


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (0 maps to +1: the Larq convention, so signs pack into bits)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def approx_sign_grad(x: torch.Tensor) -> torch.Tensor:
    """d ApproxSign / dx of BBCU Eq. 6 (Bi-Real Net): 2+2x on [-1,0), 2-2x on [0,1), 0 elsewhere = max(0, 2-2|x|)."""
    return torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


def _channel_view(p: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Reshape a per-channel vector so that it broadcasts along `channel_dim` of x."""
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    return p.view(shape)


# ----------------------------------------------------------------------------------------------- activations
class _ApproxSignFn(torch.autograd.Function):
    """Forward sign(x) (0 -> +1); backward grad * max(0, 2 - 2|x|) (BBCU Eq. 6)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * approx_sign_grad(x).to(grad.dtype)


class ApproxSign(nn.Module):
    """Bi-Real Net / BBCU activation binarizer: forward sign, backward the piecewise-linear ApproxSign
    derivative of BBCU Eq. 6 (used by E2FIF as grad * max(0, 2 - |2x|), the same function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ApproxSignFn.apply(x)


class RSign(nn.Module):
    """ReActNet RSign: sign(x - beta_c), beta learnable per channel (init 0), ApproxSign gradient.

    BBCU writes it as sign(x + b0) ("move0"), the same function with b0 = -beta. The gradient w.r.t. beta is
    -ApproxSign'(x - beta), summed over the non-channel dimensions.
    """

    def __init__(self, channels: int, channel_dim: int = 1):
        super().__init__()
        self.channel_dim = channel_dim
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ApproxSignFn.apply(x - _channel_view(self.beta, x, self.channel_dim))


class _ScaledSignFn(torch.autograd.Function):
    """x_hat = alpha * sign(u), u = (x - beta) / alpha, with the gradients stated in EBSR Eq. 3-4:

    d x_hat / d x     = ApproxSign'(u)                        (= 2+2u on (-1,0], 2-2u on (0,1], else 0)
    d x_hat / d beta  = -ApproxSign'(u)                       (EBSR Eq. 4)
    d x_hat / d alpha = sign(u) - u * ApproxSign'(u)           (EBSR Eq. 3: -1; -2u^2-2u-1; 2u^2-2u+1; 1)
    """

    @staticmethod
    def forward(ctx, x, beta, alpha):
        u = (x - beta) / alpha
        ctx.save_for_backward(u)
        ctx.beta_shape = beta.shape
        ctx.alpha_shape = alpha.shape
        return alpha * sign(u)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        d = approx_sign_grad(u).to(grad.dtype)
        gx = grad * d
        gbeta = (-gx).sum_to_size(ctx.beta_shape)
        galpha = (grad * (sign(u) - u * d)).sum_to_size(ctx.alpha_shape)
        return gx, gbeta, galpha


class ScaledSign(nn.Module):
    """EBSR Eq. 2: x_hat = alpha * sign((x - beta_c) / alpha).

    alpha: one learnable scale per activation tensor (per layer), init `alpha_init`; beta_c: learnable per-channel
    threshold (RSign, init 0) unless ``threshold=False`` (EBSR's E-Conv replaces the fixed beta by the
    input-dependent channel shift C_s(A) of Eq. 6). Gradients: EBSR Eq. 3 (alpha) and Eq. 4 (beta), see
    `_ScaledSignFn`. alpha * sign(.) is +-alpha, so a conv fed by it is still an XNOR-popcount conv whose output
    is scaled by alpha.
    """

    def __init__(self, channels: int, threshold: bool = True, alpha_init: float = 1.0, channel_dim: int = 1):
        super().__init__()
        self.channel_dim = channel_dim
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.beta = nn.Parameter(torch.zeros(channels)) if threshold else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.beta is None:
            beta = x.new_zeros([1] * x.dim())
        else:
            beta = _channel_view(self.beta, x, self.channel_dim)
        return _ScaledSignFn.apply(x, beta.to(x.dtype), self.alpha.to(x.dtype))


class ScalesSign(ScaledSign):
    """SCALES Eq. 1-3: activation binarizer with a layer-wise scaling factor alpha and a channel-wise
    learnable threshold beta_c, both learned end to end through the STE (Eq. 2 for alpha, Eq. 3 for beta).

    SCALES (arXiv 2303.12270 v2) is the revised EBSR (v1) by the same authors; its Eq. 1-3 restate EBSR
    Eq. 2-4 (per-layer alpha, per-channel beta, piecewise-polynomial STE), so this is `ScaledSign` with its
    threshold always on. Kept as its own name so that a model reads as the paper it implements.
    """

    def __init__(self, channels: int, alpha_init: float = 1.0, channel_dim: int = 1):
        super().__init__(channels, threshold=True, alpha_init=alpha_init, channel_dim=channel_dim)


# ----------------------------------------------------------------------------------------------- weights
class _MeanAbsSignFn(torch.autograd.Function):
    """Forward alpha_o * sign(W) with alpha_o = mean |W_o| (no gradient through alpha); backward the gradient
    of clamp(W, -1, 1): grad where |W| <= 1, else 0 (BBCU HardBinaryConv / XNOR-Net)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        dims = tuple(range(1, w.dim()))
        alpha = w.abs().mean(dim=dims, keepdim=True)
        return alpha * sign(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


class MeanAbsSign(nn.Module):
    """XNOR-Net / BBCU / EBSR Eq. 1 weight binarizer: W_b = (||W_o||_1 / n) * sign(W), one alpha per output
    channel, alpha detached; straight-through gradient of clamp(W, -1, 1)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _MeanAbsSignFn.apply(w)


class _ClampSteSignFn(torch.autograd.Function):
    """Forward sign(W); backward grad where |W| <= 1 (BinaryConnect clip)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return sign(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


class LearnableScaleSign(nn.Module):
    """Ma et al. 2019 (Eq. 4 instead of Eq. 5): W_b = alpha_o * sign(W) with alpha_o a trained parameter, one
    per binary filter (output channel), rather than the deterministic mean|W| of Eq. 3.

    Gradients: d L / d alpha_o = sum over the filter of (d L / d W_b) * sign(W)  (alpha learned like any weight);
    d L / d W = alpha_o * (d L / d W_b) where |W| <= 1, else 0 (the real-valued weight keeps its gradient,
    "clipped" as in BinaryConnect, Algorithm 2). alpha is initialised to mean|W_o| of the initial weights
    (Eq. 3), see `init_from`.
    """

    def __init__(self, out_channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(out_channels))

    @torch.no_grad()
    def init_from(self, w: torch.Tensor) -> None:
        self.alpha.copy_(w.abs().mean(dim=tuple(range(1, w.dim()))))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view([-1] + [1] * (w.dim() - 1)).to(w.dtype)
        return alpha * _ClampSteSignFn.apply(w)


class _IdentitySteSignFn(torch.autograd.Function):
    """Forward sign(W); backward identity (no clipping), as E2FIF's weight binarizer."""

    @staticmethod
    def forward(ctx, w):
        return sign(w)

    @staticmethod
    def backward(ctx, grad):
        return grad


class PlainSign(nn.Module):
    """E2FIF weight binarizer: sign(W), no scaling factor, identity straight-through gradient."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _IdentitySteSignFn.apply(w)


# ----------------------------------------------------------------------------------------------- low-bit
class _LsqFn(torch.autograd.Function):
    """LSQ (Esser et al., ICLR 2020): q = round(clamp(x / s, Qn, Qp)) * s.

    d q / d x = 1 inside [Qn, Qp] (in units of s), else 0;
    d q / d s = (round(x/s) - x/s) inside, Qn or Qp outside; times the gradient scale g = 1 / sqrt(numel * Qp).
    """

    @staticmethod
    def forward(ctx, x, s, qn, qp, g):
        v = x / s
        ctx.save_for_backward(v)
        ctx.qn, ctx.qp, ctx.g, ctx.s_shape = qn, qp, g, s.shape
        return torch.round(torch.clamp(v, qn, qp)) * s

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        qn, qp = ctx.qn, ctx.qp
        lo, hi = v < qn, v > qp
        inside = ~(lo | hi)
        gx = grad * inside.to(grad.dtype)
        ds = torch.where(inside, torch.round(v) - v, torch.where(lo, torch.full_like(v, qn), torch.full_like(v, qp)))
        gs = (grad * ds * ctx.g).sum_to_size(ctx.s_shape)
        return gx, gs, None, None, None


class LsqQuantizer(nn.Module):
    """LSQ uniform quantizer with `bits` bits and a learned step s (per tensor).

    signed: levels [-2^(b-1), 2^(b-1)-1]; unsigned: [0, 2^b - 1]. The step is initialised to `step_init`
    (a constant, not from the first batch, so forward has no data-dependent Python branch); weight quantizers
    call `init_from(w)` with LSQ's 2 * mean|w| / sqrt(Qp).
    """

    def __init__(self, bits: int, signed: bool = True, step_init: float = 0.1):
        super().__init__()
        self.bits = int(bits)
        self.signed = signed
        self.qn = -(2 ** (bits - 1)) if signed else 0
        self.qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.step = nn.Parameter(torch.tensor(float(step_init)))

    @torch.no_grad()
    def init_from(self, w: torch.Tensor) -> None:
        self.step.fill_(max(2 * w.abs().mean().item() / math.sqrt(max(self.qp, 1)), 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(x.numel() * max(self.qp, 1))
        return _LsqFn.apply(x, self.step.to(x.dtype), float(self.qn), float(self.qp), g)
