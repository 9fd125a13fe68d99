"""bitpack speed, measured side by side in one run (interleaved rounds, median of each).

1. one 64->64 3x3 binary conv at 128x128: bitpack (sign-packing + XNOR-popcount + per-channel scale and bias,
   i.e. everything from the FP input to the FP output) vs torch fp32 channels-last nn.Conv2d;
2. whole binary networks (e2fif, ebsr-light, scales) at LR 128x128 x4 on bitpack vs their FP twin srresnet-fp in
   fp32 (NCHW and channels-last), bf16 autocast, and int8 (FX static post-training quantization, x86 backend).

    python benchmarks/bitpack_speed.py --threads 2 --rounds 5 [--json out.json]

Weights are random: speed does not depend on their values. Times in milliseconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch import nn

from bsr_cli.bitpack import bitpack_available, convert_model
from bsr_cli.bitpack import kernel
from bsr_cli.models import create_model

BINARY_MODELS = ("e2fif", "ebsr-light", "scales")


def _time(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t) * 1e3


def int8_static(model: nn.Module, x: torch.Tensor):
    """FX graph-mode static PTQ (x86 backend) of the FP twin, calibrated on x; None (and why) if it fails."""
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        qm = prepare_fx(model, get_default_qconfig_mapping("x86"), example_inputs=(x,))
        qm(x)
        return convert_fx(qm), ""
    except Exception as exc:  # noqa: BLE001 - report, do not hide
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def single_conv_candidates(size: int, threads: int):
    x = torch.randn(1, 64, size, size).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    wbits, _ = kernel.pack_weight_signs(conv.weight)
    scale, bias = conv.weight.abs().mean(dim=(1, 2, 3)).detach(), conv.bias.detach()
    cands = {
        "torch fp32 channels_last conv": (conv, x),
        "bitpack binary conv (pack+popcount+scale)": (
            lambda t: kernel.binary_conv(t, wbits, 64, 3, scale, bias, threads=threads), x),
    }
    return cands


def model_candidates(size: int, threads: int):
    x = torch.rand(1, 3, size, size)
    fp = create_model("srresnet-fp", 4).eval()
    fp_cl = create_model("srresnet-fp", 4).eval().to(memory_format=torch.channels_last)
    fp_cl.load_state_dict(fp.state_dict())
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def bf16(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fp_cl(t)

    cands = {
        "srresnet-fp fp32 (NCHW)": (fp, x),
        "srresnet-fp fp32 (channels_last)": (fp_cl, x_cl),
        "srresnet-fp bf16 autocast (channels_last)": (bf16, x_cl),
    }
    q, why = int8_static(create_model("srresnet-fp", 4).eval(), x)
    if q is not None:
        cands["srresnet-fp int8 static PTQ (x86)"] = (q, x)
    for name in BINARY_MODELS:
        net = create_model(name, 4).eval()
        cands[f"{name} torch reference"] = (net, x)
        cands[f"{name} bitpack"] = (convert_model(net, threads=threads), x)
    return cands, why


def measure(cands: dict, rounds: int, burst: int = 1) -> dict[str, float]:
    """Median time of each candidate over `rounds` interleaved rounds; in each round a candidate runs `burst`
    timed calls back to back (burst > 1: the steady state of a layer run repeatedly, as inside a network)."""
    times: dict[str, list[float]] = {k: [] for k in cands}
    with torch.inference_mode():
        for fn, x in cands.values():  # warm-up (oneDNN primitive creation, first-touch)
            fn(x)
        for _ in range(rounds):
            for k, (fn, x) in cands.items():
                times[k] += [_time(fn, x) for _ in range(burst)]
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--json", type=str, default=None)
    a = p.parse_args(argv)
    ok, why = bitpack_available()
    if not ok:
        print(f"bitpack unavailable: {why}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    out = {"threads": a.threads, "size": a.size, "rounds": a.rounds, "kernel": why, "cpu": platform.processor(),
           "torch": torch.__version__}
    print(f"# threads={a.threads}, {a.size}x{a.size}, median of interleaved rounds; kernel: {why}")
    for burst in (1, 5):
        conv = measure(single_conv_candidates(a.size, a.threads), max(a.rounds * 4, 10), burst)
        out[f"single_conv_ms_burst{burst}"] = conv
        what = "alternating single calls" if burst == 1 else f"bursts of {burst} calls per candidate"
        print(f"\n## one 64->64 3x3 conv ({what})")
        base = conv["torch fp32 channels_last conv"]
        for k, v in conv.items():
            print(f"{k:45s} {v:9.2f} ms   x{base / v:5.2f} vs torch fp32")
    if not a.skip_models:
        cands, int8_why = model_candidates(a.size, a.threads)
        res = measure(cands, a.rounds)
        out["models_ms"] = res
        if int8_why:
            out["int8_error"] = int8_why
        fp32 = min(res["srresnet-fp fp32 (NCHW)"], res["srresnet-fp fp32 (channels_last)"])
        print(f"\n## whole networks, LR {a.size}x{a.size} x4 (speed-up vs the faster FP32 twin, {fp32:.1f} ms)")
        for k, v in res.items():
            print(f"{k:45s} {v:9.1f} ms   x{fp32 / v:5.2f}")
        if int8_why:
            print(f"int8: not measured ({int8_why})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
