"""Image reading/writing: modes, bit depths, EXIF orientation, errors, tensor ranges, atomic writes."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from bsr_cli import imageio
from bsr_cli.errors import BsrError

RNG = np.random.default_rng(0)


def test_gray_rgb_rgba_la_modes(tmp_path):
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "l.png")
    Image.fromarray(np.dstack([rgb[..., 0], alpha]), mode="LA").save(tmp_path / "la.png")

    img = imageio.read_image(tmp_path / "rgb.png")
    assert (img.pixels == rgb).all() and img.alpha is None and img.bit_depth == 8 and img.mode == "RGB"
    img = imageio.read_image(tmp_path / "rgba.png")
    assert (img.pixels == rgb).all() and (img.alpha == alpha).all()
    img = imageio.read_image(tmp_path / "l.png")
    assert img.pixels.shape == (6, 5, 1) and (img.pixels[..., 0] == rgb[..., 0]).all() and img.is_gray
    img = imageio.read_image(tmp_path / "la.png")
    assert (img.pixels[..., 0] == rgb[..., 0]).all() and (img.alpha == alpha).all()


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (4, 3))
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.save(tmp_path / "p.png")
    img = imageio.read_image(tmp_path / "p.png")
    assert img.alpha is None and img.pixels[1, 1].tolist() == [0, 255, 0] and img.pixels[0, 0].tolist() == [255, 0, 0]
    p.save(tmp_path / "pt.png", transparency=0)
    img = imageio.read_image(tmp_path / "pt.png")
    assert img.alpha[0, 0] == 0 and img.alpha[1, 1] == 255


def test_gray_16bit_png_and_cmyk(tmp_path):
    g16 = RNG.integers(0, 65536, (7, 4), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    img = imageio.read_image(tmp_path / "g16.png")
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16 and (img.pixels[..., 0] == g16).all()
    Image.new("CMYK", (3, 2), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    img = imageio.read_image(tmp_path / "c.tif")
    assert img.pixels.shape == (2, 3, 3) and img.pixels[0, 0].tolist() == [255, 0, 0]


def _filtered_png16(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG whose rows cycle through filters 0..4, encoded by hand (PNG spec 9.2)."""
    h, w, c = pixels.shape
    bpp = 2 * c
    data = pixels.astype(">u2").reshape(h, w * c).view(np.uint8).astype(np.int64)
    raw = b""
    prev = np.zeros(w * bpp, np.int64)
    for y in range(h):
        ftype, line = y % 5, data[y]
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if ftype == 0:
            f = line
        elif ftype == 1:
            f = line - left
        elif ftype == 2:
            f = line - prev
        elif ftype == 3:
            f = line - (left + prev) // 2
        else:
            pa, pb, pc = np.abs(prev - upleft), np.abs(left - upleft), np.abs(left + prev - 2 * upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            f = line - pred
        raw += bytes([ftype]) + (f % 256).astype(np.uint8).tobytes()
        prev = line

    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16bit_rgb_png_all_filters(tmp_path):
    pix = RNG.integers(0, 65536, (10, 9, 3), dtype=np.uint16)
    (tmp_path / "f.png").write_bytes(_filtered_png16(pix))
    img = imageio.read_image(tmp_path / "f.png")
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16 and (img.pixels == pix).all()


def test_16bit_rgba_png_roundtrip_with_icc(tmp_path):
    pix = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    alpha = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)
    imageio.write_image(tmp_path / "a.png", pix, alpha, bit_depth=16, icc_profile=b"profile-bytes")
    img = imageio.read_image(tmp_path / "a.png")
    assert (img.pixels == pix).all() and (img.alpha == alpha).all() and img.icc_profile == b"profile-bytes"
    # Pillow reads the same file (as 8-bit): the PNG is valid
    assert Image.open(tmp_path / "a.png").size == (7, 5)


def test_exif_orientation_applied_and_reset(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    Image.fromarray(arr).save(tmp_path / "o.png", exif=exif.tobytes())
    img = imageio.read_image(tmp_path / "o.png")
    assert img.pixels.shape == (8, 4, 3)
    assert img.pixels[0, 3].tolist() == [255, 255, 255]  # top-left moved to top-right
    e = Image.Exif()
    e.load(img.exif)
    assert e.get(0x0112) == 1


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp", ".tif"])
def test_lossless_formats_roundtrip(tmp_path, ext):
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = imageio.write_image(tmp_path / f"x{ext}", rgb)
    assert (imageio.read_image(path).pixels == rgb).all()


def test_jpeg_and_16bit_fallback(tmp_path):
    rgb = np.full((8, 8, 3), 200, np.uint8)
    imageio.write_image(tmp_path / "x.jpg", rgb, alpha=np.zeros((8, 8), np.uint8))
    img = imageio.read_image(tmp_path / "x.jpg")
    assert img.alpha is None and abs(int(img.pixels.mean()) - 200) <= 2
    imageio.write_image(tmp_path / "y.bmp", np.full((2, 2, 3), 257 * 9, np.uint16), bit_depth=16)
    assert imageio.read_image(tmp_path / "y.bmp").pixels.max() == 9  # 8-bit only format


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"not an image at all", "not a recognised")])
def test_unreadable_files_raise_one_line_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(BsrError, match=f"cannot read image {path}: {reason}"):
        imageio.read_image(path)


def test_truncated_png_raises(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BsrError, match="cannot read image"):
        imageio.read_image(tmp_path / "t.png")


def test_tensor_ranges():
    px = np.array([[[0, 128, 255]]], np.uint8)
    t = imageio.to_float_tensor(px)
    assert t.shape == (1, 3, 1, 1) and t.dtype == torch.float32
    assert t.flatten().tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    t16 = imageio.to_float_tensor(np.array([[65535, 0]], np.uint16))
    assert t16.shape == (1, 1, 1, 2) and t16.flatten().tolist() == [1.0, 0.0]
    back = imageio.from_float_tensor(torch.tensor([[[[2.5 / 255, 3.5 / 255, -1.0, 2.0]]]], dtype=torch.float64))
    assert back.dtype == np.uint8 and back[..., 0].tolist() == [[2, 4, 0, 255]]  # half-to-even, clamped
    assert imageio.from_float_tensor(torch.ones(1, 1, 1, 1), 16)[0, 0, 0] == 65535


def test_write_is_atomic(tmp_path, monkeypatch):
    rgb = np.zeros((4, 4, 3), np.uint8)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        imageio.write_image(tmp_path / "out.png", rgb)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


def test_png_written_at_level_1_and_lossless(tmp_path):
    """PNG output uses zlib level 1 (imageio.PNG_LEVEL, OpenCV's default): the IDAT stream says so (FLEVEL 0 in the
    zlib header) and the pixels read back exactly, 8- and 16-bit."""
    import zlib as _zlib

    from bsr_cli import imageio

    rng = np.random.default_rng(0)
    for arr, bits in ((rng.integers(0, 256, (33, 47, 3), dtype=np.uint8), 8),
                      (rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16), 16)):
        path = imageio.write_image(tmp_path / f"x{bits}.png", arr, bit_depth=bits)
        data = path.read_bytes()
        idat = data.index(b"IDAT") + 4
        assert data[idat] == 0x78 and data[idat + 1] >> 6 == 0  # zlib header: FLEVEL 0 = fastest (level 1)
        assert _zlib.decompress(data[idat:data.index(b"IEND") - 8])  # a complete stream
        back = imageio.read_image(path)
        assert np.array_equal(back.pixels if hasattr(back, "pixels") else back, arr)
