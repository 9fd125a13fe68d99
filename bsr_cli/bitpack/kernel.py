"""Thin, checked wrappers over the C extension `_kernel` (XNOR-popcount conv; see _kernel.c for the maths).

All FP maps are float32 channels-last: a logical (N, C, H, W) tensor whose memory is NHWC.
"""
from __future__ import annotations

import os

import numpy as np
import torch

try:  # the extension is optional: a failed build leaves the package importable
    from bsr_cli.bitpack import _kernel
except ImportError as exc:  # pragma: no cover - depends on the build
    _kernel = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""

ISA_NAMES = {0: "portable C", 1: "AVX2", 2: "AVX-512 VPOPCNTDQ", 3: "AMX-INT8"}
ISA_LEVELS = {"generic": 0, "avx2": 1, "avx512": 2, "amx": 3}
ISA_ENV = "BSR_BITPACK_ISA"


def _isa_from_env(value: str | None) -> int:
    """The ISA level that BSR_BITPACK_ISA forces (generic | avx2 | avx512 | amx), -1 (run-time dispatch) when unset,
    empty or "auto"; ValueError for anything else."""
    value = (value or "").strip().lower()
    if value in ("", "auto"):
        return -1
    if value not in ISA_LEVELS:
        raise ValueError(f"{ISA_ENV}={value!r}: expected one of auto, {', '.join(ISA_LEVELS)}")
    return ISA_LEVELS[value]


try:  # read once, at import: every kernel call without an explicit isa= uses it
    FORCED_ISA, _ISA_ERROR = _isa_from_env(os.environ.get(ISA_ENV)), ""
except ValueError as exc:
    FORCED_ISA, _ISA_ERROR = -1, str(exc)


def _isa(isa: int | None) -> int:
    """isa=None: the level forced by BSR_BITPACK_ISA, else -1 (the best this CPU has, chosen in C)."""
    return FORCED_ISA if isa is None else isa


def bitpack_available() -> tuple[bool, str]:
    """(True, "<ISA>, <threads>") when the compiled kernel can run here, else (False, one-line reason)."""
    if _kernel is None:
        return False, "the C extension bsr_cli.bitpack._kernel was not built at install time; reinstall bsr with a C compiler (gcc or clang) available"
    if _ISA_ERROR:
        return False, _ISA_ERROR
    best = _kernel.best_isa()
    if FORCED_ISA > best:
        return False, f"{ISA_ENV} forces {ISA_NAMES.get(FORCED_ISA, FORCED_ISA)}, which this CPU lacks (best: {ISA_NAMES[best]})"
    threading = "OpenMP" if _kernel.openmp() else "single-threaded build"
    if FORCED_ISA >= 0:
        return True, f"{ISA_NAMES[FORCED_ISA]} (forced by {ISA_ENV}; best here: {ISA_NAMES[best]}), {threading}"
    return True, f"{ISA_NAMES[best]}, {threading}"


def require_kernel():
    """The extension module, checked once per call: built, and BSR_BITPACK_ISA (if set) runnable here."""
    if _kernel is None or _ISA_ERROR or FORCED_ISA > _kernel.best_isa():
        raise RuntimeError(bitpack_available()[1])
    return _kernel


def best_isa() -> int:
    """The best ISA level of this CPU (what run-time dispatch picks), whatever BSR_BITPACK_ISA says."""
    if _kernel is None:
        raise RuntimeError(bitpack_available()[1])
    return _kernel.best_isa()


def supported_isas() -> list[int]:
    """Every ISA level this CPU can run (0 = portable C up to best_isa()); each can be forced with isa=."""
    return list(range(best_isa() + 1))


def default_threads() -> int:
    return torch.get_num_threads() or os.cpu_count() or 1


