"""Comparison sheets for ``bsr upscale --compare DIR``: bicubic | bsr | reference, with a zoomed crop.

One PNG per image::

    [ bicubic (MATLAB imresize, as bsr eval's baseline) ][ bsr ][ reference (when --reference matched) ]
    [ the same CROP x CROP region of each, zoomed ZOOM x with nearest neighbour                      ]

The overview row shows each panel scaled to at most ``PANEL`` pixels high (Pillow LANCZOS); the crop row is
exact pixels (nearest zoom), placed where bsr and bicubic differ most (the largest summed |difference| over a
CROP x CROP window), so the sheet shows what the model changed.
"""
from __future__ import annotations

import numpy as np

PANEL = 384  # overview panel height (pixels)
CROP = 48  # crop side on the HR grid (pixels)
ZOOM = 4  # nearest-neighbour zoom of the crop
GAP = 4  # gap between panels (pixels)
LABEL = 16  # label strip height (pixels)


def _rgb8(a: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3), uint8 or uint16 -> (H, W, 3) uint8."""
    if a.dtype != np.uint8:
        a = np.round(a.astype(np.float64) / 257.0).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def crop_box(sr: np.ndarray, base: np.ndarray, size: int = CROP) -> tuple[int, int, int]:
    """(y, x, side) of the size x size window where |sr - base| (summed over channels) is largest."""
    h, w = sr.shape[:2]
    side = min(size, h, w)
    diff = np.abs(sr.astype(np.int32) - base.astype(np.int32)).sum(axis=2).astype(np.float64)
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    y, x = np.unravel_index(int(np.argmax(win)), win.shape)
    return int(y), int(x), side


def sheet(lr: np.ndarray, sr: np.ndarray, scale: int, hr: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The comparison sheet (H, W, 3) uint8 and its layout {panels, crop: [y, x, side], zoom}."""
    from PIL import Image, ImageDraw

    from bsr_cli import protocol

    lr8, sr8 = _rgb8(lr), _rgb8(sr)
    bic = _rgb8(protocol.bicubic_upscale_uint8(lr8, scale))
    panels = [("bicubic", bic), ("bsr", sr8)]
    if hr is not None:
        hr8 = _rgb8(hr)
        if hr8.shape == sr8.shape:
            panels.append(("reference", hr8))
    y, x, side = crop_box(sr8, bic)
    h, w = sr8.shape[:2]
    ph = min(PANEL, h)
    pw = max(1, round(w * ph / h))
    zs = side * ZOOM
    cell_w = max(pw, zs)
    width = len(panels) * cell_w + (len(panels) - 1) * GAP
    height = LABEL + ph + GAP + zs
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i, (name, img) in enumerate(panels):
        x0 = i * (cell_w + GAP)
        view = Image.fromarray(img)
        if (pw, ph) != (w, h):
            view = view.resize((pw, ph), Image.LANCZOS)
        out.paste(view, (x0, LABEL))
        draw.text((x0 + 2, 2), name, fill=(0, 0, 0))
        zoom = np.kron(img[y:y + side, x:x + side], np.ones((ZOOM, ZOOM, 1), dtype=np.uint8))
        out.paste(Image.fromarray(zoom), (x0, LABEL + ph + GAP))
        bx, by, s = x * pw / w, y * ph / h, side * pw / w  # where the crop is, on the overview
        draw.rectangle([x0 + bx, LABEL + by, x0 + bx + s, LABEL + by + s], outline=(255, 0, 0))
    layout = {"panels": [n for n, _ in panels], "crop": [y, x, side], "zoom": ZOOM, "cell_width": cell_w,
              "overview_height": ph}
    return np.asarray(out), layout
