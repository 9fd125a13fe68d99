"""Split inference: the LR part once, the HR part streamed in bands (issue 13 item 3).

An SR net of the bsr zoo is ``head -> body -> upsampler -> tail`` (``SRNet``, ``BBCUNet``; BBCU Table 6's parts):
everything before ``upsampler`` runs at LR resolution, the upsampler and tail at HR. Tiling the whole net
(``bsr_cli.tiling``) pays every conv again in each tile's halo, and the halo must cover the *body's* receptive
field (35 LR px for bbcu-l). Here instead:

1. **LR part once.** The input of ``model.upsampler`` (the LR feature map F, C floats per LR pixel) is computed
   for the whole image in one pass when it fits the budget, else on large LR tiles whose halo covers the LR
   part's receptive field (cores pasted, no blending). Global means inside the body (SE attention, EBSR/SCALES
   channel re-scaling) need the whole image: such models get the one-pass LR part or are not streamed.
2. **HR part in bands.** Rows of the image are streamed through the model again with ``head`` and ``body``
   swapped for stubs and F's rows injected as the upsampler's input, so only the upsampler, tail and the
   model's cheap skips (mean shift, BBCU's bilinear base) run; each band has its own small halo (the HR part's
   receptive field in LR pixels + 2), hard-pasted (exact, so no cross-fade).

``supported(model)`` checks the contract by running both ways on a small random input (max abs difference
<= 1e-5) instead of trusting attribute names. The result equals the untiled forward up to float rounding,
global pooling included.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from bsr_cli import tiling


class _Stop(Exception):
    """Raised by the upsampler pre-hook to end a forward pass with the LR features."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features


def _parts_ok(model) -> bool:
    return all(isinstance(getattr(model, p, None), nn.Module) for p in ("head", "body", "upsampler"))


def lr_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of ``model.upsampler`` for the (1, 3, h, w) input ``x``: (1, C, h, w)."""
    def stop(_m, args):
        raise _Stop(args[0])

    handle = model.upsampler.register_forward_pre_hook(stop)
    try:
        model(x)
    except _Stop as s:
        return s.features
    finally:
        handle.remove()
    raise RuntimeError("model.upsampler was not called")


class _ZeroFeatures(nn.Module):
    """Stands in for ``head``: zeros of the feature shape (whatever the forward adds to them is replaced)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.new_zeros(x.shape[0], self.channels, x.shape[2], x.shape[3])