def pack_weight_signs(weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pack sign bits (bit = weight < 0; 0 counts as +1) of an (O, C, K, K) weight, once at load.

    Layout [K, K, ceil(C/64), OP] of uint64 words (stored as int64), output channels innermost and padded to
    OP = a multiple of 8 (one AVX-512 register); padded channels and the high bits above C are 0.
    Returns (words, OP).
    """
    o, c, kh, kw = weight.shape
    cw, op = (c + 63) // 64, (o + 7) // 8 * 8
    bits = np.zeros((kh, kw, cw * 64, op), dtype=np.uint64)
    bits[:, :, :c, :o] = (weight.detach().cpu() < 0).permute(2, 3, 1, 0).numpy()
    bits = bits.reshape(kh, kw, cw, 64, op) << np.arange(64, dtype=np.uint64).reshape(1, 1, 1, 64, 1)
    words = torch.from_numpy(np.ascontiguousarray(np.bitwise_or.reduce(bits, axis=3)).view(np.int64))
    return _aligned64(words), op


def amx_weight_tiles(wbits: torch.Tensor, in_channels: int, out_channels: int) -> torch.Tensor | None:
    """The AMX-INT8 path's weight tiles (int8 +-1 in TDPBSSD's VNNI layout) of packed weights, made once per layer so
    that `binary_conv(..., amx_tiles=...)` does not rebuild them on every call; None where this CPU/build has no
    AMX path."""
    k = require_kernel()
    if k.best_isa() < 3:
        return None
    ks, op = wbits.shape[0], wbits.shape[-1]
    n = ks * ks * ((in_channels + 63) // 64) * ((out_channels + 15) // 16) * 1024
    tiles = _aligned64(torch.zeros(n, dtype=torch.int8))
    if not k.amx_tiles(wbits.data_ptr(), in_channels, out_channels, op, ks, tiles.data_ptr()):
        return None
    return tiles


def _aligned64(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `t` whose data starts on a 64-byte boundary: the kernel's 512-bit weight loads
    then never straddle two cache lines (measured ~20% faster popcount loop than 16-byte-aligned words)."""
    out = _empty_aligned64(t.numel(), t.dtype).view(t.shape)
    out.copy_(t)
    return out


