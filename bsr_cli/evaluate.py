"""Evaluation loop: one model x one dataset x one scale -> mean PSNR / SSIM under the field's protocol.

Per HR image (``bsr_cli.protocol``): read, 16-bit -> 8-bit, modcrop(scale); LR = bicubic_downscale_uint8 (the
benchmark LR file); SR = model(LR) clamped to [0, 1] and rounded to uint8; PSNR and SSIM on Y (RGB) or raw gray
values (single-channel images), ``scale`` pixels cropped per side. An unreadable image is collected into
``failures`` (with its path) and the others are still evaluated.

Models: ``bicubic`` is built in (MATLAB bicubic ``imresize`` of the uint8 LR, on the image's own channels). Any
other name is loaded with ``bsr_cli.backends.load(name, scale, backend=...)``, which must give a callable
taking (1, 3, H, W) RGB float32 in [0, 1] and returning (1, 3, sH, sW). Gray images are replicated to 3 channels
for such a model, and its output is turned back to gray as the mean of the 3 output channels (before rounding).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bsr_cli import protocol
from bsr_cli.datasets import get_dataset, resolve_dataset
from bsr_cli.errors import BsrError
from bsr_cli.imageio import read_image, to_float_tensor, write_image

SCALES = (2, 3, 4)
BACKENDS = ("auto", "torch", "onnx", "bitpack")  # bsr_cli.backends.CHOICES

# uint8 LR (H, W) or (H, W, 3) -> uint8 SR of the same layout, s times larger
SRFunction = Callable[[np.ndarray], np.ndarray]
# progress(done, total, path)
ProgressFn = Callable[[int, int, Path], None]


def check_scale(scale: int) -> int:
    """The benchmark scales are 2, 3 and 4; anything else is a user error."""
    if scale not in SCALES:
        raise BsrError(f"scale must be one of 2, 3, 4 (got {scale})")
    return scale


def bicubic_sr(scale: int) -> SRFunction:
    """The "Bicubic" baseline: MATLAB bicubic ``imresize(lr, scale)``, rounded to uint8."""

    def run(lr: np.ndarray) -> np.ndarray:
        with protocol_threads():
            return protocol.bicubic_upscale_uint8(lr, scale)

    return run


def model_sr(model: Callable[[torch.Tensor], torch.Tensor], scale: int) -> SRFunction:
    """Wrap a network (RGB float [0, 1] in, RGB out) as uint8 -> uint8; gray in -> mean of outputs -> gray."""

    def run(lr: np.ndarray) -> np.ndarray:
        gray = lr.ndim == 2
        rgb = np.repeat(lr[..., None], 3, axis=2) if gray else lr
        with torch.inference_mode():
            out = model(to_float_tensor(rgb))
        out = out.detach().to(torch.float64)[0].clamp(0, 1)
        if gray:
            out = out.mean(dim=0, keepdim=True)
        expected = (lr.shape[0] * scale, lr.shape[1] * scale)
        if tuple(out.shape[-2:]) != expected:
            raise BsrError(f"model output is {tuple(out.shape[-2:])}, expected {expected} at x{scale}")
        return protocol.tensor01_to_hwc_uint8(out, gray=gray)

    return run


def load_sr_function(model_name: str, scale: int, backend: str = "auto", threads: int | None = None,
                     float_precision: str = "fp32") -> SRFunction:
    """``bicubic`` or a model loaded by ``bsr_cli.backends.load`` (``auto``: bitpack for binary-activation models).

    The returned function has an ``info`` dict: what ran (model, backend and why, threads, checkpoint, sha256).
    """
    if backend not in BACKENDS:
        raise BsrError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if model_name.lower() == "bicubic":
        fn = bicubic_sr(scale)
        fn.info = {"model": "bicubic", "backend": "protocol", "backend_reason": "MATLAB bicubic imresize"}
        return fn
    from bsr_cli import backends

    loaded = backends.load(model_name, scale, backend=backend, threads=threads, float_precision=float_precision)
    fn = model_sr(loaded.model, scale)
    fn.info = loaded.describe()
    return fn


def default_model_name(scale: int) -> str:
    """The manifest's default model for ``scale`` (``bsr_cli.weights.default_model``), else ``bicubic``."""
    from bsr_cli.weights import default_model

    return default_model(scale) or "bicubic"


