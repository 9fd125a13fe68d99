"""Which fp32 path `--backend auto` uses for models without binary activations (bsr_cli.backends.FLOAT_AUTO).

Times torch fp32 (NCHW), torch channels-last, onnxruntime (exported in memory) and torch bf16 autocast on one
float model, interleaved round-robin so machine load hits every path alike; prints wall and process_time medians,
ratios to torch fp32, and the load average.

    python benchmarks/float_paths.py --threads 1 --size 64 --model srresnet-fp --runs 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=64, help="LR side (pixels)")
    ap.add_argument("--model", default="srresnet-fp")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    from bsr_cli.export_onnx import OnnxModel, to_onnx_bytes
    from bsr_cli.latency import cpu_name
    from bsr_cli.models import create_model

    torch.set_num_threads(a.threads)
    net = create_model(a.model, a.scale).eval()
    cl = create_model(a.model, a.scale).eval()
    cl.load_state_dict(net.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    ort = OnnxModel(to_onnx_bytes(net)[0], threads=a.threads)
    x = torch.rand(1, 3, a.size, a.size)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    paths = {"torch fp32": lambda: net(x), "torch channels-last": lambda: cl(x.contiguous(memory_format=torch.channels_last)),
             "onnxruntime fp32": lambda: ort(x), "torch bf16 autocast": bf16}
    wall = {k: [] for k in paths}
    cpu = {k: [] for k in paths}
    with torch.inference_mode():
        for f in paths.values():
            f()
        for _ in range(a.runs):
            for k, f in paths.items():
                w0, c0 = time.perf_counter(), time.process_time()
                f()
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
    base_w, base_c = statistics.median(wall["torch fp32"]), statistics.median(cpu["torch fp32"])
    print(f"{a.model} x{a.scale}, LR {a.size}x{a.size}, {a.threads} thread(s), {a.runs} interleaved runs; "
          f"CPU {cpu_name()}; load average {tuple(round(v, 2) for v in os.getloadavg())}")
    for k in paths:
        w, c = statistics.median(wall[k]), statistics.median(cpu[k])
        print(f"  {k:22s} wall {1e3 * w:8.1f} ms ({w / base_w:.2f}x)  cpu {1e3 * c:8.1f} ms ({c / base_c:.2f}x)")


if __name__ == "__main__":
    main()
