"""bsr_cli.backends: the `auto` rule (bitpack for binary-activation nets, the fp32 path otherwise), resolution,
and no import cycle between backends, weights, export_onnx and the bitpack backend."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bsr_cli import backends
from bsr_cli.checkpoint import save_checkpoint
from bsr_cli.models import create_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_picks_bitpack_for_binary_and_fp32_path_for_float(monkeypatch):
    assert backends.bitpack_status()[0], "the C kernel is built in this checkout"
    for name in ("e2fif", "bbcu-l", "ebsr-light"):
        chosen, why = backends.choose("auto", create_model(name, 4))
        assert chosen == "bitpack" and why.startswith("auto: binary-activation convs"), name
    # no binary activations: srresnet-fp (FP) and ma2019-bwn (binary weights, FP activations)
    for name in ("srresnet-fp", "ma2019-bwn"):
        assert backends.choose("auto", create_model(name, 4)) == ("onnx", "auto: no binary-activation convs; "
                                                                  "fastest measured fp32 path")
    assert backends.choose("torch", create_model("e2fif", 4)) == ("torch", "requested")
    monkeypatch.setattr(backends, "bitpack_status", lambda: (False, "not built"))
    chosen, why = backends.choose("auto", create_model("e2fif", 4))
    assert chosen == "onnx" and "not built" in why
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)  # no onnxruntime
    assert backends.choose("auto", create_model("srresnet-fp", 4))[0] == "torch"


def test_load_resolves_checkpoint_sha_and_runs_bitpack(tmp_path):
    torch.manual_seed(0)
    net = create_model("e2fif", 4).eval()
    path = save_checkpoint(net, tmp_path / "e.safetensors", {"model": "e2fif", "scale": 4})
    loaded = backends.load(None, 4, path, "auto", threads=1)
    assert (loaded.name, loaded.scale, loaded.backend, loaded.threads) == ("e2fif", 4, "bitpack", 1)
    assert loaded.sha256 == backends.weights.sha256_file(path) and loaded.source == "--checkpoint"
    assert loaded.describe()["checkpoint_sha256"] == loaded.sha256
    x = torch.rand(1, 3, 12, 10)
    with torch.inference_mode():
        y, ref = loaded.model(x), loaded.torch_model(x)
    assert y.shape == (1, 3, 48, 40) and float((y - ref).abs().max()) < 1e-3
    with pytest.raises(backends.BsrError, match="x4 checkpoint, not x2"):
        backends.load("e2fif", 2, path, "auto", threads=1)


def test_manifest_default_resolves_to_a_verified_bundled_file():
    res = backends.resolve("e2fif", 4)
    assert res.model == "e2fif" and res.checkpoint.is_file()
    assert res.sha256 == backends.weights.find_entry("e2fif", 4)["sha256"] == backends.weights.sha256_file(res.checkpoint)


def test_no_import_cycle():
    """export_onnx and the bitpack backend import neither the table nor the manifest; weights does not import
    backends at import time (its load_model shim imports it when called)."""
    code = ("import sys, bsr_cli.export_onnx, bsr_cli.bitpack.backend, bsr_cli.weights;"
            "print(sorted(m for m in ('bsr_cli.backends', 'bsr_cli.weights') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "['bsr_cli.weights']"
    code = "import sys, bsr_cli.export_onnx, bsr_cli.bitpack.backend; print('bsr_cli.weights' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip() == "False"