def load_hr(path: Path) -> np.ndarray:
    """An HR benchmark image as uint8 (H, W) gray or (H, W, 3) RGB; alpha dropped, 16-bit rounded to 8-bit."""
    img = read_image(path)
    pixels = img.pixels
    if img.bit_depth == 16:
        pixels = np.round(pixels.astype(np.float64) / 257.0).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


@contextmanager
def protocol_threads(n: int = 1):
    """Run the protocol arithmetic on ``n`` torch threads (its small float64 ops lose far more to thread
    hand-offs than they gain, badly so on a busy machine); the model itself keeps torch's setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def score_image(hr: np.ndarray, sr_fn: SRFunction, scale: int) -> tuple[float, float, np.ndarray]:
    """modcrop -> LR (uint8) -> SR (uint8) -> (PSNR, SSIM, SR), crop_border = scale."""
    hr = protocol.modcrop(hr, scale)
    if min(hr.shape[:2]) < 2 * scale + protocol.SSIM_WINDOW:
        raise BsrError(f"image too small for x{scale} evaluation ({hr.shape[1]}x{hr.shape[0]})")
    with protocol_threads():
        lr = protocol.bicubic_downscale_uint8(hr, scale)
    sr = sr_fn(lr)
    psnr, ssim = score_sr(sr, hr, scale)
    return psnr, ssim, sr


def score_sr(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """(PSNR, SSIM) of a uint8 SR image against its modcropped uint8 HR: Y channel (raw values for gray),
    ``scale`` pixels cropped per side. The one scoring step of ``bsr eval`` and ``bsr upscale --reference``."""
    if sr.shape != hr.shape:
        raise BsrError(f"SR is {sr.shape[1]}x{sr.shape[0]} but the reference (modcrop {scale}) is "
                       f"{hr.shape[1]}x{hr.shape[0]}")
    with protocol_threads():
        return protocol.calculate_psnr_ssim(sr, hr, crop_border=scale)


def evaluate(
    model_name: str,
    dataset: str,
    scale: int,
    data_dir: str | Path | None = None,
    save_images: str | Path | None = None,
    progress: ProgressFn | None = None,
    backend: str = "auto",
    sr_fn: SRFunction | None = None,
) -> dict:
    """Mean PSNR/SSIM of ``model_name`` on ``dataset`` at ``scale``.

    Returns ``{"model", "scale", "dataset", "psnr", "ssim", "images", "seconds", "failures"}``; ``images`` counts
    the images scored, ``failures`` lists ``{"path", "error"}`` for the others. ``sr_fn`` (optional) is an
    already loaded model (``load_sr_function``) to reuse across datasets. ``save_images`` writes each SR image
    to ``<dir>/<model>/<dataset>/x<scale>/<stem>.png``.
    """
    check_scale(scale)
    info = get_dataset(dataset)
    paths = resolve_dataset(info.name, data_dir)
    if sr_fn is None:
        sr_fn = load_sr_function(model_name, scale, backend)
    out_dir = Path(save_images) / model_name / info.name / f"x{scale}" if save_images else None
    start = time.perf_counter()
    psnrs, ssims, failures = [], [], []
    for i, path in enumerate(paths):
        try:
            psnr, ssim, sr = score_image(load_hr(path), sr_fn, scale)
        except BsrError as exc:
            failures.append({"path": str(path), "error": str(exc)})
        else:
            psnrs.append(psnr)
            ssims.append(ssim)
            if out_dir is not None:
                write_image(out_dir / f"{path.stem}.png", sr)
        if progress is not None:
            progress(i + 1, len(paths), path)
    return {
        "model": model_name,
        "scale": scale,
        "dataset": info.name,
        "psnr": float(np.mean(psnrs)) if psnrs else None,
        "ssim": float(np.mean(ssims)) if ssims else None,
        "images": len(psnrs),
        "seconds": round(time.perf_counter() - start, 3),
        "failures": failures,
        "run": dict(getattr(sr_fn, "info", {})),
    }
