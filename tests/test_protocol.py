"""The evaluation protocol against hand-computed values and the published bicubic rows."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bsr_cli import protocol

BENCHMARK = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark"


def keys(t: float) -> float:
    """Keys cubic, a = -0.5, written out by hand (independent of bsr_cli.protocol.cubic)."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def resize_1d(x: np.ndarray, scale: float) -> np.ndarray:
    return protocol.imresize(torch.tensor(x, dtype=torch.float64).view(1, 1, -1), scale)[0, 0].numpy()


def test_downscale_x2_impulse_interior_is_antialiased_keys_width_8():
    # x0.5: kernel width 8, weights 0.5*keys(0.5*d) at distances d = u - j = +-0.5, +-1.5, +-2.5, +-3.5
    raw = {d: 0.5 * keys(0.5 * d) for d in (-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5)}
    norm = sum(raw.values())
    x = np.zeros(32)
    j0 = 16  # 1-based position of the impulse
    x[j0 - 1] = 1.0
    out = resize_1d(x, 0.5)
    assert out.shape == (16,)
    for i in range(1, 17):  # 1-based output index; u = i / 0.5 + 0.5 * (1 - 2)
        u = 2 * i - 0.5
        expected = raw.get(u - j0, 0.0) / norm
        assert out[i - 1] == pytest.approx(expected, abs=1e-12)
    assert out[7] == pytest.approx(0.5 * keys(0.25) / norm, abs=1e-12)  # d = -0.5 (i = 8)


def test_downscale_x2_impulse_at_border_mirrors_symmetrically():
    raw = {d: 0.5 * keys(0.5 * d) for d in (-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5)}
    norm = sum(raw.values())
    x = np.zeros(16)
    x[0] = 1.0
    out = resize_1d(x, 0.5)
    # output 1: u = 1.5; taps j = 1 (d 0.5) and its mirror j = 0 (d 1.5) both read input pixel 1
    assert out[0] == pytest.approx((raw[0.5] + raw[1.5]) / norm, abs=1e-12)
    # output 2: u = 3.5; j = 1 (d 2.5) and mirror j = 0 (d 3.5)
    assert out[1] == pytest.approx((raw[2.5] + raw[3.5]) / norm, abs=1e-12)


def test_upscale_x2_ramp_interior_is_exact_linear():
    x = np.arange(20, dtype=np.float64)
    out = resize_1d(x, 2.0)
    assert out.shape == (40,)
    for i in range(7, 34):  # away from the mirrored borders
        u = i / 2 + 0.25  # 1-based input coordinate of output i (1-based)
        assert out[i - 1] == pytest.approx(u - 1, abs=1e-12)


def test_upscale_x2_weights_are_keys_at_quarter_offsets():
    x = np.zeros(20)
    x[9] = 1.0  # 1-based 10
    out = resize_1d(x, 2.0)
    # output i = 20 -> u = 10.25: impulse at distance 0.25; output 21 -> u = 10.75: distance 0.75
    assert out[19] == pytest.approx(keys(0.25), abs=1e-12)
    assert out[20] == pytest.approx(keys(0.75), abs=1e-12)
    assert keys(0.25) == pytest.approx(1.5 / 64 - 2.5 / 16 + 1)


def test_downscale_x3_ramp_and_shapes():
    x = np.arange(30, dtype=np.float64)
    out = resize_1d(x, 1 / 3)
    assert out.shape == (10,)
    for i in range(3, 9):  # u = 3 i - 1 (integer), symmetric taps reproduce a ramp
        assert out[i - 1] == pytest.approx(3 * i - 2, abs=1e-9)
    img = torch.rand(3, 31, 17, dtype=torch.float64)
    assert protocol.imresize(img, 1 / 3).shape == (3, 11, 6)  # ceil(31/3), ceil(17/3)
    assert protocol.imresize(img, 3.0).shape == (3, 93, 51)
    assert protocol.imresize(img[None], 0.25).shape == (1, 3, 8, 5)


def test_imresize_matches_dense_matrices_and_constant_is_preserved():
    img = torch.rand(1, 1, 150, 130, dtype=torch.float64)
    for s in (0.25, 1 / 3, 0.5, 2.0, 3.0):
        mh = protocol.resize_matrix(150, s)
        mw = protocol.resize_matrix(130, s)
        assert torch.allclose(protocol.imresize(img, s), mh @ img @ mw.T, atol=1e-12)
    flat = torch.full((1, 40, 36), 0.3, dtype=torch.float64)
    assert torch.allclose(protocol.imresize(flat, 0.25), torch.full((1, 10, 9), 0.3, dtype=torch.float64))


