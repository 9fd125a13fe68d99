"""`bsr upscale` reports what ran and what it cost: backend (auto), Eq. 7 OPs/params at the input size, latency,
and with --reference the same PSNR/SSIM as `bsr eval`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsr_cli import evaluate, protocol
from bsr_cli.cli import main

SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "benchmark" / "Set5"


def run(args: list, capsys) -> tuple[int, dict, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, json.loads(out.out) if out.out.strip() else {}, out.err


def test_json_fields_srresnet_fp_params_and_ops(tmp_path, capsys):
    """The FP twin (no binary activations): auto runs the fp32 path; params = 1,517,571 (SCALES Table III) and
    OPs = 64.98 G x (area / 128^2) (EBSR Table 4), every conv's MACs being proportional to the area."""
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(src)
    rc, doc, _ = run(["upscale", src, "-m", "srresnet-fp", "--threads", "1", "--json"], capsys)
    assert rc == 0
    assert (doc["model"], doc["backend"], doc["threads"]) == ("srresnet-fp", "onnx", 1)
    assert doc["backend_reason"].startswith("auto: no binary-activation convs")
    assert doc["checkpoint_sha256"] and doc["checkpoint"].endswith("srresnet-fp-x4.safetensors")
    f = doc["files"][0]
    assert f["cost"]["params"] == 1_517_571 and f["cost"]["bops"] == 0
    assert f["cost"]["ops"] == pytest.approx(64.98e9 * 120 / 128 ** 2, rel=0.005)
    assert f["latency_ms"] > 0
    assert f["megapixels_per_s"] == pytest.approx(48 * 40 / 1e6 / (f["latency_ms"] / 1e3), rel=1e-3)
    assert doc["total"]["images"] == 1 and doc["total"]["ops"] == f["cost"]["ops"]


def test_binary_model_runs_bitpack_by_default(tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(src)
    rc, doc, _ = run(["upscale", src, "-m", "e2fif", "--threads", "1", "--json"], capsys)
    assert rc == 0 and doc["backend"] == "bitpack" and doc["backend_reason"].startswith("auto: binary-activation")
    cost = doc["files"][0]["cost"]
    assert cost["bops"] > 0 and cost["ops"] == pytest.approx(cost["flops"] + cost["bops"] / 64)
    assert cost["params"] == pytest.approx(cost["params_fp"] + cost["params_bi"] / 32)


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared/datasets absent")
def test_reference_psnr_equals_bsr_eval(tmp_path, capsys):
    """The bundled e2fif-x4 on Set5's LR (made as bsr eval makes it), --reference = the Set5 HR folder: per image
    and mean, upscale's PSNR/SSIM equal bsr eval's (same model, same default backend) within 0.01 dB."""
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for path in sorted(SET5.glob("*.png")):
        hr = protocol.modcrop(evaluate.load_hr(path), 4)
        Image.fromarray(protocol.bicubic_downscale_uint8(hr, 4)).save(lr_dir / path.name)
    rc, up, err = run(["upscale", lr_dir, "-o", tmp_path / "sr", "-m", "e2fif", "--threads", "1",
                       "--reference", SET5, "--json"], capsys)
    assert rc == 0, err
    rc, ev, _ = run(["eval", "-m", "e2fif", "-d", "Set5", "--data-dir", SET5.parent, "--threads", "1", "--json"],
                    capsys)
    assert rc == 0
    res = ev["results"][0]
    assert res["run"]["backend"] == up["backend"] == "bitpack"
    assert up["total"]["scored"] == res["images"] == 5
    assert abs(up["total"]["psnr_mean"] - res["psnr"]) <= 0.01
    assert abs(up["total"]["ssim_mean"] - res["ssim"]) <= 1e-4
    # one image by hand through bsr eval's scoring function
    bird = next(f for f in up["files"] if Path(f["input"]).stem == "bird")
    from bsr_cli import backends

    sr_fn = evaluate.model_sr(backends.load("e2fif", 4, threads=1).model, 4)
    psnr, ssim, _ = evaluate.score_image(evaluate.load_hr(SET5 / "bird.png"), sr_fn, 4)
    assert abs(bird["psnr"] - psnr) <= 0.01 and abs(bird["ssim"] - ssim) <= 1e-4
    assert bird["reference"] == str(SET5 / "bird.png")


def test_compare_sheet_panels_and_exact_zoom(tmp_path, capsys):
    """--compare writes bicubic | bsr | reference; the crop row is the SR's own pixels zoomed 4x (nearest), taken
    where bsr differs most from bicubic."""
    from bsr_cli import compare

    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    lr = protocol.bicubic_downscale_uint8(hr, 4)
    Image.fromarray(lr).save(tmp_path / "x.png")
    Image.fromarray(hr).save(tmp_path / "hr.png")
    rc, doc, err = run(["upscale", tmp_path / "x.png", "-o", tmp_path / "x_sr.png", "-m", "e2fif", "--threads", "1",
                        "--reference", tmp_path / "hr.png", "--compare", tmp_path / "cmp", "--json"], capsys)
    assert rc == 0, err
    info = doc["files"][0]["compare"]
    assert info["panels"] == ["bicubic", "bsr", "reference"] and info["path"].endswith("x_compare.png")
    sheet = np.asarray(Image.open(info["path"]).convert("RGB"))
    sr = np.asarray(Image.open(tmp_path / "x_sr.png").convert("RGB"))
    y, x, side = info["crop"]
    top = compare.LABEL + info["overview_height"] + compare.GAP
    x0 = info["cell_width"] + compare.GAP  # the bsr column
    zoom = sheet[top:top + side * compare.ZOOM, x0:x0 + side * compare.ZOOM]
    assert np.array_equal(zoom, np.kron(sr[y:y + side, x:x + side], np.ones((4, 4, 1), dtype=np.uint8)))
    bic = protocol.bicubic_upscale_uint8(lr, 4)
    assert (y, x, side) == compare.crop_box(sr, bic)
    assert sheet.shape == (compare.LABEL + 64 + compare.GAP + side * 4, 3 * info["cell_width"] + 2 * compare.GAP, 3)
