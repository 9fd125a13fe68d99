"""bitpack speed, measured side by side in one run (interleaved rounds, median of each).

1. one 64->64 3x3 binary conv at 128x128: bitpack (sign-packing + XNOR-popcount + per-channel scale and bias,
   i.e. everything from the FP input to the FP output) vs torch fp32 channels-last nn.Conv2d;
2. whole binary networks (e2fif, ebsr-light, scales) at LR 128x128 x4 on bitpack vs their FP twin srresnet-fp in
   fp32 (NCHW and channels-last), bf16 autocast, and int8 (FX static post-training quantization, x86 backend);
3. with --isa-compare OLD.so: the zoo's conv shapes on EVERY ISA path this CPU has, this build against another
   build of the extension (e.g. the .so of the previous commit), calls interleaved A B B A, median wall and CPU
   (process) time, beside each path's popcount bound (ISA_MODEL) at the measured core clock.

    python benchmarks/bitpack_speed.py --threads 2 --rounds 5 [--json out.json]
    python benchmarks/bitpack_speed.py --threads 1 --isa-compare /tmp/old/_kernel.cpython-311-x86_64-linux-gnu.so

BSR_BITPACK_ISA=avx2|avx512|amx|generic forces one path for sections 1-2 (default: run-time dispatch).

Weights are random: speed does not depend on their values. Times in milliseconds.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
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


# Popcount bound per ISA path: core cycles per (output channel x 64-bit tap-word), from the vector uops of the
# inner loop over the 4 x 256-bit ALU pipes of AMD Zen 3/4 (on Zen 4 a 512-bit uop takes two pipe slots, on Intel
# the two 512-bit ports give the same figure). Integer vector ops run on all 4 pipes; vpshufb, vpsrlw, vpsadbw on
# 2; vpopcntq zmm at 1 per cycle (measured on Zen 4: vpxor ymm 0.27, vpshufb/vpsadbw/vpsrlw ymm 0.50,
# vpopcntq zmm 1.0 cycles per instruction).
ISA_MODEL = {
    # AVX2 as of 1a1cb55: vpxor, vpand x2, vpsrlw, vpshufb x2, vpaddb, vpsadbw, vpaddq = 9 uops per 4 channels
    "AVX2 (nibble LUT + vpsadbw per tap)": 9 / 4 / 4,
    # AVX2 now: nibble planes precomputed, vpxor x2, vpshufb x2, vpaddb x2 = 6 uops per 4 channels, vpsadbw deferred
    "AVX2 (nibble planes, deferred vpsadbw)": 6 / 4 / 4,
    # AVX-512 VPOPCNTDQ: vpxorq, vpopcntq, vpaddq zmm = 3 uops = 6 pipe slots per 8 channels
    "AVX-512 VPOPCNTDQ": 6 / 8 / 4,
    # AMX-INT8: one TDPBSSD (16 pixels x 16 channels x 64 int8 inputs) per 16 cycles = 1/16 cycle per channel and
    # 64-channel tap-word of one pixel (Intel's optimization manual: throughput 16 for TDP*)
    "AMX-INT8": 16 / (16 * 16),
}
# conv shapes of the zoo: (C_in, C_out, k)
ZOO_CONVS = ((64, 64, 3), (40, 40, 3), (256, 256, 3), (64, 256, 3), (60, 180, 1), (60, 60, 1))


def load_extension(path: str):
    """Another build of bsr_cli.bitpack._kernel, imported from `path` under a private name."""
    spec = importlib.util.spec_from_file_location("bsr_bitpack_other._kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_average() -> tuple[float, float, float]:
    return os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def popcount_bound_ms(c: int, o: int, k: int, size: int, cycles_per_word: float, ghz: float) -> float:
    """size^2 pixels x C_out x k^2 x ceil(C_in / 64) tap-words x cycles per word, at `ghz` (borders ignored)."""
    return size * size * o * k * k * ((c + 63) // 64) * cycles_per_word / ghz * 1e-6


def isa_compare(other_path: str, size: int, rounds: int, threads: int, shapes=ZOO_CONVS, isas=None) -> dict:
    """Each conv shape x ISA path x build ("new": this one, "old": other_path), interleaved A B B A per round."""
    new, old = kernel._kernel, load_extension(other_path)
    ghz = new.core_ghz(200_000_000)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "load_before": load_average(),
           "core_ghz": ghz, "threads": threads, "size": size, "rounds": rounds, "other": other_path, "rows": []}
    g = torch.Generator().manual_seed(0)
    for c, o, k in shapes:
        x = torch.randn(1, c, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        wbits, _ = kernel.pack_weight_signs(torch.randn(o, c, k, k, generator=g))
        scale, bias = torch.rand(o, generator=g), torch.randn(o, generator=g)
        for isa in isas if isas is not None else kernel.supported_isas():
            calls = {}
            for name, mod in (("new", new), ("old", old)):
                def call(mod=mod, isa_=min(isa, mod.best_isa())):  # an old build without this path: its best
                    kernel._kernel = mod
                    try:
                        return kernel.binary_conv(x, wbits, o, k, scale, bias, threads=threads, isa=isa_)
                    finally:
                        kernel._kernel = new
                calls[name] = call
            t0 = time.process_time()
            same = torch.equal(calls["new"](), calls["old"]())  # warm-up, and the two builds must agree
            slow = time.process_time() - t0 > 0.1  # the portable path is 20-50x slower: fewer rounds there
            wall = {n: [] for n in calls}
            cpu = {n: [] for n in calls}
            n_rounds = max(5, rounds // 3) if slow else rounds
            for r in range(n_rounds):
                for name in (("new", "old", "old", "new") if r % 2 else ("old", "new", "new", "old")):
                    t0, c0 = time.perf_counter(), time.process_time()
                    calls[name]()
                    wall[name].append((time.perf_counter() - t0) * 1e3)
                    cpu[name].append((time.process_time() - c0) * 1e3)
            row = {"shape": f"{c}->{o} {k}x{k}", "isa": kernel.ISA_NAMES[isa], "same_output": same,
                   "rounds": n_rounds, "old_isa": kernel.ISA_NAMES[min(isa, old.best_isa())]}
            for name in calls:
                row[f"{name}_wall_ms"] = statistics.median(wall[name])
                row[f"{name}_cpu_ms"] = statistics.median(cpu[name])
            if isa == 1:
                row["old_bound_ms"] = popcount_bound_ms(c, o, k, size, ISA_MODEL["AVX2 (nibble LUT + vpsadbw per tap)"], ghz)
                row["bound_ms"] = popcount_bound_ms(c, o, k, size, ISA_MODEL["AVX2 (nibble planes, deferred vpsadbw)"], ghz)
            elif isa == 2:
                row["old_bound_ms"] = row["bound_ms"] = popcount_bound_ms(c, o, k, size, ISA_MODEL["AVX-512 VPOPCNTDQ"], ghz)
            elif isa == 3:
                row["old_bound_ms"] = popcount_bound_ms(c, o, k, size, ISA_MODEL["AVX-512 VPOPCNTDQ"], ghz)
                row["bound_ms"] = popcount_bound_ms(c, o, k, size, ISA_MODEL["AMX-INT8"], ghz)
            out["rows"].append(row)
    out["load_after"] = load_average()
    return out


def print_isa_compare(res: dict) -> None:
    print(f"\n## single convs per ISA path, LR {res['size']}x{res['size']}, {res['threads']} thread(s), "
          f"median of {res['rounds']} interleaved rounds; {res['date']}, core clock {res['core_ghz']:.2f} GHz, "
          f"load {res['load_before'][0]:.2f} -> {res['load_after'][0]:.2f}")
    print(f"{'shape':16s} {'ISA':18s} {'old wall':>9s} {'old cpu':>8s} {'new wall':>9s} {'new cpu':>8s} "
          f"{'bound':>7s} {'cpu/bound':>9s} {'new/old cpu':>11s}  same")
    for r in res["rows"]:
        b = r.get("bound_ms")
        print(f"{r['shape']:16s} {r['isa']:18s} {r['old_wall_ms']:9.2f} {r['old_cpu_ms']:8.2f} {r['new_wall_ms']:9.2f} "
              f"{r['new_cpu_ms']:8.2f} {b if b else float('nan'):7.2f} {r['new_cpu_ms'] / b if b else float('nan'):9.2f} "
              f"{r['new_cpu_ms'] / r['old_cpu_ms']:11.2f}  {r['same_output']}  ({r['rounds']} rounds)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--json", type=str, default=None)
    p.add_argument("--isa-compare", type=str, default=None, metavar="OTHER_SO",
                   help="only section 3: every ISA path, this build vs the extension at OTHER_SO")
    p.add_argument("--shape", action="append", default=None, metavar="C,O,K",
                   help="section 3: conv shape(s) to time (default: the zoo's, ZOO_CONVS)")
    p.add_argument("--isa", action="append", type=int, default=None,
                   help="section 3: ISA level(s) to time (default: every one this CPU has)")
    a = p.parse_args(argv)
    ok, why = bitpack_available()
    if not ok:
        print(f"bitpack unavailable: {why}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    if a.isa_compare:
        shapes = tuple(tuple(int(v) for v in s.split(",")) for s in a.shape) if a.shape else ZOO_CONVS
        res = isa_compare(a.isa_compare, a.size, max(a.rounds, 5), a.threads, shapes, a.isa)
        print_isa_compare(res)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=2)
        return 0
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
