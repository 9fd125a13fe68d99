"""Binary SwinIR-light (Liang et al. 2021): SCALES (arXiv 2303.12270 v2, Fig. 6b/8b) and its BiBERT baseline.

SwinIR-light: conv_first 3 -> 60 (head); 4 RSTBs of 6 Swin layers (window 8, 6 heads, MLP ratio 2) each
closed by a 3x3 conv with the RSTB skip, LayerNorm, conv_after_body, long skip (body); pixel-shuffle-direct
upsampler conv 60 -> 3s^2 + PixelShuffle (upsampler); the input is padded to a multiple of the window size
(reflect) and the output cropped, as SwinIR does. Written from the SwinIR paper's description (no code copied).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import SRNet, conv3x3
from bsr_cli.nn.binary_conv import BinaryConv2d, BinaryLinear
from bsr_cli.nn.blocks import BinaryUnit, MatMul
from bsr_cli.nn.quantizers import ApproxSign, MeanAbsSign, ScalesSign
from bsr_cli.nn.rescaling import Mul, SpatialRescale


class ScalesLinear(nn.Module):
    """SCALES binary linear (Fig. 6b, Eq. 4): BinLinear(ScalesSign(x)) * sigmoid(Linear_{C -> 1}(x)) per token.
    No channel re-scaling (LayerNorm removes channel-to-channel variation, SCALES §IV-C)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = BinaryLinear(cin, cout, ScalesSign(cin), MeanAbsSign())
        self.spatial = nn.Linear(cin, 1)
        self.mul = Mul()

    def forward(self, x):
        return self.mul(self.linear(x), torch.sigmoid(self.spatial(x)))


def bibert_linear(cin: int, cout: int) -> nn.Module:
    """BiBERT-style binary linear: sign activations (ApproxSign STE) x mean|W|*sign(W)."""
    return BinaryLinear(cin, cout, ApproxSign(), MeanAbsSign())


