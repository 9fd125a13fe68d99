"""Eq. 7 counts against the papers' published figures (notes §1, §7; EBSR Table 4; SCALES Tables III/V; BBCU Table 1)."""
import json

import pytest
import torch

from bsr_cli.cli import main
from bsr_cli.errors import BsrError
from bsr_cli.models import create_model
from bsr_cli.profiling import profile_model

torch.set_num_threads(1)


def prof(name, scale=4, hw=(128, 128), convention="flops"):
    return profile_model(create_model(name, scale), hw, convention)


def test_srresnet_fp_matches_ebsr_scales_tables():
    r = prof("srresnet-fp")
    assert r["params"] == 1_517_571  # SCALES Table III: 1517K
    assert r["ops"] == pytest.approx(64.98e9, rel=0.005)  # EBSR Table 4
    assert r["bops"] == 0 and r["params_bi"] == 0
    assert prof("srresnet-fp", hw=(180, 320))["ops"] == pytest.approx(228.5e9, rel=0.005)  # SCALES Table III


def test_parts_partition_the_total():
    r = prof("ebsr-light")
    assert set(r["parts"]) == {"head", "body", "upsampler", "tail"}
    for key in ("params_fp", "params_bi", "flops", "bops", "ops"):
        assert sum(p[key] for p in r["parts"].values()) == pytest.approx(r[key])
    # FP head 3x3 3->64 (with bias); binary body only in the body
    assert r["parts"]["head"]["params_fp"] == 1792 and r["parts"]["head"]["bops"] == 0
    assert r["parts"]["body"]["params_bi"] == 32 * 64 * 64 * 9


def test_lsf_baseline_1_57g():
    r = prof("ebsr-baseline")  # SCALES Table V "LSF": 1.56G; notes §7: 1.57G
    assert r["ops"] == pytest.approx(1.57e9, rel=0.01)
    assert r["bops"] == 2 * 32 * 36864 * 128 * 128


def test_ebsr_light_table4():
    r = prof("ebsr-light")
    assert r["ops"] == pytest.approx(2.27e9, rel=0.03)
    # EBSR's params column counts the binarized body (0.08M): ours 84K there, 114K with FP head and tail
    assert r["parts"]["body"]["params"] == pytest.approx(0.08e6, rel=0.06)


def test_scales_and_ebsr_sq_tables():
    assert prof("scales")["ops"] == pytest.approx(1.74e9, rel=0.03)  # SCALES Table V
    assert prof("ebsr-sq")["ops"] == pytest.approx(1.82e9, rel=0.03)  # EBSR Table 4, W4A4


@pytest.mark.parametrize("name,scale,target", [("bbcu-l", 4, 79.20e9), ("bbcu-m", 4, 3.95e9),
                                               ("bbcu-l", 2, 18.55e9), ("bbcu-m", 2, 1.83e9)])
def test_bbcu_table1_macs_at_320x180(name, scale, target):
    r = prof(name, scale, (180, 320), "macs")
    assert r["ops"] == pytest.approx(target, rel=0.01)


def test_binary_weight_fp_activation_counts_as_flops():
    r = prof("ma2019-bwn")
    assert r["bops"] == 0 and r["params_bi"] == 1_179_648  # Ma 2019 Table 4: 1,179,648 binary params
    assert r["ops"] == pytest.approx(prof("srresnet-fp")["ops"])


def test_convention_and_input_validation():
    with pytest.raises(BsrError):
        profile_model(create_model("e2fif", 2), (8, 8), "bops")


def test_cli_json(capsys):
    assert main(["profile", "--model", "srresnet-fp", "--scale", "4", "--input", "128x128", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert r["model"] == "srresnet-fp" and r["scale"] == 4 and r["input"] == [128, 128]
    assert r["convention"] == "flops" and set(r["parts"]) == {"head", "body", "upsampler", "tail"}
    assert r["ops"] == pytest.approx(64.98e9, rel=0.005) and r["params"] == 1_517_571


@pytest.mark.parametrize("argv,needle", [
    (["--input", "12y3"], "bad --input '12y3'"),
    (["--model", "ebsr-ligt"], "did you mean ebsr-light"),
    (["--model", "e2fif", "--scale", "5"], "does not support scale x5"),
])
def test_cli_bad_input_one_line_error(capsys, argv, needle):
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
