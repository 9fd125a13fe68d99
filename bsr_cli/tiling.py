"""Tiled super-resolution inference with overlap and feathered blending.

``upscale_array(model, pixels, scale, tile, tile_pad)`` runs a model over an (H, W, 3) numpy image one tile at a
time and returns the (s*H, s*W, 3) result, quantized to the input's dtype (uint8 / uint16) or float32 in [0, 1].

How a tile is cut (per axis, in LR pixels)::

    |<- tile_pad ->|<- blend ->|<------ core ------>|<- blend ->|<- tile_pad ->|
    [ window fed to the model ...................................................]
                   [ contribution: core +- blend, feathered over 2*blend ]

* The image is split into ``n = ceil(L / tile)`` cores of near-equal size (no thin last tile).
* Each core is grown by ``blend`` pixels into its neighbours; adjacent contributions cross-fade with linear
  weights that sum to exactly 1, so no weight buffer is needed.
* The model sees the core grown by ``tile_pad`` pixels of real image context (clipped at the image border,
  where the model's own zero padding is exact anyway). A contributing pixel is therefore at least
  ``tile_pad - blend`` pixels from a window edge: when that covers the model's receptive field the tiled
  result equals the untiled one up to float rounding. ``tile_pad=None`` measures the receptive field
  (``probe_model``) and picks it that way.

Memory: the full image is never one float tensor. Peak = input array + output array (input dtype, s^2 times
the input) + one float32 band of ``(tile + 2*blend) * s`` output rows x full output width x 3 + the model's
activations for one window (``auto_tile`` bounds these by ``budget_bytes``, by default 40 % of the memory the
machine has available now, ``default_budget``). For a 2000x1500 RGB uint8 image at x4: 9 MB in, 144 MB out,
about 100 MB band for tile 256, plus activations. Within the budget ``auto_tile`` picks the grid with the least
recomputation (sum of window areas / image area, ``recompute_factor``; reported as ``recompute``).

Models with global operations (global average pooling in SE attention, spatial means in channel re-scaling)
or attention (matmul/softmax) have an unbounded receptive field: tiling them is an approximation.
``probe_model`` reports this as ``global_ops`` and ``auto_tile`` then prefers one whole-image tile when it fits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

#: fallback activation budget for one tile window (bytes) when the available memory cannot be read
DEFAULT_BUDGET = 512 << 20
#: share of the available memory (MemAvailable) the automatic tiling may give one window's activations, and bounds
BUDGET_SHARE, MIN_BUDGET, MAX_BUDGET = 0.4, 256 << 20, 8 << 30
#: half-width of the cross-fade between adjacent tiles (LR pixels), at most
MAX_BLEND = 8
#: smallest tile core the automatic choice will pick (LR pixels)
MIN_TILE = 32


# --------------------------------------------------------------------------- probing a model


@dataclass
class ModelProbe:
    """What one small forward pass tells us about a model.

    ``receptive_radius``: LR pixels an output pixel depends on through local operations, in each direction
    (an upper bound; ``inf`` for attention-like operations). Global means (``adaptive_avg_pool2d`` to 1x1,
    ``mean`` over H and W, as in SE attention and EBSR/SCALES channel re-scaling) count as constants here:
    ``upscale_array`` computes them over the whole image (see ``GlobalMeans``) and injects them into every tile.
    ``global_ops``: names of the global operations found. ``floats_per_pixel``: the largest image-derived
    activation, in floats per LR pixel (64 for a 64-channel body at LR, 1024 for 64 channels at 4x).
    """

    receptive_radius: float
    floats_per_pixel: float
    global_ops: list[str] = field(default_factory=list)

    @property
    def is_local(self) -> bool:
        """No global operation at all: each tile is independent."""
        return not self.global_ops

    @property
    def has_global_means(self) -> bool:
        return any(op in _GLOBAL_MEANS for op in self.global_ops)

    @property
    def tiling_exact(self) -> bool:
        """Tiled == untiled is reachable: every global op is a global mean that ``upscale_array`` handles."""
        return math.isfinite(self.receptive_radius) and all(op in _GLOBAL_MEANS for op in self.global_ops)


_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "norm", "var_mean", "std_mean",
               "logsumexp", "nansum", "nanmean", "median", "prod"}
_NONLOCAL = {"matmul", "bmm", "baddbmm", "softmax", "scaled_dot_product_attention", "einsum"}
_INTERP = {"interpolate", "upsample", "upsample_bilinear", "upsample_nearest", "grid_sample"}
_GLOBAL_MEANS = {"adaptive_avg_pool2d", "mean"}


def _name(func) -> str:
    return getattr(func, "__name__", str(func)).strip("_")


def _global_mean_kind(name: str, args, kwargs) -> bool:
    """True for ``adaptive_avg_pool2d(x, 1)`` and ``mean(x, dim=(2, 3)/(-2, -1), ...)`` on a 4-D tensor."""
    if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4:
        return False
    if name == "adaptive_avg_pool2d":
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        return size == (1, 1)
    if name == "mean":
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        dims = dim if isinstance(dim, (tuple, list)) else [dim]
        return dim is not None and sorted(int(d) % 4 for d in dims) == [2, 3]
    return False


class _RadiusTracker(TorchFunctionMode):
    """Follows every torch op of a forward pass and tracks, per image-derived tensor, its dependency radius.

    Radii are in LR pixels: a 3x3 conv at LR adds 1, a 3x3 conv after a x4 pixel shuffle adds 0.25.
    Parameters and constants carry no radius (they do not depend on the image); neither do global means.
    """

    def __init__(self, lr_hw: tuple[int, int]):
        super().__init__()
        self.lr_h, self.lr_w = lr_hw
        self.radius: dict[int, float] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids valid during the probe
        self.max_floats = 0.0
        self.global_ops: list[str] = []

    def track(self, t: torch.Tensor, r: float) -> None:
        self.radius[id(t)] = r
        self.keep.append(t)
        if t.dim() >= 3:
            self.max_floats = max(self.max_floats, t.numel() / (self.lr_h * self.lr_w))

    def _factor(self, t: torch.Tensor) -> float:
        """Resolution of ``t`` relative to the LR input (4.0 after a x4 upsampler)."""
        return t.shape[-1] / self.lr_w if t.dim() >= 3 else 1.0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        leaves = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        tracked = [a for a in leaves if id(a) in self.radius]
        if not tracked:
            return out
        r = max(self.radius[id(a)] for a in tracked)
        x = tracked[0]
        name = _name(func)
        if _global_mean_kind(name, args, kwargs):
            self._global(name)
            r = 0.0  # a per-image constant: computed over the whole image, injected into tiles
        elif name in ("conv2d", "conv_transpose2d", "avg_pool2d", "max_pool2d"):
            r += self._window_radius(name, args, kwargs) / self._factor(x)
        elif name in _INTERP:
            r += 2.0 / self._factor(x)
        elif name == "pixel_unshuffle":
            r += 1.0 / self._factor(x)
        elif name.startswith("adaptive_") or name in _NONLOCAL or (
                name in _REDUCTIONS and x.dim() >= 4 and self._reduces_space(x, args, kwargs)):
            self._global(name)
            r = math.inf
        for o in tree_flatten(out)[0]:
            if isinstance(o, torch.Tensor) and o.is_floating_point():
                self.track(o, r)
        return out

    def _global(self, name: str) -> None:
        if name not in self.global_ops:
            self.global_ops.append(name)

    @staticmethod
    def _window_radius(name: str, args, kwargs) -> float:
        if name.startswith("conv"):
            w = args[1] if len(args) > 1 else kwargs["weight"]
            k = max(w.shape[-2:])
            dil = args[5] if len(args) > 5 else kwargs.get("dilation", 1)
            dil = max(dil) if isinstance(dil, (tuple, list)) else dil
            return (k - 1) / 2 * dil
        k = args[1] if len(args) > 1 else kwargs["kernel_size"]
        k = max(k) if isinstance(k, (tuple, list)) else k
        return (k - 1) / 2

    @staticmethod
    def _reduces_space(x: torch.Tensor, args, kwargs) -> bool:
        dim = args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else kwargs.get("dim")
        if dim is None:
            return True
        dims = dim if isinstance(dim, (tuple, list)) else [dim]
        nd = x.dim()
        return any(int(d) % nd >= nd - 2 for d in dims if isinstance(d, int))


class one_thread:
    """Run small setup work (probes, loading, counting) on one torch thread: tiny tensors gain nothing from the
    intra-op pool and, on a busy machine, lose milliseconds per op waiting for it."""

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)
        return False


def probe_model(model: Callable, size: tuple[int, int] = (24, 20)) -> ModelProbe:
    """Run ``model`` once on a small random input and return its receptive field and activation size."""
    x = torch.rand(1, 3, *size)
    tracker = _RadiusTracker(size)
    with one_thread(), torch.inference_mode(), tracker:
        tracker.track(x, 0.0)
        model(x)
    return ModelProbe(
        receptive_radius=max(tracker.radius.values(), default=0.0),
        floats_per_pixel=tracker.max_floats,
        global_ops=tracker.global_ops,
    )


class GlobalMeans(TorchFunctionMode):
    """Makes a model's global means (SE / channel re-scaling pools) whole-image means while it runs on tiles.

    Used around each tile's forward pass. The k-th global mean of the pass (models call them in a fixed order):

    * adds the sum of its input over the tile's *core* (cores partition the image) to ``sums[k]``, in float64;
    * returns ``inject[k]`` (the whole-image mean from the previous pass) instead of the tile's own mean, when
      given.

    ``upscale_array`` repeats passes until the injected means reproduce themselves (a fixed point): then every
    tile saw the same means as the untiled forward pass, up to float rounding.
    """

    def __init__(self, inject: list[torch.Tensor] | None):
        super().__init__()
        self.inject = inject
        self.sums: list[torch.Tensor] = []
        self.areas: list[int] = []
        self._box = (0, 0, 0, 0)
        self._win = (1, 1)
        self._k = 0

    def tile(self, box: tuple[int, int, int, int], win_hw: tuple[int, int]) -> "GlobalMeans":
        """Set the core (y0, y1, x0, x1) of the next tile, in LR pixels relative to its (h, w) window."""
        self._box, self._win, self._k = box, win_hw, 0
        return self

    def _factor(self, x: torch.Tensor) -> float | None:
        """x's resolution relative to the window, or None when x is not an image feature (e.g. a weight)."""
        fh, fw = x.shape[-2] / self._win[0], x.shape[-1] / self._win[1]
        return fw if fh == fw else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        if not _global_mean_kind(name, args, kwargs):
            return func(*args, **kwargs)
        x = args[0]
        f = self._factor(x)
        if f is None:
            return func(*args, **kwargs)
        y0, y1, x0, x1 = (int(round(v * f)) for v in self._box)
        part = x[:, :, y0:y1, x0:x1].double().sum(dim=(2, 3))
        k = self._k
        self._k += 1
        if k == len(self.sums):
            self.sums.append(torch.zeros_like(part))
            self.areas.append(0)
        self.sums[k] += part
        self.areas[k] += (y1 - y0) * (x1 - x0)
        out = func(*args, **kwargs)
        if self.inject is not None:
            out = self.inject[k].to(out.dtype).reshape(out.shape)
        return out

    def means(self) -> list[torch.Tensor]:
        return [s / a for s, a in zip(self.sums, self.areas)]


