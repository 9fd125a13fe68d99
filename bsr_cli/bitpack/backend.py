"""`convert_model`: a copy of a zoo model whose binary convs run on the XNOR-popcount kernel (inference only).

Two rewrites of the copy:
  1. every `BinaryConv2d` with a supported binary input quantizer becomes a `BitpackConv2d` (weights sign-packed
     once, here): out = conv(quantizer(x), binarized_weight) + bias, computed as scale_o * (n - 2 popcount) + bias_o;
  2. every `BinaryUnit` around such a conv becomes a `FusedBinaryUnit`, which hands its re-scaling maps,
     BatchNorm, (R)PReLU / LeakyReLU, FP shortcut, and the LeakyReLU between the two units of a
     `BinaryResBlock`, to the kernel's fused epilogue, so one call writes the unit's output.
Anything else (FP convs, upsamplers, attention blocks, quantizers the kernel does not know) stays the reference
PyTorch module, so every model runs; `model.bitpack_skipped` lists binary convs left on the reference path.
The copy keeps `head`, `body`, `upsampler`, `tail` and `scale`, and feeds the network channels-last tensors.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from bsr_cli.bitpack import kernel
from bsr_cli.errors import BsrError
from bsr_cli.nn.binary_conv import BinaryConv2d, BinaryLinear
from bsr_cli.nn.blocks import BinaryResBlock, BinaryUnit, RPReLU
from bsr_cli.nn.quantizers import ApproxSign, RSign, ScaledSign
from bsr_cli.nn.rescaling import SpatialRescale

__all__ = ["BitpackConv2d", "BitpackSpatialRescale", "FusedBinaryUnit", "convert_model"]


def _input_binarizer(q: nn.Module) -> tuple[torch.Tensor | None, float] | None:
    """(shift, activation scale) with quantizer(x) == act_scale * sign(x + shift); None if not expressible.

    ApproxSign: sign(x). RSign: sign(x - beta), shift = -beta (x + (-beta) rounds exactly as x - beta).
    ScaledSign / ScalesSign: alpha * sign((x - beta) / alpha) = alpha * sign(x - beta) for alpha > 0.
    """
    if getattr(q, "channel_dim", 1) not in (1, -1):
        return None
    if type(q) is ApproxSign:
        return None, 1.0
    if type(q) is RSign:
        return -q.beta.detach().float(), 1.0
    if isinstance(q, ScaledSign):
        alpha = float(q.alpha.detach())
        if not alpha > 0:
            return None
        return (None if q.beta is None else -q.beta.detach().float()), alpha
    return None


class BitpackConv2d(nn.Module):
    """Inference-only replacement of a binary-activation `BinaryConv2d` (stride 1, padding k//2, groups 1)."""

    def __init__(self, conv: BinaryConv2d, threads: int | None = None):
        super().__init__()
        shift, act_scale = _input_binarizer(conv.input_quantizer)
        with torch.no_grad():
            wb = conv.binarized_weight().detach().float()  # +-alpha_o per output channel, exactly as forward
        alpha = wb.abs().flatten(1).amax(dim=1)
        if not torch.equal(wb.abs().flatten(1).amin(dim=1), alpha):
            raise ValueError("binarized weight is not +-alpha per output channel")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size[0]
        self.threads = threads
        wbits, _ = kernel.pack_weight_signs(wb)
        self.register_buffer("wbits", wbits)
        self.register_buffer("scale", (alpha * act_scale).contiguous())
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.contiguous())
        self.register_buffer("shift", shift)  # None: no threshold
        self.register_buffer("wsign", torch.where(wb < 0, -1, 1).to(torch.int8), persistent=False)
        self.amx_tiles = kernel.amx_weight_tiles(wbits, self.in_channels, self.out_channels)  # None without AMX

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, xnor-popcount"

    def forward(self, x: torch.Tensor, **epilogue) -> torch.Tensor:
        shift = epilogue.pop("shift", self.shift)
        if _traced():
            for key in ("row_sums", "next_spatial", "packed_input", "pack_next"):
                epilogue.pop(key, None)
            return self._torch_forward(x, shift, **epilogue)
        return kernel.binary_conv(
            x, self.wbits, self.out_channels, self.kernel_size, self.scale, self.bias, shift=shift,
            threads=self.threads, amx_tiles=self.amx_tiles, **epilogue,
        )


    def _torch_forward(self, x, shift=None, smap=None, cmap=None, scale2=None, bias2=None, slope=None,
                       post_bias=None, residual=None, post_slope=None):
        """The same function in PyTorch ops (the kernel's epilogue order), for op-tracing modes."""
        v = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
        a = x.float() if shift is None else x.float() + (shift.view(x.shape[0], -1, 1, 1) if shift.dim() == 4 else v(shift))
        one = torch.ones_like(a)  # derived from a, so op-tracing modes follow the data through the sign
        sx = torch.where(a < 0, -one, one)
        y = F.conv2d(sx, self.wsign.float(), padding=self.kernel_size // 2) * v(self.scale) + v(self.bias)
        if cmap is not None:
            y = y * cmap
        if smap is not None:
            y = y * smap
        if scale2 is not None:
            y = y * v(scale2) + v(bias2)
        if slope is not None:
            y = torch.where(y >= 0, y, v(slope) * y)
        if post_bias is not None:
            y = y + v(post_bias)
        if residual is not None:
            y = y + residual
        if post_slope is not None:
            y = torch.where(y >= 0, y, v(post_slope) * y)
        return y


def _traced() -> bool:
    """True inside a TorchFunctionMode that follows ops (e.g. bsr's receptive-field probe): the kernel is opaque
    to such modes, so the PyTorch form runs instead. bsr's tiling GlobalMeans mode only swaps global means and
    keeps the kernel."""
    if not torch._C._is_torch_function_mode_enabled():
        return False
    from torch.overrides import _get_current_function_mode_stack

    from bsr_cli.tiling import GlobalMeans

    return any(not isinstance(m, GlobalMeans) for m in _get_current_function_mode_stack())


class BitpackLinear(BitpackConv2d):
    """`BinaryLinear` on tokens (..., C_in): a 1x1 conv over a (1, C_in, 1, tokens) channels-last view, which is
    the token matrix itself (no copy)."""

    def forward(self, x: torch.Tensor, **epilogue) -> torch.Tensor:
        lead, c = x.shape[:-1], x.shape[-1]
        rows = x.reshape(-1, c).float().contiguous()
        y = super().forward(rows.view(1, 1, -1, c).permute(0, 3, 1, 2), **epilogue)  # (1, O, 1, M) channels-last
        return y.permute(0, 2, 3, 1).reshape(*lead, self.out_channels)


class BitpackSpatialRescale(nn.Module):
    """`SpatialRescale` (EBSR Eq. 5, SCALES Eq. 4) with its FP C -> 1 conv and sigmoid computed by the kernel's
    `spatial` routine: one K*K*C dot product per pixel instead of a 1-output-channel oneDNN conv."""

    def __init__(self, rescale: SpatialRescale, threads: int | None = None):
        super().__init__()
        conv = rescale.conv
        self.register_buffer("weight", conv.weight.detach().float().clone())
        self.register_buffer("taps", self.weight[0].permute(1, 2, 0).contiguous(), persistent=False)  # [K, K, C]
        self.bias = float(conv.bias.detach()) if conv.bias is not None else 0.0
        self.threads = threads
        self.reference = rescale  # op-tracing modes (receptive-field probe) run the PyTorch form

    @staticmethod
    def supported(m: nn.Module) -> bool:
        conv = getattr(m, "conv", None)
        return (type(m) is SpatialRescale and type(conv) is nn.Conv2d and conv.out_channels == 1
                and conv.groups == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
                and conv.kernel_size[0] == conv.kernel_size[1] and conv.kernel_size[0] % 2 == 1
                and conv.padding == (conv.kernel_size[0] // 2,) * 2 and conv.padding_mode == "zeros")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if _traced() or a.device.type != "cpu":
            return self.reference(a)
        cached = getattr(a, SMAP_ATTR, None)  # computed by the previous unit's kernel call (FusedBinaryUnit)
        if cached is not None and cached[0] is self and not torch._C._is_torch_function_mode_enabled():
            return cached[1]
        return kernel.spatial_map(a, self.weight, self.bias, threads=self.threads)


def _convert_conv(conv: nn.Module, threads: int | None) -> nn.Module | None:
    if not _supported(conv):
        return None
    return BitpackLinear(conv, threads) if isinstance(conv, BinaryLinear) else BitpackConv2d(conv, threads)


def _supported(conv: nn.Module) -> bool:
    q = getattr(conv, "input_quantizer", None)
    linear = isinstance(conv, BinaryLinear)
    return (
        isinstance(conv, BinaryConv2d)
        and q is not None
        and getattr(q, "channel_dim", -1 if linear else 1) == (-1 if linear else 1)
        and (not linear or conv.kernel_size == (1, 1))
        and conv.groups == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.kernel_size[0] % 2 == 1
        and conv.padding == (conv.kernel_size[0] // 2,) * 2
        and conv.padding_mode == "zeros"
        and _input_binarizer(conv.input_quantizer) is not None
    )


def _slope(act: nn.Module, channels: int) -> torch.Tensor | None:
    """Per-channel negative slope of a (leaky) ReLU-type activation, or None when it is not one."""
    if isinstance(act, nn.LeakyReLU):
        return torch.full((channels,), float(act.negative_slope))
    if isinstance(act, nn.ReLU):
        return torch.zeros(channels)
    if isinstance(act, nn.PReLU):
        return act.weight.detach().float().expand(channels).contiguous()
    return None


MEANS_ATTR = "_bsr_channel_means"
SMAP_ATTR = "_bsr_next_spatial_map"  # (BitpackSpatialRescale, its map of this tensor), set by FusedBinaryUnit
PACK_ATTR = "_bsr_packed_rows"  # (BitpackConv2d, kernel.PackedRows of sign(this tensor + its shift)), the same


class CachedGlobalMean(nn.Module):
    """`AdaptiveAvgPool2d(1)` of a re-scaling branch that takes the means a `FusedBinaryUnit` computed while its
    kernel wrote the tensor (attribute ``_bsr_channel_means``), instead of reading the 4 MB map again. Any other
    input, and every call under a torch function mode (bsr's tiling injects whole-image means through
    adaptive_avg_pool2d), pools as before."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        means = getattr(a, MEANS_ATTR, None)
        if (means is not None and means.shape == (a.shape[0], a.shape[1], 1, 1)
                and not torch._C._is_torch_function_mode_enabled()):
            return means
        return F.adaptive_avg_pool2d(a, 1)

    @staticmethod
    def replaces(m: nn.Module) -> bool:
        return type(m) is nn.AdaptiveAvgPool2d and m.output_size in (1, (1, 1))


class FusedBinaryUnit(nn.Module):
    """A `BinaryUnit` (see bsr_cli.nn.blocks) whose conv is a `BitpackConv2d`, with its epilogue fused:

        y = conv(a) * C_r(x) * S(x);  y = act(norm(y));  out = y + x;  out = post_act(out)

    norm: Identity or eval BatchNorm -> y * scale2 + bias2; act: Identity, RPReLU (-gamma into bias2, slope, zeta
    as post_bias), PReLU / LeakyReLU / ReLU (slope); post_act: the LeakyReLU that follows in a `BinaryResBlock`.
    """

    def __init__(self, unit: BinaryUnit):
        super().__init__()
        conv: BitpackConv2d = unit.conv
        o = conv.out_channels
        self.conv, self.shift_rescale, self.rescalers = conv, unit.shift_rescale, unit.rescalers
        self.shortcut = unit.shortcut
        self.norm, self.act = unit.norm, unit.act  # kept for the unfused path
        self.post_act: nn.Module = nn.Identity()
        scale2 = bias2 = slope = post_bias = None
        if isinstance(unit.norm, nn.BatchNorm2d):
            bn = unit.norm
            scale2 = (bn.weight.detach() if bn.affine else torch.ones(o)) / torch.sqrt(bn.running_var + bn.eps)
            bias2 = (bn.bias.detach() if bn.affine else torch.zeros(o)) - bn.running_mean * scale2
        act = unit.act
        if isinstance(act, RPReLU):
            scale2 = torch.ones(o) if scale2 is None else scale2
            bias2 = -act.gamma.detach() if bias2 is None else bias2 - act.gamma.detach()
            slope, post_bias = _slope(act.prelu, o), act.zeta.detach()
        elif not isinstance(act, nn.Identity):
            slope = _slope(act, o)
        self.epilogue = {"scale2": scale2, "bias2": bias2, "slope": slope, "post_bias": post_bias}
        self.epilogue = {k: v.float().contiguous() for k, v in self.epilogue.items() if v is not None}
        # set by convert_model when the output reaches the next unit unchanged and a branch there pools it, and
        # to (that unit's BitpackSpatialRescale,) when it has one (its map is then computed in this kernel call;
        # a tuple, so that the module is not registered a second time as a child of this one)
        self.emit_means = False
        self.emit_spatial: tuple = ()
        # (the next unit's BitpackConv2d,) when that unit binarizes this output with a fixed threshold (no
        # input-dependent shift): this kernel call also packs the output for it, and that call skips its packing pass
        self.emit_packed: tuple = ()

    @staticmethod
    def fusable(unit: nn.Module) -> bool:
        if type(unit) is not BinaryUnit or not isinstance(unit.conv, BitpackConv2d):
            return False
        norm_ok = isinstance(unit.norm, nn.Identity) or (
            isinstance(unit.norm, nn.BatchNorm2d) and unit.norm.track_running_stats and unit.norm.running_var is not None
        )
        act = unit.act
        act_ok = isinstance(act, (nn.Identity, RPReLU)) or _slope(act, 1) is not None
        if isinstance(act, RPReLU):
            act_ok = act.prelu.weight.numel() in (1, act.gamma.numel())
        return norm_ok and act_ok

    def set_post_act(self, act: nn.Module) -> bool:
        """Fuse the activation that follows this unit; False (nothing changed) when it is not a leaky ReLU."""
        slope = _slope(act, self.conv.out_channels)
        if slope is None and not isinstance(act, nn.Identity):
            return False
        self.post_act = act
        if slope is not None:
            self.epilogue["post_slope"] = slope.float().contiguous()
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, shift, maps = x, self.conv.shift, []
        if self.shift_rescale is not None:
            s, scale = self.shift_rescale(x)
            maps.append(scale)
            if shift is None and s.shape == (x.shape[0], x.shape[1], 1, 1):
                shift = -s  # per-sample threshold: x + (-s) rounds exactly as the reference's x - s
            else:
                a = x - s
        maps += [r(x) for r in self.rescalers]
        n, o, h, w = x.shape[0], self.conv.out_channels, x.shape[2], x.shape[3]
        cmap = smap = None
        for m in maps:
            if m.shape == (n, o, 1, 1):
                cmap = m if cmap is None else cmap * m
            elif m.shape == (n, 1, h, w):
                smap = m if smap is None else smap * m
            else:  # a map the epilogue cannot take: reference order in PyTorch
                return self._unfused(a, shift, maps, x)
        residual = x if self.shortcut else None
        traced = _traced()
        sums = torch.zeros(n, h, o) if self.emit_means and not traced else None
        extra = {}
        modes = traced or torch._C._is_torch_function_mode_enabled()
        nxt = self.emit_spatial[0] if self.emit_spatial and not modes else None
        if nxt is not None:
            smap_next = torch.empty(n, 1, h, w)
            extra["next_spatial"] = (nxt.taps, nxt.bias, smap_next)
        packed = getattr(x, PACK_ATTR, None)  # made by the previous unit's call for this conv and this threshold
        if packed is not None and packed[0] is self.conv and a is x and shift is self.conv.shift and not modes:
            extra["packed_input"] = packed[1]
        consumer = self.emit_packed[0] if self.emit_packed and not modes else None
        if consumer is not None:
            rows = kernel.PackedRows(n, h, w, o)
            extra["pack_next"] = (consumer.shift, rows)
        y = self.conv(a, shift=shift, cmap=cmap, smap=smap, residual=residual, row_sums=sums, **extra,
                      **self.epilogue)
        if sums is not None:  # global means of y for the next unit's CachedGlobalMean (no second pass)
            setattr(y, MEANS_ATTR, (sums.sum(1) / (h * w)).view(n, o, 1, 1))
        if nxt is not None:  # the next unit's spatial map of y, computed while y's rows were in cache
            setattr(y, SMAP_ATTR, (nxt, smap_next))
        if consumer is not None:  # y packed for the next unit's conv, row by row after the epilogue
            setattr(y, PACK_ATTR, (consumer, rows))
        return y

    def _unfused(self, a, shift, maps, x):
        y = self.conv(a, shift=shift)
        for m in maps:
            y = y * m
        y = self.act(self.norm(y))
        return self.post_act(y + x if self.shortcut else y)


def _replace(module: nn.Module, fn) -> None:
    """Post-order walk: replace each child c by fn(c) when fn returns a module."""
    for name, child in list(module.named_children()):
        _replace(child, fn)
        new = fn(child)
        if new is not None:
            setattr(module, name, new)


def _to_channels_last(_module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        x = x.float().contiguous(memory_format=torch.channels_last)
    return (x,) + tuple(args[1:])


def _contiguous_output(_module, _args, out):
    return out.contiguous() if isinstance(out, torch.Tensor) else out


# The FP parts after the body. The head stays fp32: the body binarizes its output, and bf16 rounding there flips
# signs (a tiled and an untiled e2fif upscale then differed by up to 19/255 in places); after the body rounding
# only moves output values by about a grey level.
BF16_PARTS = ("upsampler", "tail")
FLOAT_PRECISIONS = ("fp32", "bf16")


class Bf16FloatPart(nn.Module):
    """An FP part of the network after the body (upsampler, tail) run under bf16 autocast (oneDNN's native bf16
    convs on AMX / AVX512-BF16), its output back in float32. Changes the output by bf16 rounding (8-bit mantissa)."""

    def __init__(self, part: nn.Module):
        super().__init__()
        self.part = part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.part(x)
        return y.float()


def _bf16_parts(model: nn.Module) -> list[str]:
    """The model's FP parts after the body that have float convs (an Identity tail, say, is not one)."""
    return [name for name in BF16_PARTS
            if any(type(m) in (nn.Conv2d, nn.Linear) for m in getattr(model, name, nn.Identity()).modules())]


def convert_model(model: nn.Module, threads: int | None = None, float_precision: str = "fp32") -> nn.Module:
    """A copy of `model` (eval mode) running its binary-activation convs on the bitpack kernel.

    `threads`: kernel threads (default: torch.get_num_threads() at each call). `float_precision`: that of the FP
    parts after the body, see `set_float_precision` (default fp32: the reference's numbers). Raises BsrError with
    a one-line reason when the compiled kernel is not available.
    """
    return set_float_precision(_convert(model, threads), float_precision)


def set_float_precision(m: nn.Module, float_precision: str) -> nn.Module:
    """`m` (a `convert_model` copy) with its upsampler and tail in fp32 or in bf16 autocast (`Bf16FloatPart`);
    records the choice in ``m.float_precision``. (Which one to use: `bsr_cli.backends.float_precision_for`.)"""
    if float_precision not in FLOAT_PRECISIONS:
        raise BsrError(f"unknown float precision {float_precision!r} (use one of {', '.join(FLOAT_PRECISIONS)})")
    for name in BF16_PARTS:
        part = getattr(m, name, None)
        if isinstance(part, Bf16FloatPart) and float_precision == "fp32":
            setattr(m, name, part.part)
        elif float_precision == "bf16" and name in _bf16_parts(m) and not isinstance(part, Bf16FloatPart):
            setattr(m, name, Bf16FloatPart(part))
    m.float_precision = float_precision
    return m


def _convert(model: nn.Module, threads: int | None) -> nn.Module:
    ok, reason = kernel.bitpack_available()
    if not ok:
        raise BsrError(f"backend bitpack unavailable: {reason}")
    m = copy.deepcopy(model).eval()
    skipped: list[str] = []
    for name, mod in m.named_modules():
        if isinstance(mod, BinaryConv2d) and mod.input_quantizer is not None and not _supported(mod):
            skipped.append(f"{name} ({type(mod).__name__}, {type(mod.input_quantizer).__name__})")
    with torch.no_grad():
        _replace(m, lambda c: _convert_conv(c, threads))
        _replace(m, lambda c: BitpackSpatialRescale(c, threads) if BitpackSpatialRescale.supported(c) else None)
        _replace(m, lambda c: FusedBinaryUnit(c) if FusedBinaryUnit.fusable(c) else None)
        for block in m.modules():
            if isinstance(block, BinaryResBlock) and isinstance(block.unit1, FusedBinaryUnit):
                if block.unit1.set_post_act(block.mid_act):
                    block.mid_act = nn.Identity()
        _link_units(m)
    m.requires_grad_(False)
    m.register_forward_pre_hook(_to_channels_last)
    m.register_forward_hook(_contiguous_output)
    m.bitpack_skipped = skipped
    m.backend = "bitpack"
    return m


def _link_units(model: nn.Module) -> None:
    """Fused units whose output goes unchanged into the next fused unit hand it their output's channel means
    (kernel row sums), and that unit's re-scaling branches take them (`CachedGlobalMean`); the kernel call also
    computes that unit's spatial map of the output (`BitpackSpatialRescale` takes it, no second pass) and, when
    that unit's threshold is fixed (no input-dependent shift: E2FIF, BBCU), packs the output for its conv
    (`emit_packed`: the next call skips its packing pass). Two such hand-offs:
    unit1 -> unit2 inside a `BinaryResBlock` whose middle activation is fused, and unit2 -> the next block's
    unit1 in a Sequential body when the block has no block skip. Anywhere else an op (a skip add, an in-place
    activation) may stand between the kernel's output and the pooling, and the branch pools as before."""
    pairs = []
    for mod in model.modules():
        if isinstance(mod, BinaryResBlock) and isinstance(mod.mid_act, nn.Identity):
            pairs.append((mod.unit1, mod.unit2))
        if isinstance(mod, nn.Sequential):
            for a, b in zip(mod, list(mod)[1:]):
                if isinstance(a, BinaryResBlock) and isinstance(b, BinaryResBlock) and not a.block_skip:
                    pairs.append((a.unit2, b.unit1))
    for src, dst in pairs:
        if not (isinstance(src, FusedBinaryUnit) and isinstance(dst, FusedBinaryUnit)):
            continue
        spatial = [r for r in dst.rescalers if isinstance(r, BitpackSpatialRescale)]
        if spatial and spatial[0].taps.shape[-1] == src.conv.out_channels:
            src.emit_spatial = (spatial[0],)
        pools = 0
        for branch in [dst.shift_rescale, *dst.rescalers]:
            if branch is None:
                continue
            for parent in branch.modules():
                for name, child in list(parent.named_children()):
                    if CachedGlobalMean.replaces(child):
                        setattr(parent, name, CachedGlobalMean())
                        pools += 1
        src.emit_means = pools > 0
        if dst.shift_rescale is None:
            src.emit_packed = (dst.conv,)


def kernel_coverage(model: nn.Module) -> dict:
    """What the bitpack backend runs of ``model`` (`convert_model` takes exactly the convs counted in ``on_kernel``):
    ``binary`` 1-bit-weight convs/linears, ``binary_activation`` those with 1-bit inputs too (XNOR-popcount
    candidates), ``on_kernel`` those the kernel takes, ``binary_matmuls`` 1-bit attention matmuls (BiBERT; the
    kernel has no matmul: they run as float math), ``summary`` one line for ``bsr models --cost``."""
    from bsr_cli.nn.blocks import MatMul

    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    act = [m for m in convs if m.input_quantizer is not None]
    ok = [m for m in act if _supported(m)]
    matmuls = sum(isinstance(m, MatMul) and m.binary for m in model.modules())
    if not convs:
        summary = "none (full precision)"
    elif not act:
        summary = "none (FP activations: binary weights only)"
    else:
        summary = f"{len(ok)} of {len(act)} binary convs"
        if matmuls:
            summary += f"; {matmuls} binary matmuls as float"
    return {"binary": len(convs), "binary_activation": len(act), "on_kernel": len(ok), "binary_matmuls": matmuls,
            "summary": summary}


def count_bitpack_convs(model: nn.Module) -> int:
    return sum(isinstance(mod, BitpackConv2d) for mod in model.modules())
