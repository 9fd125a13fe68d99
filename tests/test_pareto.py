"""benchmarks/pareto.py: the front rule on made-up points, and one small run of two candidates."""
from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import load_benchmark


def _pareto():
    return load_benchmark("pareto")


def test_front_on_made_up_points():
    front = _pareto().pareto_front
    points = [
        (10.0, 30.0),  # on: nothing faster is better
        (20.0, 29.0),  # off: (10, 30) is faster and better
        (5.0, 28.0),   # on: fastest with a PSNR above 27
        (30.0, 31.0),  # on: best PSNR
        (10.0, 30.0),  # on: a tie dominates nothing
        (1.0, None),   # off: no PSNR; and it dominates nothing
        (2.0, 27.0),   # on: only the PSNR-less point is faster
        (40.0, 31.0),  # on: (30, 31) is faster but only equal, (10, 30) faster but worse
    ]
    assert front(points) == [True, False, True, True, True, False, True, True]
    assert front([(1.0, 1.0), (2.0, 0.5), (3.0, 0.9), (4.0, 2.0)]) == [True, False, False, True]
    assert front([]) == []


def test_quick_run_two_candidates(tmp_path, one_torch_thread):
    mod = _pareto()
    from bsr_cli import backends, weights

    assert mod.main(["--quick", "--size", "32", "--threads", "1", "--only", "e2fif,espcn", "--bf16", "off",
                     "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "pareto.json").read_text())
    rows = {r["model"]: r for r in data["results"]}
    assert set(rows) == {"e2fif", "espcn"}
    assert rows["e2fif"]["psnr"] == weights.find_entry("e2fif-x4")["metrics"]["Set5"]["psnr"]  # 30.2778
    assert rows["e2fif"]["backend"] == ("bitpack" if backends.bitpack_status()[0] else "torch fp32 CL")
    assert rows["espcn"]["psnr"] == weights.find_entry("espcn-x4")["metrics"]["Set5"]["psnr"]  # 29.2631, shipped
    assert rows["e2fif"]["front"] == {"1": True}  # the better of the two: on the front whatever the timing
    assert rows["e2fif"]["ms"]["1"] > 0 and rows["e2fif"]["cpu_ms"]["1"] > 0
    md = (tmp_path / "pareto.md").read_text()
    assert "| espcn | torch fp32 CL | 29.26 |" in md and "load average" in md
    png = (tmp_path / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bf16_rows_on_a_native_bf16_cpu(tmp_path, one_torch_thread, monkeypatch):
    """Where the CPU has native bf16 (AMX), the float networks a user would run there are candidates in bf16 too,
    with their own Set5 PSNR measured through bf16 (not the fp32 figure copied)."""
    mod = _pareto()
    from bsr_cli import weights

    monkeypatch.setattr(mod, "cpu_has_native_bf16", lambda: True)
    assert mod.main(["--quick", "--size", "32", "--threads", "1", "--only", "espcn", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "pareto.json").read_text())
    rows = {r["backend"]: r for r in data["results"]}
    assert set(rows) == {"torch fp32 CL", "torch bf16 CL"} and data["env"]["bf16"] is True
    fp32 = weights.find_entry("espcn-x4")["metrics"]["Set5"]["psnr"]  # 29.2631
    assert rows["torch fp32 CL"]["psnr"] == fp32
    assert rows["torch bf16 CL"]["psnr_source"] == "measured here (bf16 autocast)"
    assert abs(rows["torch bf16 CL"]["psnr"] - fp32) < 0.1  # bf16 moves espcn's Set5 by hundredths of a dB
    assert "| espcn | torch bf16 CL |" in (tmp_path / "pareto.md").read_text()


if importlib.util.find_spec("matplotlib") is None:  # the plot needs the `bench` extra
    test_quick_run_two_candidates = pytest.mark.skip(reason="matplotlib not installed (pip install bsr[bench])")(
        test_quick_run_two_candidates)
    test_bf16_rows_on_a_native_bf16_cpu = pytest.mark.skip(reason="matplotlib not installed (pip install bsr[bench])")(
        test_bf16_rows_on_a_native_bf16_cpu)