# --------------------------------------------------------------------------- choosing tile sizes


def bytes_per_lr_pixel(probe: ModelProbe, scale: int) -> float:
    """Peak activation bytes per LR pixel of one window: four float32 copies of the largest activation
    (a conv's input, output, quantized input and a residual) plus the float input/output tiles."""
    return 4.0 * (4 * max(probe.floats_per_pixel, 3 * scale * scale) + 3 + 2 * 3 * scale * scale)


def default_tile_pad(probe: ModelProbe) -> int:
    """Context pixels per side so that tiling is exact: receptive radius + the cross-fade + 2 for rounding.

    Models with non-local operations (attention) get 32: tiling is then an approximation whatever the pad.
    """
    if not math.isfinite(probe.receptive_radius):
        return 32
    return int(math.ceil(probe.receptive_radius)) + MAX_BLEND + 2


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux ``MemAvailable``; else free pages), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """The activation budget of the automatic tiling: ``BUDGET_SHARE`` of the memory that really exists now,
    within [``MIN_BUDGET``, ``MAX_BUDGET``]; ``DEFAULT_BUDGET`` when it cannot be read."""
    avail = available_memory()
    if not avail:
        return DEFAULT_BUDGET
    return int(min(MAX_BUDGET, max(MIN_BUDGET, BUDGET_SHARE * avail)))


