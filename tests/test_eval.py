"""`bsr eval` end to end on small folders, bad inputs, and the model wrapper."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bsr_cli import protocol
from bsr_cli.cli import main
from bsr_cli.evaluate import evaluate, model_sr


def _dataset(tmp_path, name="Set5", bad=True):
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (36, 44), dtype=np.uint8)).save(folder / "b.png")  # gray
    if bad:
        (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        (folder / "empty.png").write_bytes(b"")
    return tmp_path / "data"


def _expected(path, scale):
    hr = np.asarray(Image.open(path))
    hr = protocol.modcrop(hr, scale)
    sr = protocol.bicubic_upscale_uint8(protocol.bicubic_downscale_uint8(hr, scale), scale)
    return protocol.calculate_psnr(sr, hr, scale), protocol.calculate_ssim(sr, hr, scale)


def test_json_output_and_values(tmp_path, capsys):
    data = _dataset(tmp_path, bad=False)
    rc = main(["eval", "--model", "bicubic", "--dataset", "set5", "--scale", "2", "--data-dir", str(data), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    (res,) = doc["results"]
    exp = [_expected(data / "Set5" / n, 2) for n in ("a.png", "b.png")]
    assert res["model"] == "bicubic" and res["dataset"] == "Set5" and res["scale"] == 2 and res["images"] == 2
    assert res["psnr"] == pytest.approx(np.mean([e[0] for e in exp]), abs=1e-9)
    assert res["ssim"] == pytest.approx(np.mean([e[1] for e in exp]), abs=1e-9)
    assert res["paper"] == {"psnr": 33.66, "ssim": 0.9299}
    assert res["seconds"] >= 0 and res["failures"] == []


def test_corrupt_and_empty_images_are_reported_others_evaluated(tmp_path, capsys):
    data = _dataset(tmp_path)
    rc = main(["eval", "--model", "bicubic", "--dataset", "Set5", "--data-dir", str(data), "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    res = json.loads(captured.out)["results"][0]
    assert res["images"] == 2 and math.isfinite(res["psnr"])
    for name in ("corrupt.png", "empty.png"):
        path = str(data / "Set5" / name)
        assert captured.err.count(path) == 1
    assert "Traceback" not in captured.err


def test_table_output_shows_paper_and_protocol(tmp_path, capsys):
    data = _dataset(tmp_path, bad=False)
    rc = main(["eval", "--model", "bicubic", "--dataset", "Set5", "--data-dir", str(data)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "paper" in out and "28.42" in out and "protocol:" in out and "Set5" in out


def test_unknown_dataset_lists_valid_names(capsys):
    rc = main(["eval", "--dataset", "Set6", "--data-dir", "."])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("bsr: error: unknown dataset 'Set6'") and "Set5, Set14, B100, Urban100" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_scale_is_a_clear_error(capsys):
    rc = main(["eval", "--scale", "5", "--dataset", "Set5"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "bsr: error: scale must be one of 2, 3, 4 (got 5)\n"


def test_missing_data_offline_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BSR_OFFLINE", "1")
    monkeypatch.setenv("BSR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BSR_DATA_DIR", raising=False)
    rc = main(["eval", "--model", "bicubic", "--dataset", "Set14"])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1  # offline with data missing: the download exit code
    assert "--data-dir" in err and "BSR_DATA_DIR" in err and err.startswith("bsr: error:")


def test_data_dir_env_var_and_alias(tmp_path, monkeypatch):
    data = _dataset(tmp_path, name="BSD100", bad=False)
    monkeypatch.setenv("BSR_DATA_DIR", str(data))
    res = evaluate("bicubic", "b100", 4)
    assert res["dataset"] == "B100" and res["images"] == 2


def test_save_images(tmp_path):
    data = _dataset(tmp_path, bad=False)
    evaluate("bicubic", "Set5", 4, data_dir=data, save_images=tmp_path / "sr")
    out = tmp_path / "sr" / "bicubic" / "Set5" / "x4"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert np.asarray(Image.open(out / "a.png")).shape == (48, 40, 3)


def test_model_wrapper_gray_is_mean_of_outputs():
    def net(x):  # nearest x2, channels scaled differently: R*1, G*0.5, B*0
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return up * torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)

    run = model_sr(net, 2)
    lr = np.array([[100, 200]], np.uint8)
    sr = run(lr)
    assert sr.shape == (2, 4) and sr.dtype == np.uint8
    assert sr[0].tolist() == [50, 50, 100, 100]  # mean of (v, v/2, 0) = v/2
    rgb = run(np.full((1, 1, 3), 255, np.uint8))
    assert rgb.shape == (2, 2, 3) and rgb[0, 0].tolist() == [255, 128, 0]  # 127.5 rounds half-to-even to 128