def hr_part(model: nn.Module, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The model's output for input ``x`` with ``features`` (the LR part's output for x's window) injected as the
    upsampler input; head and body do not run."""
    head, body = model.head, model.body
    handle = model.upsampler.register_forward_pre_hook(lambda _m, _a: (features,))
    model.head, model.body = _ZeroFeatures(features.shape[1]), nn.Identity()
    try:
        return model(x)
    finally:
        model.head, model.body = head, body
        handle.remove()


def _to_tensor(window: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(window.transpose(2, 0, 1), dtype=np.float32))
    return (x / tiling._max_value(window.dtype)).unsqueeze(0)


def probe_parts(model: nn.Module, size: tuple[int, int] = (24, 20)) -> tuple[tiling.ModelProbe, tiling.ModelProbe]:
    """(LR part probe, HR part probe): receptive radius, floats per LR pixel and global ops of each part."""
    lr = tiling.probe_model(lambda x: lr_features(model, x), size)
    with tiling.one_thread(), torch.inference_mode():
        c = lr_features(model, torch.rand(1, 3, *size)).shape[1]

    def hr_only(x):  # features derived from x with radius 0, so the tracker follows the HR part alone
        return hr_part(model, x, x[:, :1].expand(1, c, *x.shape[2:]) * 1.0)

    return lr, tiling.probe_model(hr_only, size)


def supported(model: Callable, size: tuple[int, int] = (20, 24)) -> bool:
    """True when ``model`` has head/body/upsampler and split inference reproduces its forward (<= 1e-5)."""
    if not isinstance(model, nn.Module) or not _parts_ok(model):
        return False
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        with tiling.one_thread(), torch.inference_mode():
            ref = model(x)
            got = hr_part(model, x, lr_features(model, x))
    except Exception:  # noqa: BLE001 - any model that does not follow the contract is simply not streamed
        return False
    return tuple(got.shape) == tuple(ref.shape) and float((got - ref).abs().max()) <= 1e-5


def plan(lr_probe: tiling.ModelProbe, hr_probe: tiling.ModelProbe, scale: int, height: int, width: int,
         budget_bytes: int | None = None) -> dict | None:
    """LR tile cores (rows, cols), HR band rows and both halos within the budget; None when the LR part has
    global means but does not fit in one pass (the caller then tiles the whole net)."""
    budget = tiling.default_budget() if budget_bytes is None else budget_bytes
    feat_bytes = 4 * lr_probe.floats_per_pixel * height * width  # F, kept for the HR part
    room = max(budget - feat_bytes, budget // 4)
    lr_bpp = tiling.bytes_per_lr_pixel(lr_probe, 1)
    lr_pad = int(math.ceil(lr_probe.receptive_radius)) + 2 if math.isfinite(lr_probe.receptive_radius) else None
    if lr_pad is None or not math.isfinite(hr_probe.receptive_radius) or hr_probe.global_ops:
        return None
    if height * width * lr_bpp <= room:
        lr_tile = (height, width)
    elif lr_probe.global_ops:
        return None
    else:
        lr_tile = tiling.auto_tile(lr_probe, 1, height, width, lr_pad, room)
    hr_bpp = tiling.bytes_per_lr_pixel(hr_probe, scale)
    hr_pad = int(math.ceil(hr_probe.receptive_radius)) + 2
    band = height if height * width * hr_bpp <= room else tiling.auto_tile(hr_probe, scale, height, width, hr_pad, room)
    hr_tile = (height, width) if band == height else band
    return {"lr_tile": lr_tile, "lr_pad": lr_pad, "hr_tile": hr_tile, "hr_pad": hr_pad}


def _spans(length: int, tile: int, pad: int) -> list[tiling.Span]:
    return tiling.plan_axis(length, tile, pad, blend=0)


def upscale_array(model: nn.Module, pixels: np.ndarray, scale: int, layout: dict,
                  progress: Callable[[int, int], None] | None = None, report: dict | None = None,
                  to_gray: bool = False) -> np.ndarray:
    """Split inference of an (H, W, 3) image with a ``plan`` layout; output as ``tiling.upscale_array``."""
    h, w, _ = pixels.shape
    lt, lp, ht, hp = layout["lr_tile"], layout["lr_pad"], layout["hr_tile"], layout["hr_pad"]
    lr_rows, lr_cols = _spans(h, lt[0], lp), _spans(w, lt[1], lp)
    hr_rows, hr_cols = _spans(h, ht[0], hp), _spans(w, ht[1], hp)
    total = len(lr_rows) * len(lr_cols) + len(hr_rows) * len(hr_cols)
    done = 0
    feats: torch.Tensor | None = None
    with torch.inference_mode():
        for r in lr_rows:  # 1. the LR part, cores pasted into one feature map
            for c in lr_cols:
                f = lr_features(model, _to_tensor(pixels[r.win0:r.win1, c.win0:c.win1])).float()
                if feats is None:
                    feats = torch.empty(1, f.shape[1], h, w)
                feats[:, :, r.c0:r.c1, c.c0:c.c1] = f[:, :, r.c0 - r.win0:r.c1 - r.win0, c.c0 - c.win0:c.c1 - c.win0]
                done += 1
                if progress:
                    progress(done, total)
        out = np.empty((h * scale, w * scale, 1 if to_gray else 3), dtype=pixels.dtype)
        for r in hr_rows:  # 2. the HR part in bands (or tiles), each with its own small halo, hard-pasted
            for c in hr_cols:
                x = _to_tensor(pixels[r.win0:r.win1, c.win0:c.win1])
                f = feats[:, :, r.win0:r.win1, c.win0:c.win1]
                y = hr_part(model, x, f)[0].float().numpy().transpose(1, 2, 0)
                oy, ox = (r.c0 - r.win0) * scale, (c.c0 - c.win0) * scale
                part = y[oy:oy + (r.c1 - r.c0) * scale, ox:ox + (c.c1 - c.c0) * scale]
                if to_gray:
                    part = np.clip(part, 0.0, 1.0).mean(axis=2, keepdims=True)
                out[r.c0 * scale:r.c1 * scale, c.c0 * scale:c.c1 * scale] = tiling.quantize(part, out.dtype)
                done += 1
                if progress:
                    progress(done, total)
    if report is not None:
        report.update(mode="split", lr_tiles=len(lr_rows) * len(lr_cols), hr_tiles=len(hr_rows) * len(hr_cols),
                      lr_pad=lp, hr_pad=hp, passes=1, converged=True, tiles=len(hr_rows) * len(hr_cols),
                      recompute_lr=round(tiling.recompute_factor(h, w, lt, lp), 3),
                      recompute_hr=round(tiling.recompute_factor(h, w, ht, hp), 3))
    return out
