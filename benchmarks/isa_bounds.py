"""Single conv and whole networks on every 1-bit kernel path this CPU has, each beside its computed bound.

    python benchmarks/isa_bounds.py [--size 128] [--threads 1] [--rounds 7] [--models e2fif,ebsr-light,scales]
                                    [--json out.json]

Per ISA level (0 portable C, 1 AVX2, 2 AVX-512 VPOPCNTDQ, 3 AMX-INT8; every level up to the best this CPU has),
interleaved in one run (each round: every candidate once), median CPU (``time.process_time``) and wall ms:

* one 64->64 3x3 binary conv at LR size x size (sign-packing + popcount + per-channel scale and bias);
* whole x4 networks on the bitpack backend with the shipped checkpoints (`bsr_cli.latency.build`).

Bound = binary part + float part, both at the core clock measured here (`_kernel.core_ghz`, dependent multiplies):
binary: per binary conv, H*W*C_out*k^2*ceil(C_in/64) tap-words x the path's cycles per word
(benchmarks/bitpack_speed.py ISA_MODEL; the portable path has no model); float: the Eq. 7 profiler's float MACs
(every FP conv, the maps' multiplies, pooling) at the fp32 FMA peak of the core (2 x 512-bit FMA = 32 MACs per
cycle on Intel with AVX-512, 16 on AMD Zen 3/4 and on AVX2-only cores). Memory traffic (reading and writing the
FP maps between units) is not in the bound; the ratio measured / bound shows how far that and the glue are.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bsr_cli import backends
from bsr_cli.bitpack import kernel
from bsr_cli.latency import build, cpu_name
from bsr_cli.nn.binary_conv import BinaryConv2d
from bsr_cli.profiling import profile_model

HERE = Path(__file__).resolve().parent
PATH_MODEL = {1: "AVX2 (nibble planes, deferred vpsadbw)", 2: "AVX-512 VPOPCNTDQ", 3: "AMX-INT8"}


def _speed_module():
    spec = importlib.util.spec_from_file_location("bitpack_speed", HERE / "bitpack_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fp32_macs_per_cycle() -> int:
    """fp32 FMA lanes x FMA units of one core: 32 with two 512-bit FMA units (Intel AVX-512), else 16."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return 32 if ("avx512f" in info and "GenuineIntel" in info) else 16


def binary_tap_words(net: torch.nn.Module, size: int) -> int:
    """Sum over the binary-activation convs of H_out * W_out * C_out * k^2 * ceil(C_in / 64) at LR size x size."""
    words = []

    def hook(m, _inp, out):
        if m.input_quantizer is not None:
            k = m.kernel_size[0] * m.kernel_size[1]
            words.append(out.shape[-2] * out.shape[-1] * m.out_channels * k * ((m.in_channels + 63) // 64))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, BinaryConv2d)]
    with torch.inference_mode():
        net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return sum(words)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--models", default="e2fif,ebsr-light,scales")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    ok, why = kernel.bitpack_available()
    if not ok:
        print(f"isa_bounds: bitpack unavailable: {why}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    speed = _speed_module()
    ghz = kernel._kernel.core_ghz(200_000_000)
    peak = fp32_macs_per_cycle()
    isas = kernel.supported_isas()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, a.size, a.size, generator=g).contiguous(memory_format=torch.channels_last)
    wbits, _ = kernel.pack_weight_signs(torch.randn(64, 64, 3, 3, generator=g))
    scale, bias = torch.rand(64, generator=g), torch.randn(64, generator=g)
    lr = torch.rand(1, 3, a.size, a.size, generator=g)

    cands = []  # (label, isa, fn, bound_ms or None)
    conv_words = a.size * a.size * 64 * 9
    for isa in isas:
        bound = conv_words * speed.ISA_MODEL[PATH_MODEL[isa]] / ghz * 1e-6 if isa in PATH_MODEL else None
        cands.append(("64->64 3x3 conv", isa,
                      lambda isa=isa: kernel.binary_conv(x, wbits, 64, 3, scale, bias, threads=a.threads, isa=isa),
                      bound, None))
    for name in a.models.split(","):
        net = backends.load(name, 4, backend="torch").torch_model
        words = binary_tap_words(net, a.size)
        float_macs = profile_model(net, (a.size, a.size), "macs")["flops"]
        fn = build(net, "bitpack", a.threads)
        for isa in isas:
            binary = words * speed.ISA_MODEL[PATH_MODEL[isa]] / ghz * 1e-6 if isa in PATH_MODEL else None
            flt = float_macs / peak / ghz * 1e-6
            cands.append((f"{name} x4 network", isa, lambda fn=fn: fn(lr), None if binary is None else binary + flt,
                          (binary, flt)))

    def run(c):
        kernel.FORCED_ISA = c[1]  # every call inside a network takes this path
        try:
            c[2]()
        finally:
            kernel.FORCED_ISA = -1

    load_start = [round(v, 2) for v in os.getloadavg()]
    wall = [[] for _ in cands]
    cpu = [[] for _ in cands]
    with torch.inference_mode():
        for c in cands:
            run(c)  # warm-up
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
            for i, c in enumerate(cands):
                if c[1] == 0 and r >= 3:
                    continue  # the portable path is 20-50x slower: 3 rounds
                w0, c0 = time.perf_counter(), time.process_time()
                run(c)
                wall[i].append(1e3 * (time.perf_counter() - w0))
                cpu[i].append(1e3 * (time.process_time() - c0))
    rows = []
    for c, wl, cl in zip(cands, wall, cpu):
        row = {"what": c[0], "isa": kernel.ISA_NAMES[c[1]], "cpu_ms": round(statistics.median(cl), 2),
               "wall_ms": round(statistics.median(wl), 2), "bound_ms": None if c[3] is None else round(c[3], 3)}
        if c[4] is not None and c[4][0] is not None:
            row["binary_bound_ms"], row["float_bound_ms"] = round(c[4][0], 3), round(c[4][1], 3)
        rows.append(row)
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(),
           "isa_flags": _pareto_isa_flags(), "core_ghz": round(ghz, 2), "fp32_macs_per_cycle": peak,
           "threads": a.threads, "size": a.size, "rounds": a.rounds, "load_start": load_start,
           "load_end": [round(v, 2) for v in os.getloadavg()]}
    print(markdown(rows, env), end="")
    if a.json:
        Path(a.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


def _pareto_isa_flags() -> str:
    spec = importlib.util.spec_from_file_location("pareto_bench", HERE / "pareto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.isa_flags()


def markdown(rows: list[dict], env: dict) -> str:
    out = ["| what | 1-bit path | CPU ms | wall ms | bound ms (binary + float) | CPU / bound |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        b, cpu_ms = r["bound_ms"], r["cpu_ms"]
        parts = f" ({r['binary_bound_ms']:.2f} + {r['float_bound_ms']:.2f})" if "binary_bound_ms" in r else ""
        bound = "–" if b is None else f"{b:.2f}{parts}"
        ratio = "–" if b is None else f"{cpu_ms / b:.1f}x"
        out.append(f"| {r['what']} | {r['isa']} | {cpu_ms:.2f} | {r['wall_ms']:.2f} | {bound} | {ratio} |")
    out.append("")
    out.append(f"LR {env['size']}x{env['size']}, {env['threads']} thread(s), median of {env['rounds']} interleaved rounds "
               f"(portable C: 3); {env['cpu']}, ISA {env['isa_flags']}; core clock {env['core_ghz']} GHz, float peak "
               f"{env['fp32_macs_per_cycle']} fp32 MACs/cycle; load {env['load_start']} -> {env['load_end']}; {env['date']}.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
