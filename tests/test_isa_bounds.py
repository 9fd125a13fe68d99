"""benchmarks/isa_bounds.py: the bound's ingredients on a known network, and one tiny run over every ISA path."""
from __future__ import annotations

import json

import pytest
from conftest import load_benchmark

from bsr_cli.bitpack import kernel


def _mod():
    return load_benchmark("isa_bounds")


def test_binary_tap_words_of_e2fif():
    """e2fif x4: 32 binary 3x3 convs 64 -> 64 at LR size: H*W*64*9*ceil(64/64) tap-words each."""
    from bsr_cli.models import create_model

    assert _mod().binary_tap_words(create_model("e2fif", 4).eval(), 16) == 32 * 16 * 16 * 64 * 9


@pytest.mark.skipif(not kernel.bitpack_available()[0], reason="bitpack kernel not built")
def test_tiny_run_every_path(tmp_path, one_torch_thread):
    out = tmp_path / "b.json"
    assert _mod().main(["--size", "16", "--rounds", "1", "--models", "e2fif", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    paths = [kernel.ISA_NAMES[i] for i in kernel.supported_isas()]
    assert [r["isa"] for r in doc["rows"]] == paths * 2  # the conv, then the network, on every path
    for r in doc["rows"]:
        assert r["cpu_ms"] > 0 and (r["bound_ms"] is None) == (r["isa"] == "portable C")
        if r["what"].startswith("e2fif") and r["bound_ms"] is not None:
            assert r["bound_ms"] == pytest.approx(r["binary_bound_ms"] + r["float_bound_ms"], abs=2e-3)
    assert doc["env"]["core_ghz"] > 0.5
