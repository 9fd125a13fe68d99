"""`bsr upscale`: Set5 PSNR equals `bsr eval`'s, file fidelity (modes, depth, orientation), batch failures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bsr_cli import protocol
from bsr_cli.cli import main

SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "benchmark" / "Set5"
MODEL = "e2fif"  # conv-only binary net (no global pooling): whole-image and tiled runs are comparable


@pytest.fixture(scope="module")
def checkpoint(e2fif_checkpoint) -> Path:
    """A random-init e2fif x4 packed checkpoint (conftest)."""
    return e2fif_checkpoint


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def upscale_args(checkpoint: Path, *rest) -> list:
    return ["upscale", *rest, "--model", MODEL, "--checkpoint", checkpoint, "--threads", "1"]


# --------------------------------------------------------------------------- Set5 vs eval


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared/datasets absent")
def test_set5_folder_psnr_equals_eval(tmp_path, checkpoint, capsys):
    from bsr_cli import evaluate, weights

    lr_dir, out_dir = tmp_path / "lr", tmp_path / "sr"
    lr_dir.mkdir()
    hrs = {}
    for path in sorted(SET5.glob("*.png")):
        hr = protocol.modcrop(evaluate.load_hr(path), 4)
        hrs[path.stem] = hr
        Image.fromarray(protocol.bicubic_downscale_uint8(hr, 4)).save(lr_dir / path.name)
    rc, out, _ = run(upscale_args(checkpoint, lr_dir, "-o", out_dir, "--suffix", "", "--json"), capsys)
    assert rc == 0
    doc = json.loads(out)
    assert doc["counts"] == {"done": 5, "skipped": 0, "failed": 0}
    psnrs = []
    for stem, hr in hrs.items():
        sr = np.asarray(Image.open(out_dir / f"{stem}.png"))
        assert sr.shape == hr.shape  # exactly 4x the LR
        psnrs.append(protocol.calculate_psnr(sr, hr, crop_border=4))
    torch.set_num_threads(1)
    net = weights.load_model(MODEL, 4, checkpoint=checkpoint)
    ref = evaluate.evaluate(MODEL, "Set5", 4, data_dir=SET5.parent, sr_fn=evaluate.model_sr(net, 4))
    assert ref["images"] == 5
    assert abs(float(np.mean(psnrs)) - ref["psnr"]) <= 0.01


# --------------------------------------------------------------------------- fidelity


def _make_inputs(folder: Path) -> dict[str, tuple[str, int, tuple[int, int]]]:
    """Write one small image per mode; returns name -> (expected output mode, bit depth, output size)."""
    rng = np.random.default_rng(0)
    w, h = 12, 8
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a = rng.integers(0, 256, (h, w), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, a])).save(folder / "rgba.png")
    Image.fromarray(np.dstack([rgb[..., 0], a])).save(folder / "la.png")
    Image.fromarray(rgb[..., 0]).save(folder / "l.png")
    Image.fromarray(rgb).quantize(16).save(folder / "p.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "i16.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: a 12x8 file shows as 8x12
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif.tobytes())
    big = (w * 4, h * 4)
    return {
        "rgba_x4.png": ("RGBA", 8, big), "la_x4.png": ("LA", 8, big), "l_x4.png": ("L", 8, big),
        "p_x4.png": ("RGB", 8, big), "i16_x4.png": ("I;16", 16, big), "cmyk_x4.jpg": ("RGB", 8, big),
        "rotated_x4.jpg": ("RGB", 8, (h * 4, w * 4)),
    }


def test_modes_depth_size_orientation(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    expected = _make_inputs(src)
    rc, _, err = run(upscale_args(checkpoint, src, "-o", out), capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, (mode, depth, size) in expected.items():
        with Image.open(out / name) as im:
            got_mode = "I;16" if im.mode in ("I", "I;16") else im.mode
            assert (got_mode, im.size) == (mode, size), name
            if depth == 16:
                arr = np.asarray(im)
                assert arr.max() > 255 and arr.dtype in (np.uint16, np.int32)
            if name == "rotated_x4.jpg":
                assert im.getexif().get(0x0112, 1) == 1  # orientation applied, tag reset
    # alpha was upscaled (bicubic), not dropped or made opaque
    alpha = np.asarray(Image.open(out / "rgba_x4.png"))[..., 3]
    assert alpha.min() < 100 and alpha.max() > 150


def test_gray_stays_gray_and_16bit_values(tmp_path, checkpoint, capsys):
    """16-bit gray output is the 8-bit-equivalent result scaled by 257, give or take rounding."""
    src = tmp_path / "g16.png"
    src8 = tmp_path / "g8.png"
    g = np.random.default_rng(1).integers(0, 256, (10, 9), dtype=np.uint8)
    Image.fromarray(g.astype(np.uint16) * 257).save(src)
    Image.fromarray(g).save(src8)
    rc, _, err = run(upscale_args(checkpoint, src, src8, "-o", tmp_path / "o"), capsys)
    assert rc == 0, err
    o16 = np.asarray(Image.open(tmp_path / "o" / "g16_x4.png")).astype(np.float64)
    o8 = np.asarray(Image.open(tmp_path / "o" / "g8_x4.png")).astype(np.float64)
    assert o16.shape == o8.shape == (40, 36)
    assert np.abs(o16 / 257.0 - o8).max() <= 1.0


# --------------------------------------------------------------------------- batch safety


def test_bad_files_are_listed_once_and_leave_nothing(tmp_path, checkpoint, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    img = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(img).save(src / "a.png")
    Image.fromarray(img).save(src / "b.jpg")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"garbage" * 20)
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image\n")
    rc, out_json, err = run(upscale_args(checkpoint, src, "-o", out, "--json"), capsys)
    assert rc == 1
    doc = json.loads(out_json)
    assert doc["counts"] == {"done": 2, "skipped": 0, "failed": 2}
    failed = sorted(Path(f["input"]).name for f in doc["files"] if f["status"] == "failed")
    assert failed == ["corrupt.png", "empty.png"]
    for name in failed:
        assert err.count(name) == 1, err
    assert any("notes.txt" in n for n in doc["notes"])
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.jpg"]  # no partial / temp files


def test_existing_outputs_kept_unless_force_and_skip_resumes(tmp_path, checkpoint, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(src)
    target = tmp_path / "a_x4.png"
    target.write_bytes(b"keep me")
    rc, _, err = run(upscale_args(checkpoint, src), capsys)
    assert rc == 1 and "exists" in err and target.read_bytes() == b"keep me"
    rc, _, _ = run(upscale_args(checkpoint, src, "--skip-existing"), capsys)
    assert rc == 0 and target.read_bytes() == b"keep me"
    rc, _, _ = run(upscale_args(checkpoint, src, "--force"), capsys)
    assert rc == 0 and Image.open(target).size == (24, 24)


def test_never_overwrites_input_and_folder_needs_output(tmp_path, checkpoint, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(src)
    before = src.read_bytes()
    rc, _, err = run(upscale_args(checkpoint, src, "--suffix", "", "--force"), capsys)
    assert rc == 1 and "input" in err and src.read_bytes() == before
    rc, _, err = run(upscale_args(checkpoint, tmp_path), capsys)
    assert rc == 2 and "-o" in err