def test_modcrop_and_quantize():
    img = np.zeros((13, 10, 3), np.uint8)
    assert protocol.modcrop(img, 4).shape == (12, 8, 3)
    assert protocol.modcrop(img[..., 0], 3).shape == (12, 9)
    q = protocol.quantize_uint8(np.array([-0.1, 2.5 / 255, 3.5 / 255, 1.2]))
    assert q.tolist() == [0, 2, 4, 255]  # clipped, half-to-even


def test_y_of_pure_colours():
    img = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = protocol.rgb_to_y(img, round_y=False)[0]
    assert y == pytest.approx([235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], abs=1e-9)
    assert protocol.rgb_to_y(img)[0].tolist() == [235.0, 16.0, 81.0, 145.0, 41.0]


def test_psnr_of_known_mse_after_crop():
    a = np.full((20, 20), 100, np.uint8)
    b = a + 10
    b[:2, :] = 0  # inside the crop: must not count
    assert protocol.calculate_psnr(a, b, crop_border=2) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert protocol.calculate_psnr(a, a, crop_border=0) == math.inf
    rgb1 = np.zeros((8, 8, 3), np.uint8)
    rgb2 = np.full((8, 8, 3), 255, np.uint8)  # Y 16 vs 235: MSE = 219^2
    assert protocol.calculate_psnr(rgb1, rgb2, 0) == pytest.approx(20 * math.log10(255 / 219), abs=1e-12)


def test_ssim_identical_and_constant_images():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert protocol.calculate_ssim(img, img, 4) == pytest.approx(1.0, abs=1e-12)
    a, b = np.full((30, 30), 100, np.uint8), np.full((30, 30), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)  # sigma terms vanish: C2/C2
    assert protocol.calculate_ssim(a, b, 0) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_direct_window_formula():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (14, 13)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    g1 = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g1, g1) / np.outer(g1, g1).sum()
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            m1, m2 = (w * pa).sum(), (w * pb).sum()
            v1, v2 = (w * pa * pa).sum() - m1**2, (w * pb * pb).sum() - m2**2
            cov = (w * pa * pb).sum() - m1 * m2
            c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
            vals.append((2 * m1 * m2 + c1) * (2 * cov + c2) / ((m1**2 + m2**2 + c1) * (v1 + v2 + c2)))
    assert protocol.ssim_map_mean(a, b, strip=2) == pytest.approx(np.mean(vals), abs=1e-12)


def test_gray_images_are_scored_on_raw_values():
    a = np.full((20, 20), 50, np.uint8)
    b = np.full((20, 20), 60, np.uint8)
    assert protocol.calculate_psnr(a, b, 0) == pytest.approx(10 * math.log10(255**2 / 100))
    assert protocol.calculate_psnr(a[..., None], b[..., None], 0) == pytest.approx(10 * math.log10(255**2 / 100))


def _bicubic_row(name: str, scale: int, round_y: bool = True) -> tuple[float, float]:
    from bsr_cli.evaluate import load_hr, protocol_threads

    psnrs, ssims = [], []
    with protocol_threads():
        for path in sorted((BENCHMARK / name).glob("*.png")):
            p, s = _score(load_hr(path), scale, round_y)
            psnrs.append(p)
            ssims.append(s)
    return float(np.mean(psnrs)), float(np.mean(ssims))


def _score(hr: np.ndarray, scale: int, round_y: bool) -> tuple[float, float]:
    hr = protocol.modcrop(hr, scale)
    sr = protocol.bicubic_upscale_uint8(protocol.bicubic_downscale_uint8(hr, scale), scale)
    return protocol.calculate_psnr_ssim(sr, hr, scale, round_y=round_y)


needs_data = pytest.mark.skipif(not BENCHMARK.is_dir(), reason=f"benchmark images not found at {BENCHMARK}")


@needs_data
@pytest.mark.parametrize("name,paper", [("Set5", (28.42, 0.8104)), ("Set14", (26.00, 0.7027))])
def test_published_bicubic_x4_rows(name, paper):
    psnr, ssim = _bicubic_row(name, 4)
    assert psnr == pytest.approx(paper[0], abs=0.03)
    assert ssim == pytest.approx(paper[1], abs=0.001)


@needs_data
def test_rounded_y_is_the_choice_that_matches_the_published_ssim():
    # measured: Set5 x4 unrounded Y -> SSIM 0.8113 (+0.0009), rounded Y -> 0.8102 (-0.0002); paper 0.8104
    rounded = _bicubic_row("Set5", 4, round_y=True)
    unrounded = _bicubic_row("Set5", 4, round_y=False)
    assert abs(rounded[1] - 0.8104) < abs(unrounded[1] - 0.8104)
    assert rounded[1] == pytest.approx(0.8102, abs=0.0002)
    assert unrounded[1] == pytest.approx(0.8113, abs=0.0002)
