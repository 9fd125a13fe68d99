"""Training data: every HR image decoded once, its LR made once with the protocol's MATLAB bicubic (uint8, as the
benchmark LR files), and random aligned (LR, HR) patch pairs with the same flip / 90-degree rotation on both."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bsr_cli import files as _files
from bsr_cli.errors import BsrError

IMAGE_EXTS = set(_files.IMAGE_EXTENSIONS)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (``bsr_cli.files.list_images``: sorted, hidden files skipped);
    BsrError when the folder is missing or has none."""
    path = Path(folder)
    if not path.is_dir():
        raise BsrError(f"training folder not found: {path}")
    files = _files.list_images(path)
    if not files:
        raise BsrError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in training folder {path}")
    return files


def load_rgb_uint8(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (gray is replicated, alpha dropped), via ``bsr_cli.imageio``."""
    from bsr_cli.imageio import read_image

    img = read_image(path).pixels
    if img.dtype != np.uint8:
        raise BsrError(f"{path}: training expects 8-bit images, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def make_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 of one image: HR modcropped, LR = the protocol's MATLAB bicubic rounded to uint8."""
    from bsr_cli.protocol import bicubic_downscale_uint8, modcrop

    hr = np.ascontiguousarray(modcrop(hr, scale))
    return bicubic_downscale_uint8(hr, scale), hr


def dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of an (H, W, C) array: bit0 h-flip, bit1 v-flip, bit2 transpose."""
    if t & 1:
        img = img[:, ::-1]
    if t & 2:
        img = img[::-1]
    if t & 4:
        img = img.transpose(1, 0, 2)
    return img


class PatchSampler:
    """In-memory (LR, HR) uint8 pairs and a sampler of random aligned, augmented patch pairs."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, patch_size: int):
        self.scale = scale
        self.patch_size = patch_size
        self.pairs = [(lr, hr) for lr, hr in pairs if min(lr.shape[:2]) >= patch_size]
        if not self.pairs:
            raise BsrError(f"no training image is large enough for LR patches of {patch_size} px at x{scale}")
        self.targets: list[np.ndarray] | None = None  # per image, a teacher's HR-size output (set_targets)

    @classmethod
    def from_folder(cls, folder: str | Path, scale: int, patch_size: int, max_images: int | None = None):
        """Decode every image of ``folder`` once and make its LR once."""
        files = list_images(folder)[:max_images]
        pairs = []
        for path in files:
            try:
                pairs.append(make_pair(load_rgb_uint8(path), scale))
            except BsrError:
                raise
            except Exception as exc:  # unreadable file: say which one
                raise BsrError(f"cannot read training image {path}: {exc}") from exc
        return cls(pairs, scale, patch_size)

    def __len__(self) -> int:
        return len(self.pairs)

    def crop(self, index: int, y: int, x: int, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The LR patch at LR (y, x) and its HR patch at (scale*y, scale*x), both with transform ``t``."""
        lr, hr = self.pairs[index]
        p, s = self.patch_size, self.scale
        lp = lr[y : y + p, x : x + p]
        hp = hr[s * y : s * (y + p), s * x : s * (x + p)]
        return dihedral(lp, t), dihedral(hp, t)

    def lr_pixels(self) -> int:
        return sum(lr.shape[0] * lr.shape[1] for lr, _ in self.pairs)

    def set_targets(self, targets: list[np.ndarray]) -> None:
        """Per image, an (s*H, s*W, 3) array (a teacher's output on the whole LR image) that `sample(...,
        with_targets=True)` crops and transforms exactly as the HR patch."""
        if len(targets) != len(self.pairs) or any(t.shape != hr.shape for t, (_, hr) in zip(targets, self.pairs)):
            raise ValueError("one HR-size target per training image expected")
        self.targets = targets

    def sample(self, batch_size: int, rng: np.random.Generator, with_targets: bool = False):
        """A batch: LR uint8 (N, p, p, 3) and HR uint8 (N, s*p, s*p, 3); with ``with_targets`` also the targets'
        patches at the HR patches' places (N, s*p, s*p, 3). The same random draws either way."""
        lrs, hrs, tgs = [], [], []
        p, s = self.patch_size, self.scale
        for _ in range(batch_size):
            i = int(rng.integers(len(self.pairs)))
            h, w = self.pairs[i][0].shape[:2]
            y = int(rng.integers(h - p + 1))
            x = int(rng.integers(w - p + 1))
            t = int(rng.integers(8))
            lp, hp = self.crop(i, y, x, t)
            lrs.append(lp)
            hrs.append(hp)
            if with_targets:
                tgs.append(dihedral(self.targets[i][s * y : s * (y + p), s * x : s * (x + p)], t))
        if with_targets:
            return np.stack(lrs), np.stack(hrs), np.stack(tgs)
        return np.stack(lrs), np.stack(hrs)


def to_tensor(batch: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1] on ``device`` (channels_last strides if asked); a float
    batch (cached teacher targets, already in [0, 1]) is only converted."""
    t = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float()
    if batch.dtype == np.uint8:
        t = t.div_(255.0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t.contiguous(memory_format=fmt)