def _empty_aligned64(n: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised 1-D tensor of n elements whose data starts on a 64-byte boundary."""
    size = torch.empty(0, dtype=dtype).element_size()
    per = 64 // size
    buf = torch.empty(n + per, dtype=dtype)
    off = (-(buf.data_ptr() // size)) % per
    return buf[off:off + n]


class PackedRows:
    """An (N, H, W, C) sign map packed in the hand-off format of the ISA path that made it (`binary_conv`'s
    ``pack_next`` fills one, the next call takes it as ``packed_input``): 64 channels per uint64 word, as their
    nibble planes on AVX2. Only the path and shape it was made for can read it."""

    def __init__(self, n: int, h: int, w: int, c: int, isa: int | None = None):
        self.isa, words = require_kernel().packed_words(_isa(isa), n, h, w, c)
        self.shape, self.words = (n, h, w, c), _empty_aligned64(words, torch.int64)

    def check(self, isa: int, shape: tuple) -> None:
        if (self.isa, self.shape) != (isa, shape):
            raise ValueError(f"bitpack: packed rows for ISA {self.isa}, (N, H, W, C) {self.shape} do not fit a call "
                             f"on ISA {isa} with {shape}")


def _run_isa(isa: int | None) -> int:
    """The level a call with this `isa` argument runs (run-time dispatch resolved)."""
    level = _isa(isa)
    return best_isa() if level < 0 else level


def _cl(t: torch.Tensor) -> torch.Tensor:
    """float32, channels-last contiguous (no copy when already so)."""
    return t.to(torch.float32).contiguous(memory_format=torch.channels_last)


def _addr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _vec(t: torch.Tensor | None, n: int, name: str) -> torch.Tensor | None:
    if t is None:
        return None
    if t.dtype is torch.float32 and t.dim() == 1 and t.is_contiguous() and not t.requires_grad:
        if t.shape[0] != n:  # the fused units' own vectors: as they are (the copies below cost ~7 us each)
            raise ValueError(f"{name}: expected {n} values, got {t.shape[0]}")
        return t
    t = t.detach().to(torch.float32).reshape(-1).contiguous()
    if t.numel() != n:
        raise ValueError(f"{name}: expected {n} values, got {t.numel()}")
    return t


def binary_conv(
    x: torch.Tensor,
    wbits: torch.Tensor,
    out_channels: int,
    kernel_size: int,
    scale: torch.Tensor,
    bias: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    smap: torch.Tensor | None = None,
    cmap: torch.Tensor | None = None,
    scale2: torch.Tensor | None = None,
    bias2: torch.Tensor | None = None,
    slope: torch.Tensor | None = None,
    post_bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    post_slope: torch.Tensor | None = None,
    row_sums: torch.Tensor | None = None,
    next_spatial: tuple | None = None,
    amx_tiles: torch.Tensor | None = None,
    packed_input: PackedRows | None = None,
    pack_next: tuple | None = None,
    threads: int | None = None,
    isa: int | None = None,
) -> torch.Tensor:
    """Binary conv of sign(x + shift) with the packed weight signs, zero padding k//2, stride 1, + FP epilogue.

    x: (N, C, H, W); `shift`: (C,) or (N, C, 1, 1). Per output channel o, optional stages in this order:
      y = scale*dot + bias;  y *= cmap (N,O,1,1);  y *= smap (N,1,H,W);  y = y*scale2 + bias2;
      y = prelu(y, slope) + post_bias;  y += residual (N,O,H,W);  y = prelu(y, post_slope).
    `row_sums`: a zeroed (N, H, O) float32 tensor that receives, per output row, the sum over w of the output
    (the epilogue adds each chunk while it is in cache; the next unit's global means need no pass over memory).
    `next_spatial`: (taps, bias, out) -- the next unit's spatial re-scaling map sigmoid(bias + conv(output, taps))
    of this call's OUTPUT, taps a contiguous float32 (K, K, O) tensor and out a contiguous float32 (N, 1, H, W)
    tensor it fills; computed row by row one row behind the epilogue, while those rows are still in cache (the same
    routine and order as `spatial_map`, so the same floats). `amx_tiles`: `amx_weight_tiles(wbits, ...)` of these
    weights, used when the AMX path runs (else made for the call). `packed_input`: `PackedRows` of sign(x + shift),
    made by the previous call's `pack_next` (the caller vouches that x and shift are what it packed): no packing
    pass here. `pack_next`: (shift_next (O,) or None, PackedRows for (N, H, W, O)) -- this call's OUTPUT
    packed for the next conv, sign(out + shift_next), row by row right after the epilogue.
    Returns (N, O, H, W) float32 channels-last. `isa`: 0 portable C, 1 AVX2, 2 AVX-512 VPOPCNTDQ, 3 AMX-INT8 (the
    +-1 dots as int8 tile matmuls, exact), -1 the best this CPU has; None (default): what BSR_BITPACK_ISA forces, else -1. A level the CPU lacks raises ValueError.
    """
    k = require_kernel()
    if x.dim() != 4 or x.device.type != "cpu":
        raise ValueError("bitpack: expected a 4-D CPU tensor")
    n, c, h, w = x.shape
    o = out_channels
    op = wbits.shape[-1]
    if wbits.shape != (kernel_size, kernel_size, (c + 63) // 64, op) or wbits.dtype != torch.int64:
        raise ValueError(f"bitpack: packed weights {tuple(wbits.shape)} do not fit an input with {c} channels")
    x = _cl(x)
    shift_stride = 0
    if shift is not None and shift.numel() == n * c and shift.dim() == 4:
        shift, shift_stride = shift.detach().to(torch.float32).reshape(n, c).contiguous(), c
    else:
        shift = _vec(shift, c, "shift")
    scale, bias = _vec(scale, o, "scale"), _vec(bias, o, "bias")
    scale2, bias2 = _vec(scale2, o, "scale2"), _vec(bias2, o, "bias2")
    if (scale2 is None) != (bias2 is None):
        raise ValueError("bitpack: scale2 and bias2 go together")
    slope, post_bias, post_slope = _vec(slope, o, "slope"), _vec(post_bias, o, "post_bias"), _vec(post_slope, o, "post_slope")
    if smap is not None:
        if not (smap.dtype is torch.float32 and smap.shape == (n, 1, h, w) and smap.is_contiguous()):
            smap = smap.detach().to(torch.float32).expand(n, 1, h, w).contiguous()
    if cmap is not None:
        if not (cmap.dtype is torch.float32 and cmap.shape == (n, o, 1, 1) and cmap.is_contiguous()):
            cmap = cmap.detach().to(torch.float32).expand(n, o, 1, 1).contiguous()
    if residual is not None:
        if residual.shape != (n, o, h, w):
            raise ValueError(f"bitpack: residual {tuple(residual.shape)} != output {(n, o, h, w)}")
        residual = _cl(residual)
    out = torch.empty((n, o, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    if row_sums is not None and (row_sums.shape != (n, h, o) or row_sums.dtype != torch.float32
                                 or not row_sums.is_contiguous()):
        raise ValueError(f"bitpack: row_sums must be a contiguous float32 {(n, h, o)} tensor")
    tail = [_addr(row_sums), 0, 0, 0.0, 0, 0]  # row sums, next unit's spatial map (taps, K, bias, out), AMX tiles
    if next_spatial is not None:
        taps, sbias, smap_out = next_spatial
        ks = taps.shape[0]
        if (taps.shape != (ks, ks, o) or ks % 2 == 0 or taps.dtype != torch.float32 or not taps.is_contiguous()
                or smap_out.shape != (n, 1, h, w) or smap_out.dtype != torch.float32 or not smap_out.is_contiguous()):
            raise ValueError("bitpack: next_spatial must be ((K, K, O) float32 taps, bias, (N, 1, H, W) float32 out)")
        tail[1:5] = [taps.data_ptr(), ks, float(sbias), smap_out.data_ptr()]
    if amx_tiles is not None:
        need = kernel_size * kernel_size * ((c + 63) // 64) * ((o + 15) // 16) * 1024
        if amx_tiles.dtype != torch.int8 or amx_tiles.numel() != need or amx_tiles.data_ptr() % 64:
            raise ValueError("bitpack: amx_tiles do not fit these weights (use amx_weight_tiles)")
        tail[5] = amx_tiles.data_ptr()
    if packed_input is not None or pack_next is not None:
        level = _run_isa(isa)
        tail += [0, 0, 0]
        if packed_input is not None:
            packed_input.check(level, (n, h, w, c))
            tail[6] = packed_input.words.data_ptr()
        if pack_next is not None:
            shift_next, rows = pack_next
            rows.check(level, (n, h, w, o))
            shift_next = _vec(shift_next, o, "pack_next shift")  # kept referenced until the call returns
            tail[7:9] = [rows.words.data_ptr(), _addr(shift_next)]
    k.conv(
        x.data_ptr(), _addr(shift), shift_stride, wbits.data_ptr(), n, h, w, c, o, op, kernel_size,
        scale.data_ptr(), bias.data_ptr(), _addr(smap), _addr(cmap), _addr(scale2), _addr(bias2), _addr(slope),
        _addr(post_bias), _addr(residual), _addr(post_slope), out.data_ptr(), int(threads or default_threads()),
        _isa(isa), *tail,
    )
    return out


def pack_activations(x: torch.Tensor, shift: torch.Tensor | None = None, isa: int | None = None) -> torch.Tensor:
    """Sign bits of x + shift (bit = value < 0) as (N, H, W, ceil(C/64)) uint64 words stored as int64."""
    k = require_kernel()
    n, c, h, w = x.shape
    x = _cl(x)
    shift = _vec(shift, c, "shift")
    out = torch.empty((n, h, w, (c + 63) // 64), dtype=torch.int64)
    k.pack(x.data_ptr(), _addr(shift), 0, n, h, w, c, out.data_ptr(), _isa(isa))
    return out


def spatial_map(x: torch.Tensor, weight: torch.Tensor, bias: float, threads: int | None = None,
                isa: int | None = None) -> torch.Tensor:
    """sigmoid(bias + conv(x, weight)) for a (1, C, K, K) weight, zero padding K//2: the spatial re-scaling map of
    EBSR Eq. 5 / SCALES Eq. 4, as an (N, 1, H, W) float32 tensor (one K*K*C dot product per pixel, in C)."""
    k = require_kernel()
    n, c, h, w = x.shape
    if weight.dim() != 4 or weight.shape[:2] != (1, c) or weight.shape[2] != weight.shape[3] or weight.shape[2] % 2 == 0:
        raise ValueError(f"bitpack: spatial weight {tuple(weight.shape)} does not fit {c} input channels")
    x = _cl(x)
    taps = weight.detach().to(torch.float32)[0].permute(1, 2, 0).contiguous()  # [K, K, C]
    out = torch.empty((n, 1, h, w), dtype=torch.float32)
    k.spatial(x.data_ptr(), n, h, w, c, taps.data_ptr(), weight.shape[2], float(bias), out.data_ptr(),
              int(threads or default_threads()), _isa(isa))
    return out
