"""The super-resolution evaluation protocol, one plain function per concept.

Every function here mirrors a step of the protocol that SR papers use for their tables (the MATLAB benchmark
scripts, re-implemented in BasicSR v1.4.2: ``basicsr/utils/matlab_functions.py``, ``basicsr/metrics/psnr_ssim.py``,
``basicsr/utils/color_util.py``). Ranges are explicit: images are ``uint8`` arrays (H, W) or (H, W, C) in
[0, 255] unless a docstring says otherwise; tensors are float in [0, 1] (``imresize``) or float64 in [0, 255]
(metrics).

The chain for one benchmark image at scale ``s`` is::

    hr = modcrop(hr_uint8, s)
    lr = bicubic_downscale_uint8(hr, s)              # the benchmark LR file (MATLAB imresize + imwrite)
    sr = quantize_uint8(model(lr / 255))             # SR clamped to [0, 1], x255, rounded half-to-even
    psnr = calculate_psnr(sr, hr, crop_border=s)     # crop, then Y (BT.601, 16-235), float64
    ssim = calculate_ssim(sr, hr, crop_border=s)

Protocol choices (measured against the published bicubic rows, see README "eval"):

* Y **is rounded** to integers, as MATLAB's ``rgb2ycbcr`` on uint8 images does (the published tables come from
  MATLAB). BasicSR's ``to_y_channel`` keeps Y unrounded; measured on the bicubic x4 rows, the unrounded Y gives
  SSIM +0.0005..+0.0009 above the published values (Set5 0.8113 vs 0.8104) while rounded Y lands within
  0.0003 (Set5 28.419/0.8102, Set14 25.993/0.7024, B100 25.958/0.6674, Urban100 23.140/0.6575). ``round_y``
  arguments let callers pick BasicSR's variant.
* Single-channel (grayscale) images are scored on their raw gray values, without the Y transform, as the MATLAB
  benchmark scripts and BasicSR's offline ``scripts/metrics/calculate_psnr_ssim.py`` do. This is what reproduces
  the published Set14 row (``bridge.png`` is gray).
"""
from __future__ import annotations

import math

import numpy as np
import torch

# BT.601 "studio swing" luma for RGB in [0, 1] (MATLAB rgb2ycbcr; BasicSR color_util.rgb2ycbcr).
Y_OFFSET = 16.0
Y_COEFFS = (65.481, 128.553, 24.966)

# SSIM constants of Wang et al. 2004 for 8-bit data (BasicSR psnr_ssim._ssim).
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an (H, W[, C]) image at the bottom/right so that H and W are multiples of ``scale``.

    MATLAB benchmark scripts (``modcrop.m``) and BasicSR ``utils/matlab_functions.py`` keep the top-left part.
    """
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB ``imresize`` 'bicubic').

    w(t) = 1.5|t|^3 - 2.5|t|^2 + 1 for |t| <= 1; -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2 for 1 < |t| <= 2; 0 otherwise.
    """
    a = x.abs()
    a2, a3 = a * a, a * a * a
    inner = (1.5 * a3 - 2.5 * a2 + 1) * (a <= 1)
    outer = (-0.5 * a3 + 2.5 * a2 - 4 * a + 2) * ((a > 1) & (a <= 2))
    return inner + outer


def symmetric_index(idx: torch.Tensor, length: int) -> torch.Tensor:
    """Map 0-based indices outside [0, length) into it by MATLAB 'symmetric' padding (mirror incl. the edge).

    -1 -> 0, -2 -> 1, length -> length-1, length+1 -> length-2; periodic with period 2*length.
    """
    m = torch.remainder(idx, 2 * length)
    return torch.where(m < length, m, 2 * length - 1 - m)


