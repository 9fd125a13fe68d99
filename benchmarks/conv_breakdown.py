"""Where one binary conv call's time goes, per ISA path: popcounts vs packing vs the FP epilogue (issue #17).

    python benchmarks/conv_breakdown.py [--size 128] [--rounds 7] [--json out.json]

A 64->64 conv at LR size x size, 1 thread, CPU time (`time.process_time`, so other jobs on the machine inflate
it less than wall time), median of `--rounds`, in ns per output pixel, for every ISA path this CPU has and for
k = 3 (the zoo's convs) and k = 1 (the same call with 1/9 of the popcounts, so that what is left is mostly
packing and the epilogue):

  plain          FP input -> packed in the call -> popcounts -> scale, bias -> FP output
  packed_in      the input already packed (`packed_input`, the hand-off between E2FIF / BBCU units)
  packed_in+res  + the FP residual read (the shortcut around every binary conv)
  e2fif-like     + BN, PReLU, the LeakyReLU after it, and the output packed for the next unit (`pack_next`)

Beside them: `bound` = the path's popcount model (benchmarks/bitpack_speed.py ISA_MODEL) at the measured core
clock, which counts neither the FP input/output nor the epilogue. Weights and inputs are random (speed does not
depend on them).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

import torch

from bsr_cli.bitpack import kernel

HERE = Path(__file__).resolve().parent
MODEL_NAME = {1: "AVX2 (nibble planes, deferred vpsadbw)", 2: "AVX-512 VPOPCNTDQ", 3: "AMX-INT8"}


def _isa_model() -> dict:
    spec = importlib.util.spec_from_file_location("bitpack_speed", HERE / "bitpack_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ISA_MODEL


def ns_per_pixel(fn, pixels: int, rounds: int, reps: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(reps):
            fn()
        times.append((time.process_time() - t) / reps)
    return 1e9 * statistics.median(times) / pixels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    s, c = a.size, 64
    ghz = kernel._kernel.core_ghz(100_000_000)
    model = _isa_model()
    x = torch.randn(1, c, s, s).contiguous(memory_format=torch.channels_last)
    res = torch.randn(1, c, s, s).contiguous(memory_format=torch.channels_last)
    vec = [torch.rand(c) for _ in range(5)]
    reps = max(3, 400_000 // (s * s))
    rows_out = []
    for k in (3, 1):
        wbits, _ = kernel.pack_weight_signs(torch.randn(c, c, k, k))
        tiles = kernel.amx_weight_tiles(wbits, c, c)
        sc, b, s2, b2, sl = vec
        for isa in kernel.supported_isas()[1:]:
            rows = kernel.PackedRows(1, s, s, c, isa=isa)
            base = dict(threads=1, isa=isa, amx_tiles=tiles)
            kernel.binary_conv(x, wbits, c, k, sc, b, pack_next=(None, rows), **base)
            calls = {
                "plain": lambda: kernel.binary_conv(x, wbits, c, k, sc, b, **base),
                "packed_in": lambda: kernel.binary_conv(x, wbits, c, k, sc, b, packed_input=rows, **base),
                "packed_in+res": lambda: kernel.binary_conv(x, wbits, c, k, sc, b, packed_input=rows, residual=res,
                                                            **base),
                "e2fif-like": lambda: kernel.binary_conv(x, wbits, c, k, sc, b, packed_input=rows, residual=res,
                                                         scale2=s2, bias2=b2, slope=sl, post_slope=sl,
                                                         pack_next=(None, rows), **base),
            }
            row = {"k": k, "isa": kernel.ISA_NAMES[isa]}
            row.update({name: round(ns_per_pixel(fn, s * s, a.rounds, reps), 1) for name, fn in calls.items()})
            row["bound"] = round(k * k * c * model[MODEL_NAME[isa]] / ghz, 1)  # c output channels x k*k tap-words
            rows_out.append(row)
    cols = ("plain", "packed_in", "packed_in+res", "e2fif-like", "bound")
    print(f"64->64 conv, LR {s}x{s}, 1 thread, CPU ns per output pixel (median of {a.rounds}); core {ghz:.2f} GHz, "
          f"load {os.getloadavg()[0]:.1f}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print("| k | path | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for r in rows_out:
        print(f"| {r['k']} | {r['isa']} | " + " | ".join(str(r[k]) for k in cols) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"size": s, "core_ghz": ghz, "load": os.getloadavg()[0],
                                            "rows": rows_out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
