"""`bsr export --onnx`: verification numbers, metadata, the --packed size bound, eval with --backend onnx."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bsr_cli import export_onnx as ex
from bsr_cli.cli import main

SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "benchmark" / "Set5"
MODEL = "ebsr-light"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-init ebsr-light x4 checkpoint and its packed and float ONNX exports (made by the CLI)."""
    from bsr_cli.checkpoint import save_checkpoint
    from bsr_cli.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("export")
    ckpt = d / "ebsr_light_x4.safetensors"
    save_checkpoint(create_model(MODEL, 4).eval(), ckpt, {"model": MODEL, "scale": 4})
    reports = {}
    for kind in ("packed", "float"):
        out = d / f"{kind}.onnx"
        args = ["export", "--onnx", "--model", MODEL, "--scale", "4", "--checkpoint", ckpt, "-o", out,
                "--threads", "1", "--json"] + (["--packed"] if kind == "packed" else [])
        reports[kind] = (out, args)
    return ckpt, reports


def _run(args, capsys):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def test_export_verified_with_metadata(exported, capsys):
    ckpt, reports = exported
    out, args = reports["float"]
    rc, cap = _run(args, capsys)
    assert rc == 0, cap.err
    doc = json.loads(cap.out)
    assert set(doc["max_abs_diff"]) == {"32x48", "37x53"}
    assert max(doc["max_abs_diff"].values()) <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    from bsr_cli import __version__, weights

    assert meta["model"] == MODEL and meta["scale"] == "4" and meta["bsr_version"] == __version__
    assert meta["checkpoint_sha256"] == weights.sha256_file(ckpt)
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]  # dynamic H, W
    rc, cap = _run(args, capsys)  # exists: refused, file untouched
    assert rc == 2 and "exists" in cap.err


def test_packed_size_bound_and_same_outputs(exported, capsys):
    from bsr_cli.models import create_model
    from bsr_cli.profiling import profile_model

    _, reports = exported
    out, args = reports["packed"]
    rc, cap = _run(args, capsys)
    assert rc == 0, cap.err
    eq7 = profile_model(create_model(MODEL, 4), (32, 32))["params"]  # Params_fp + Params_bi / 32
    size = out.stat().st_size
    assert size <= 1.3 * eq7 * 4, (size, eq7 * 4)
    graph_ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"BitShift", "Cast"} <= graph_ops  # bits unpacked by graph ops
    float_out, float_args = reports["float"]
    if not float_out.exists():
        assert _run(float_args, capsys)[0] == 0
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(3))
    a = ex.OnnxModel(out, threads=1)(x)
    b = ex.OnnxModel(float_out, threads=1)(x)
    assert float((a - b).abs().max()) <= 1e-5


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared/datasets absent")
def test_eval_onnx_backend_matches_torch(exported, capsys):
    from bsr_cli import evaluate, weights

    ckpt, reports = exported
    out, args = reports["packed"]
    if not out.exists():
        assert _run(args, capsys)[0] == 0
    net = weights.load_model(MODEL, 4, checkpoint=ckpt)
    data_dir = SET5.parent
    ref = evaluate.evaluate(MODEL, "Set5", 4, data_dir=data_dir, sr_fn=evaluate.model_sr(net, 4))
    got = evaluate.evaluate(MODEL, "Set5", 4, data_dir=data_dir,
                            sr_fn=evaluate.model_sr(ex.OnnxModel(out, threads=1), 4))
    assert ref["images"] == got["images"] == 5
    assert abs(ref["psnr"] - got["psnr"]) <= 0.01


def test_onnx_backend_registered_in_load_model(exported):
    from bsr_cli import weights

    ckpt, _ = exported
    m = weights.load_model(MODEL, 4, checkpoint=ckpt, backend="onnx")
    assert isinstance(m, ex.OnnxModel) and m.threads >= 1
    y = m(torch.rand(1, 3, 9, 11))
    assert tuple(y.shape) == (1, 3, 36, 44) and np.isfinite(y.numpy()).all()


def test_verdict_accepts_only_bounded_binary_ties():
    """Verification passes on small float diffs, or on diffs that change at most 1 % of the 8-bit output by one
    level (a binary activation at its threshold flipping between runtimes); anything else fails."""
    from bsr_cli.export_onnx import ExportReport

    def report(diff, u8, frac):
        return ExportReport(None, 0, 18, False, {}, max_abs_diff={"32x48": diff, "37x53": 1e-7},
                            max_u8_diff={"32x48": u8, "37x53": 0}, u8_changed={"32x48": frac, "37x53": 0.0})

    assert report(5e-5, 0, 0.0).verdict(1e-4)[0]
    ok, why = report(2.2e-3, 1, 0.00184).verdict(1e-4)
    assert ok and "ties" in why
    assert not report(2.2e-3, 1, 0.02).verdict(1e-4)[0]   # too many values changed
    assert report(5.3e-3, 2, 0.0032).verdict(1e-4)[0]      # bibert-swinir: a LayerNorm tie, 2 levels
    assert not report(0.02, 3, 0.001).verdict(1e-4)[0]    # more than two levels somewhere
    assert not report(0.05, 13, 0.001).verdict(1e-4)[0]


def test_binary_dot_products_are_exact_integers_times_alpha():
    """A binary-activation conv sums ±1 products (exact in float32) and scales by alpha afterwards, so its output
    over alpha is an integer and no runtime's summation order can move a tie."""
    from bsr_cli.nn.binary_conv import BinaryConv2d
    from bsr_cli.nn.quantizers import ApproxSign

    torch.manual_seed(0)
    conv = BinaryConv2d(60, 8, 3, ApproxSign()).eval()
    x = torch.randn(1, 60, 9, 9)
    with torch.no_grad():
        y = conv(x)
        w, alpha = conv.exact_weight()
        k = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), w, padding=1)
    assert set(w.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(y, k * alpha)                   # the output is (integer sum) x alpha, nothing else
    assert torch.equal(k, k.round()) and int((k == 0).sum()) > 0  # zero sums happen: they are exact zeros


def test_bibert_swinir_exports_and_verifies():
    """BiBERT's Bi-Attention turns one flipped sign into a whole attention entry; with ±alpha weights summed in
    different orders a zero dot product came out ±1e-8 and the random-init export failed at 37x53 (0.139)."""
    from bsr_cli.models import create_model

    torch.manual_seed(0)
    model = create_model("bibert-swinir", 4).eval()
    data, _ = ex.to_onnx_bytes(model)
    details: dict = {}
    diffs = ex.verify_onnx(data, model, threads=1, details=details)
    report = ex.ExportReport(None, len(data), 18, False, {}, diffs,
                             max_u8_diff={k: v["max_u8_diff"] for k, v in details.items()},
                             u8_changed={k: v["u8_changed"] for k, v in details.items()})
    assert report.verdict(1e-4)[0], (diffs, details)
    assert diffs["37x53"] < 1e-5, diffs  # was 0.139 with ±alpha sums