class _BoolFn(torch.autograd.Function):
    """BiBERT Bi-Attention "bool": 1 where x >= 0 else 0; gradient = ApproxSign'(x) / 2 (bool = (sign + 1) / 2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.clamp(1.0 - x.abs(), min=0.0)


def _window_partition(x, ws):  # (B, H, W, C) -> (B * nW, ws * ws, C)
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _window_reverse(win, ws, b, h, w):  # inverse of _window_partition
    c = win.shape[-1]
    x = win.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _shift_mask(h, w, ws, shift, device):
    """Swin shifted-window mask (nW, N, N): 0 within a region, -100 across regions."""
    img = torch.zeros(1, h, w, 1, device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = _window_partition(img, ws).squeeze(-1)  # (nW, N)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))


class WindowAttention(nn.Module):
    """(S)W-MSA with relative position bias. binary=True: BiBERT Bi-Attention (sign Q, K, V; bool(scores) in
    place of softmax; both matmuls binary)."""

    def __init__(self, dim, heads, ws, make_linear, binary: bool = False):
        super().__init__()
        self.heads, self.ws, self.binary = heads, ws, binary
        self.scale = (dim // heads) ** -0.5
        self.qkv = make_linear(dim, 3 * dim)
        self.proj = make_linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("rel_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1], persistent=False)
        self.qk = MatMul(binary)
        self.av = MatMul(binary)
        self.sign = ApproxSign() if binary else None

    def forward(self, x, mask=None):
        bn, n, c = x.shape
        qkv = self.qkv(x).reshape(bn, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.binary:
            q, k, v = self.sign(q), self.sign(k), self.sign(v)
        else:
            q = q * self.scale
        attn = self.qk(q, k.transpose(-2, -1))
        bias = self.rel_bias[self.rel_index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0).to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bn // nw, nw, self.heads, n, n) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(bn, self.heads, n, n)
        attn = _BoolFn.apply(attn) if self.binary else attn.softmax(dim=-1)
        out = self.av(attn, v).transpose(1, 2).reshape(bn, n, c)
        return self.proj(out)


class SwinLayer(nn.Module):
    def __init__(self, dim, heads, ws, shift, make_linear, binary_attn, mlp_ratio=2.0):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws, make_linear, binary_attn)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1, self.act, self.fc2 = make_linear(dim, hidden), nn.GELU(), make_linear(hidden, dim)

    def forward(self, x, hw):
        h, w = hw
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        mask = _shift_mask(h, w, self.ws, self.shift, x.device) if self.shift else None
        y = self.attn(_window_partition(y, self.ws), mask)
        y = _window_reverse(y, self.ws, b, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class RSTB(nn.Module):
    """Residual Swin Transformer block: 6 Swin layers, then a 3x3 conv (`make_conv`), plus the RSTB skip."""

    def __init__(self, dim, depth, heads, ws, make_linear, make_conv, binary_attn):
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(dim, heads, ws, 0 if i % 2 == 0 else ws // 2, make_linear, binary_attn) for i in range(depth)
        )
        self.conv = make_conv(dim)

    def forward(self, x, hw):
        y = x
        for layer in self.layers:
            y = layer(y, hw)
        b, n, c = x.shape
        img = y.transpose(1, 2).reshape(b, c, hw[0], hw[1])
        return self.conv(img).flatten(2).transpose(1, 2) + x


class SwinBody(nn.Module):
    """Image (N, C, H, W) -> image: LayerNorm(patch embed), RSTBs, LayerNorm, conv_after_body
    (`make_last_conv`, default `make_conv`)."""

    def __init__(self, dim, depths, heads, ws, make_linear, make_conv, binary_attn, make_last_conv=None):
        super().__init__()
        self.embed_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(RSTB(dim, d, heads, ws, make_linear, make_conv, binary_attn) for d in depths)
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = (make_last_conv or make_conv)(dim)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.embed_norm(x.flatten(2).transpose(1, 2))
        for blk in self.blocks:
            t = blk(t, (h, w))
        t = self.norm(t)
        return self.conv_after_body(t.transpose(1, 2).reshape(b, c, h, w))


class SwinIRNet(SRNet):
    """SRNet with SwinIR's pad-to-window-multiple (reflect) and crop."""

    pads_input = True  # its costs follow the padded size, not h * w (bsr_cli.profiling counts it at full size)

    def __init__(self, scale, head, body, upsampler, tail, window: int):
        super().__init__(scale, head, body, upsampler, tail, mean_shift=True, global_skip=True)
        self.window = window

    def forward(self, x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window, (-w) % self.window
        mode = "reflect" if ph < h and pw < w else "replicate"
        y = super().forward(F.pad(x, (0, pw, 0, ph), mode=mode))
        return y[..., : h * self.scale, : w * self.scale]


def _fp_conv(dim):
    return conv3x3(dim, dim)


def swinir_light(scale, make_linear, make_conv, binary_attn, dim=60, depths=(6, 6, 6, 6), heads=6, ws=8):
    """SwinIR-light with `make_linear` for every Swin linear and `make_conv` for the RSTB convs; conv_first,
    conv_after_body and the upsampler stay FP (SCALES Table IV's OPs and Params need the FP conv_after_body,
    docs/cost.md)."""
    body = SwinBody(dim, depths, heads, ws, make_linear, make_conv, binary_attn, make_last_conv=_fp_conv)
    up = nn.Sequential(conv3x3(dim, 3 * scale * scale), nn.PixelShuffle(scale))
    return SwinIRNet(scale, conv3x3(3, dim), body, up, nn.Identity(), ws)


_PAPER = "SCALES (Wei et al. 2023, arXiv 2303.12270v2)"


@register_model("scales-swinir", paper=_PAPER, family="swinir", binarized="Swin linears + RSTB convs")
def scales_swinir(scale: int) -> nn.Module:
    """Binary SwinIR-light with SCALES (Table IV): every linear of every Swin layer (qkv, proj, fc1, fc2) is a
    SCALES binary linear (ScalesSign, mean|W| weights, per-token spatial re-scaling Linear C->1 + sigmoid);
    every RSTB conv is a SCALES binary conv with its FP skip and a 1x1 spatial re-scaling branch.

    Choices (not stated in SCALES): the attention is the BiBERT baseline's Bi-Attention (binary Q.K^T and A.V
    matmuls): FP matmuls would add ~17.6 G to Table IV's 3.9 G. conv_first, conv_after_body and the upsampler
    stay FP: Table IV's OPs (SwinIR's flops() counter, docs/cost.md) and Params (93K = 86K + the spatial
    linears) both include an FP conv_after_body."""

    def make_conv(dim):
        conv = BinaryConv2d(dim, dim, 3, input_quantizer=ScalesSign(dim), weight_quantizer=MeanAbsSign())
        return BinaryUnit(conv, rescalers=[SpatialRescale(dim, 1)])

    return swinir_light(scale, ScalesLinear, make_conv, binary_attn=True)


@register_model("bibert-swinir", paper=_PAPER + " baseline: BiBERT", family="swinir",
                binarized="Swin linears, attention, RSTB convs")
def bibert_swinir(scale: int) -> nn.Module:
    """SCALES' Transformer baseline (Table IV "SwinIR-BiBERT"): BiBERT (Qin et al. ICLR 2022) binarization of
    SwinIR-light: sign activations x mean|W| weights in every Swin linear, Bi-Attention (sign Q, K, V,
    bool(scores) instead of softmax, binary matmuls); RSTB convs binary with an FP skip.

    Choices: BiBERT's direction-matching distillation is a training loss and lives outside the model;
    conv_first, conv_after_body and the upsampler stay FP (Table IV's 3.2 G and 86K count conv_after_body
    as FP: 86K = 1.6K conv_first + 32.4K conv_after_body + 25.9K upsampler + 25.7K binary weights / 32)."""

    def make_conv(dim):
        conv = BinaryConv2d(dim, dim, 3, input_quantizer=ApproxSign(), weight_quantizer=MeanAbsSign())
        return BinaryUnit(conv)

    return swinir_light(scale, bibert_linear, make_conv, binary_attn=True)