def resize_weights(in_len: int, scale: float, antialiasing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Taps of MATLAB bicubic ``imresize`` along one axis: (weights, indices), both (out_len, taps).

    Follows MATLAB ``imresize.m`` / BasicSR ``calculate_weights_indices``: out_len = ceil(in_len * scale); output
    pixel x (1-based) samples input coordinate u = x / scale + 0.5 * (1 - 1 / scale); taps are the input pixels
    j = floor(u - width / 2) + {0 .. ceil(width) + 1}; when downscaling with antialiasing the kernel is stretched
    (width 4 / scale, weights scale * cubic(scale * (u - j))), else width 4 and cubic(u - j); each row is
    normalised to sum 1. Indices are 0-based with out-of-range taps folded back by symmetric padding.
    """
    out_len = int(math.ceil(in_len * scale))
    stretch = scale < 1 and antialiasing
    kernel_width = 4.0 / scale if stretch else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    j = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - j
    weights = scale * cubic(scale * dist) if stretch else cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights, symmetric_index(j.long() - 1, in_len)


def resize_matrix(in_len: int, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """The dense (out_len, in_len) float64 matrix of ``resize_weights``: resizing an axis is ``matrix @ x``."""
    weights, cols = resize_weights(in_len, scale, antialiasing)
    mat = torch.zeros(weights.shape[0], in_len, dtype=torch.float64)
    return mat.scatter_add_(1, cols, weights)


def _banded_matmul(mat: torch.Tensor, x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """``mat @ x`` over the last-but-one axis of ``x``, skipping the zero part of the banded ``mat``.

    Output rows are taken in blocks; each block only multiplies the contiguous range of input rows where its
    weights are non-zero (identical result, ~1/3 of the dense work for x4).
    """
    out_len = mat.shape[0]
    out = x.new_empty(*x.shape[:-2], out_len, x.shape[-1])
    for r0 in range(0, out_len, block):
        rows = mat[r0 : r0 + block]
        nz = torch.nonzero(rows.abs().sum(dim=0)).flatten()
        c0, c1 = int(nz[0]), int(nz[-1]) + 1
        out[..., r0 : r0 + block, :] = rows[:, c0:c1] @ x[..., c0:c1, :]
    return out


def imresize(x: torch.Tensor, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """MATLAB-compatible bicubic resize of a (C, H, W) or (N, C, H, W) float tensor by ``scale``.

    Separable: ``resize_matrix(H) @ x @ resize_matrix(W).T``, i.e. the H axis then the W axis (BasicSR order),
    each pass a float64 matmul (restricted to the matrix band). Returned as float64; the output is neither
    rounded nor clipped (use ``quantize_uint8`` for the MATLAB-on-uint8 behaviour). Any factor works
    (1/2, 1/3, 1/4, 2, 3, 4, ...).
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"imresize expects (C,H,W) or (N,C,H,W), got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    mh = resize_matrix(x.shape[-2], scale, antialiasing)
    mw = resize_matrix(x.shape[-1], scale, antialiasing)
    x = _banded_matmul(mh, x)
    return _banded_matmul(mw, x.transpose(-1, -2)).transpose(-1, -2).contiguous()


def quantize_uint8(x: np.ndarray | torch.Tensor, value_range: float = 1.0) -> np.ndarray:
    """Clip to [0, value_range], map to [0, 255] and round half-to-even to uint8 (BasicSR ``tensor2img``).

    With ``value_range=1`` the input is a [0, 1] float image; with ``value_range=255`` it is already in
    [0, 255] (MATLAB ``imwrite``/``uint8()`` of a double image: the values differ only at exact .5 ties).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64).cpu().numpy()
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, value_range) * (255.0 / value_range)
    return np.round(x).astype(np.uint8)


def hwc_to_tensor01(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> float64 (C, H, W) tensor in [0, 1] (MATLAB ``im2double``)."""
    arr = img[..., None] if img.ndim == 2 else img
    return torch.from_numpy(np.array(arr.transpose(2, 0, 1), dtype=np.float64)) / 255.0


def tensor01_to_hwc_uint8(t: torch.Tensor, gray: bool) -> np.ndarray:
    """float (C, H, W) tensor in [0, 1] -> uint8 (H, W, C), or (H, W) when ``gray`` (clip + round)."""
    out = quantize_uint8(t).transpose(1, 2, 0)
    return out[..., 0] if gray else out


def bicubic_downscale_uint8(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmark LR image: MATLAB ``imresize(im2double(hr), 1/scale, 'bicubic')`` written by ``imwrite``.

    ``hr`` is uint8 (H, W) or (H, W, C) and should already be modcropped. Returns uint8 of the same layout
    (BasicSR ``scripts/matlab_scripts/generate_bicubic_img.m``).
    """
    lr = imresize(hwc_to_tensor01(hr), 1.0 / scale)
    return tensor01_to_hwc_uint8(lr, gray=hr.ndim == 2)


def bicubic_upscale_uint8(lr: np.ndarray, scale: int) -> np.ndarray:
    """The "Bicubic" baseline SR: MATLAB bicubic ``imresize(lr, scale)`` of the uint8 LR, rounded to uint8."""
    sr = imresize(hwc_to_tensor01(lr), float(scale))
    return tensor01_to_hwc_uint8(sr, gray=lr.ndim == 2)


def rgb_to_y(img: np.ndarray, round_y: bool = True) -> np.ndarray:
    """Luma Y (BT.601, MATLAB ``rgb2ycbcr``) of a uint8 RGB (H, W, 3) image, as float64 in [16, 235].

    Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B = uint8 / 255 (BasicSR ``to_y_channel``).
    ``round_y=True`` (the protocol default) rounds Y to integers, half away from zero, as MATLAB's conversion of
    the double result to uint8 does.
    """
    coeffs = np.array(Y_COEFFS, dtype=np.float64) / 255.0
    y = np.asarray(img, dtype=np.float64) @ coeffs + Y_OFFSET
    return np.floor(y + 0.5) if round_y else y


def _crop(img: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border == 0:
        return img
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def scoring_channel(img: np.ndarray, round_y: bool = True) -> np.ndarray:
    """The float64 (H, W) or (H, W, C) array that PSNR/SSIM are computed on.

    RGB (H, W, 3) -> Y (float64, rounded by default); single-channel (H, W) or (H, W, 1) -> raw gray values
    (the MATLAB benchmark scripts skip the Y transform for gray images); anything else -> all channels.
    """
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        return rgb_to_y(img, round_y)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    return img.astype(np.float64)


def _check_pair(img1: np.ndarray, img2: np.ndarray) -> None:
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")


def calculate_psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int, round_y: bool = True) -> float:
    """PSNR in dB of two uint8 images (BasicSR ``calculate_psnr``, test_y_channel=True).

    Crop ``crop_border`` pixels from every side first, then take Y (or raw gray), then float64
    PSNR = 10 log10(255^2 / MSE); ``inf`` when the images are equal.
    """
    _check_pair(img1, img2)
    a = scoring_channel(_crop(img1, crop_border), round_y)
    b = scoring_channel(_crop(img2, crop_border), round_y)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian (OpenCV ``getGaussianKernel(11, 1.5)``); the SSIM window is its outer product."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(maps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (K, H, W) float64 maps, 'valid' region only (BasicSR crops [5:-5, 5:-5]).

    Written as 11 in-place shifted multiply-adds per axis (float64 ``conv2d`` on CPU is several times slower).
    """
    g = gaussian_window_1d().tolist()
    n = len(g)
    h, w = maps.shape[-2:]
    rows = maps[:, 0 : h - n + 1, :] * g[0]
    for k in range(1, n):
        rows.add_(maps[:, k : h - n + 1 + k, :], alpha=g[k])
    out = rows[:, :, 0 : w - n + 1] * g[0]
    for k in range(1, n):
        out.add_(rows[:, :, k : w - n + 1 + k], alpha=g[k])
    return out


def ssim_map_mean(a: np.ndarray, b: np.ndarray, strip: int = 32) -> float:
    """Mean SSIM of two float64 (H, W) arrays in [0, 255] (Wang et al. 2004; BasicSR ``_ssim``).

    mu = G*x, sigma^2 = G*x^2 - mu^2, sigma12 = G*(xy) - mu1 mu2 with G the 11x11 Gaussian (sigma 1.5) over
    the valid region; SSIM = ((2 mu1 mu2 + C1)(2 sigma12 + C2)) / ((mu1^2 + mu2^2 + C1)(sigma1^2 + sigma2^2 + C2)).
    Only sigma1^2 + sigma2^2 is needed, so G*(x^2 + y^2) is filtered as one map. Computed in strips of
    ``strip`` output rows so the working set stays in cache.
    """
    x = torch.from_numpy(np.array(a, dtype=np.float64))
    y = torch.from_numpy(np.array(b, dtype=np.float64))
    h = x.shape[0]
    n = SSIM_WINDOW
    total, count = 0.0, 0
    for r0 in range(0, h - n + 1, strip):
        xs, ys = x[r0 : r0 + strip + n - 1], y[r0 : r0 + strip + n - 1]
        mu1, mu2, sq, xy = _filter_valid(torch.stack([xs, ys, xs * xs + ys * ys, xs * ys]))
        mu12 = mu1 * mu2
        mu_sq = mu1 * mu1 + mu2 * mu2
        num = (2 * mu12 + SSIM_C1) * (2 * (xy - mu12) + SSIM_C2)
        den = (mu_sq + SSIM_C1) * (sq - mu_sq + SSIM_C2)
        ssim = num / den
        total += float(ssim.sum())
        count += ssim.numel()
    return total / count


def calculate_psnr_ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int, round_y: bool = True):
    """(PSNR, SSIM) of two uint8 images, as ``calculate_psnr`` and ``calculate_ssim`` (Y computed once)."""
    _check_pair(img1, img2)
    a = scoring_channel(_crop(img1, crop_border), round_y)
    b = scoring_channel(_crop(img2, crop_border), round_y)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    if a.ndim == 2:
        return psnr, ssim_map_mean(a, b)
    return psnr, float(np.mean([ssim_map_mean(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def calculate_ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int, round_y: bool = True) -> float:
    """SSIM of two uint8 images (BasicSR ``calculate_ssim``, test_y_channel=True).

    Same crop and Y/gray choice as ``calculate_psnr``; multi-channel non-RGB input is the mean over channels.
    """
    _check_pair(img1, img2)
    a = scoring_channel(_crop(img1, crop_border), round_y)
    b = scoring_channel(_crop(img2, crop_border), round_y)
    if a.ndim == 2:
        return ssim_map_mean(a, b)
    return float(np.mean([ssim_map_mean(a[..., c], b[..., c]) for c in range(a.shape[2])]))