def recompute_factor(height: int, width: int, tile: int | tuple[int, int], tile_pad: int) -> float:
    """Model work of a tiling relative to one whole-image pass: sum of window areas / image area (>= 1)."""
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    rows, cols = plan_axis(height, th, tile_pad), plan_axis(width, tw, tile_pad)
    area = sum(r.win1 - r.win0 for r in rows) * sum(c.win1 - c.win0 for c in cols)
    return area / float(height * width)


def auto_tile(probe: ModelProbe, scale: int, height: int, width: int, tile_pad: int,
              budget_bytes: int | None = None) -> tuple[int, int]:
    """Tile cores (tile_h, tile_w) in LR pixels: the grid whose padded windows each keep activations under
    ``budget_bytes`` (default ``default_budget()``) with the least total window area (least recomputation).

    Returns ``(height, width)`` (one tile, no tiling) when the whole image fits; models with global means then
    also run in one exact pass (tiling them costs several passes, see ``upscale_array``). Wide images get full-width
    bands when those fit, tall ones full-height columns, so the halo is paid on one axis only.
    """
    budget = default_budget() if budget_bytes is None else budget_bytes
    bpp = bytes_per_lr_pixel(probe, scale)
    if height * width * bpp <= budget:
        return height, width
    max_px = budget / bpp
    best: tuple[float, int, int] | None = None
    for n_r in range(1, max(1, height // MIN_TILE) + 2):
        for n_c in range(1, max(1, width // MIN_TILE) + 2):
            th, tw = math.ceil(height / n_r), math.ceil(width / n_c)
            win_h, win_w = min(height, th + 2 * tile_pad), min(width, tw + 2 * tile_pad)
            if win_h * win_w > max_px:
                continue
            f = recompute_factor(height, width, (th, tw), tile_pad)
            if best is None or f < best[0]:
                best = (f, th, tw)
            break  # more columns only add halo at this row count
    if best is None:  # even MIN_TILE windows exceed the budget: the smallest tiles there are
        return min(height, MIN_TILE), min(width, MIN_TILE)
    return best[1], best[2]


# --------------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in LR pixels: model window [win0, win1), contribution [c0, c1) whose first
    ``ramp_in`` and last ``ramp_out`` pixels (times scale on the output grid) are cross-faded."""

    win0: int
    win1: int
    c0: int
    c1: int
    ramp_in: int
    ramp_out: int


def plan_axis(length: int, tile: int, tile_pad: int, blend: int | None = None) -> list[Span]:
    """Split ``length`` LR pixels into near-equal cores of at most ``tile`` and return their spans."""
    n = max(1, math.ceil(length / max(1, tile)))
    bounds = [round(i * length / n) for i in range(n + 1)]
    core_min = min(b - a for a, b in zip(bounds, bounds[1:]))
    if blend is None:
        blend = min(MAX_BLEND, tile_pad // 2)
    blend = max(0, min(blend, core_min // 2, tile_pad))
    spans = []
    for i in range(n):
        a, b = bounds[i], bounds[i + 1]
        rin = blend if i > 0 else 0
        rout = blend if i < n - 1 else 0
        spans.append(Span(max(0, a - tile_pad), min(length, b + tile_pad), a - rin, b + rout, rin, rout))
    return spans


def axis_weights(span: Span, scale: int) -> np.ndarray:
    """Feathered 1-D weights over the span's contribution on the output grid. Neighbours' ramps sum to 1."""
    n = (span.c1 - span.c0) * scale
    w = np.ones(n, dtype=np.float32)
    if span.ramp_in:
        m = 2 * span.ramp_in * scale
        w[:m] = (np.arange(m, dtype=np.float32) + 0.5) / m
    if span.ramp_out:
        m = 2 * span.ramp_out * scale
        w[n - m:] = 1.0 - (np.arange(m, dtype=np.float32) + 0.5) / m
    return w


def _max_value(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def quantize(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float [0, 1] -> ``dtype``: clip, scale to the integer range, round half-to-even (protocol.quantize_uint8).
    Integer outputs go through torch's float32 clamp / mul / round: the same IEEE operations as NumPy's (equal
    output, tested), 7x faster on a 2048x2048 RGB image (0.05 vs 0.40 s)."""
    if not np.issubdtype(dtype, np.integer):
        return np.clip(x, 0.0, 1.0).astype(dtype, copy=False)
    if x.dtype != np.float32:
        return np.round(np.clip(x, 0.0, 1.0) * _max_value(dtype)).astype(dtype)
    t = torch.from_numpy(np.ascontiguousarray(x))
    return torch.clamp(t, 0.0, 1.0).mul_(_max_value(dtype)).round_().numpy().astype(dtype)


def run_tile(model: Callable, window: np.ndarray, scale: int) -> np.ndarray:
    """Run the model on one (h, w, 3) window (any dtype) and return its float32 (s*h, s*w, 3) output."""
    # np.array copies: a window can be a read-only view (a 1x1 image from Pillow) that torch must not wrap
    x = torch.from_numpy(np.array(window.transpose(2, 0, 1), dtype=np.float32))
    x = (x / _max_value(window.dtype)).unsqueeze(0)
    with torch.inference_mode():
        y = model(x)
    y = y[0] if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y)[0])
    expected = (3, window.shape[0] * scale, window.shape[1] * scale)
    if tuple(y.shape) != expected:
        raise ValueError(f"model returned {tuple(y.shape)} for a {window.shape[:2]} tile, expected {expected}")
    return y.float().numpy().transpose(1, 2, 0)


def _tiled_pass(model: Callable, pixels: np.ndarray, scale: int, rows: list[Span], cols: list[Span],
                out: np.ndarray, means: GlobalMeans | None,
                progress: Callable[[int, int], None] | None, done: int, total: int) -> int:
    """One pass over all tiles, writing the blended, quantized result into ``out``. Returns tiles done."""
    w = pixels.shape[1]
    col_w = [axis_weights(c, scale) for c in cols]
    carry: np.ndarray | None = None
    for r in rows:
        r0, r1 = r.c0 * scale, r.c1 * scale
        band = np.zeros((r1 - r0, w * scale, 3), dtype=np.float32)
        if carry is not None:
            band[: carry.shape[0]] += carry
        row_w = axis_weights(r, scale)
        for c, cw in zip(cols, col_w):
            window = pixels[r.win0:r.win1, c.win0:c.win1]
            if means is not None:  # this tile's core (the contribution minus the cross-fades) in window pixels
                core = (r.c0 + r.ramp_in - r.win0, r.c1 - r.ramp_out - r.win0,
                        c.c0 + c.ramp_in - c.win0, c.c1 - c.ramp_out - c.win0)
                with means.tile(core, window.shape[:2]):
                    y = run_tile(model, window, scale)
            else:
                y = run_tile(model, window, scale)
            oy, ox = (r.c0 - r.win0) * scale, (c.c0 - c.win0) * scale
            part = y[oy:oy + (r1 - r0), ox:ox + (c.c1 - c.c0) * scale]
            band[:, c.c0 * scale:c.c1 * scale] += part * (row_w[:, None, None] * cw[None, :, None])
            done += 1
            if progress:
                progress(done, total)
        final = r1 - r0 - 2 * r.ramp_out * scale  # rows the next tile row does not touch
        done_rows = band[:final]
        if out.shape[2] == 1:  # gray: clip, then mean of the 3 output channels, then round (as evaluate.py)
            done_rows = np.clip(done_rows, 0.0, 1.0).mean(axis=2, keepdims=True)
        out[r0:r0 + final] = quantize(done_rows, out.dtype)
        carry = band[final:].copy() if r.ramp_out else None
    return done


def _means_converged(new: list[torch.Tensor], old: list[torch.Tensor], tol: float) -> bool:
    return len(new) == len(old) and all(
        float((a - b).abs().max()) <= tol * (1.0 + float(b.abs().max())) for a, b in zip(new, old))


def upscale_array(model: Callable, pixels: np.ndarray, scale: int, tile: int, tile_pad: int,
                  out_dtype: np.dtype | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  global_means: bool | None = None, max_passes: int = 8, tol: float = 1e-6,
                  report: dict | None = None, to_gray: bool = False) -> np.ndarray:
    """Upscale an (H, W, 3) image by ``scale`` with tiles of ``tile`` LR pixels and ``tile_pad`` context.

    ``pixels``: uint8, uint16 or float32 in [0, 1]. Returns (s*H, s*W, 3) of ``out_dtype`` (default: the input
    dtype), clipped and rounded like the protocol; with ``to_gray`` (s*H, s*W, 1), the mean of the clipped
    output channels (for gray input replicated to RGB). ``progress(done, total)`` is called after each tile.
    Tile rows are accumulated in one float32 band at a time and quantized as soon as they are final.

    Models with global means (``global_means=True``, or None to probe a torch model) need whole-image means in
    every tile: the first pass collects them per tile core, each further pass injects the previous pass's
    means, until the means a pass produces equal those it was given (relative ``tol``), at most ``max_passes``.
    Each pass makes at least one more layer's means exact; binary nets are sensitive to them (a sign flips), so
    ``tol`` is 1e-6 (1e-4 left ebsr-light-x4 at --tile 64 3/255 off untiled on Set5 baby; 1e-6 takes it to 1/255
    on 4 values): for such models tiling is an approximation unless the passes converge, and the automatic tiling
    runs them whole whenever the budget allows. ``report`` (a dict, if given) receives ``passes``, ``converged``
    and ``recompute``. Whole-image runs (one tile) are always exact. Other callables
    (onnxruntime sessions) cannot be intercepted: their tiles use tile-local means.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {pixels.shape}")
    out_dtype = np.dtype(out_dtype or pixels.dtype)
    h, w, _ = pixels.shape
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    rows = plan_axis(h, th, tile_pad)
    cols = plan_axis(w, tw, tile_pad)
    out = np.empty((h * scale, w * scale, 1 if to_gray else 3), dtype=out_dtype)
    n_tiles = len(rows) * len(cols)
    if global_means is None:
        global_means = isinstance(model, torch.nn.Module) and probe_model(model).has_global_means
    report = report if report is not None else {}
    report.update(tiles=n_tiles, passes=1, converged=True,
                  recompute=round(recompute_factor(h, w, (th, tw), tile_pad), 3))
    if n_tiles == 1 or not global_means:
        _tiled_pass(model, pixels, scale, rows, cols, out, None, progress, 0, n_tiles)
        return out
    inject: list[torch.Tensor] | None = None
    done = 0
    report["converged"] = False
    for p in range(max_passes):
        means = GlobalMeans(inject)
        done = _tiled_pass(model, pixels, scale, rows, cols, out, means, progress, done, n_tiles * max_passes)
        new = means.means()
        report["passes"] = p + 1
        if inject is not None and _means_converged(new, inject, tol):
            report["converged"] = True
            break
        inject = new
    if progress:
        progress(n_tiles * max_passes, n_tiles * max_passes)
    return out


def describe(tile: int | tuple[int, int], tile_pad: int, height: int, width: int) -> str:
    """A short human description of a tiling, e.g. ``'tile 256 (3x2 tiles), pad 48'``."""
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    n_r, n_c = len(plan_axis(height, th, tile_pad)), len(plan_axis(width, tw, tile_pad))
    if n_r * n_c == 1:
        return "whole image (no tiling)"
    return f"tile {tile} ({n_c}x{n_r} tiles), pad {tile_pad}"


def resolve_tiling(model: Callable, scale: int, height: int, width: int, tile: int,
                   tile_pad: int | None, probe: ModelProbe | None = None,
                   budget_bytes: int | None = None) -> tuple[int | tuple[int, int], int, ModelProbe]:
    """Turn the CLI's ``--tile`` (0 = auto: ``auto_tile``, a (tile_h, tile_w) pair) and ``--tile-pad`` (None =
    auto) into concrete numbers."""
    probe = probe or probe_model(model)
    pad = default_tile_pad(probe) if tile_pad is None else max(0, int(tile_pad))
    if tile < 0:
        raise ValueError("tile must be >= 0 (0 = automatic)")
    t = auto_tile(probe, scale, height, width, pad, budget_bytes) if tile == 0 else int(tile)
    return t, pad, probe


__all__: Sequence[str] = [
    "ModelProbe", "probe_model", "bytes_per_lr_pixel", "default_tile_pad", "available_memory", "default_budget",
    "recompute_factor", "auto_tile", "Span", "plan_axis",
    "axis_weights", "quantize", "run_tile", "upscale_array", "describe", "resolve_tiling",
]
