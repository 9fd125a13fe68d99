"""Issue 13 speed targets, measured (not asserted): `--backend auto` against the FP twin, and the README's first
command on a 512x512 input.

1. ``bsr_cli.latency.measure`` for each model at x4, LR 128x128: the model on ``auto`` (bitpack for binary
   nets) and srresnet-fp on auto's fp32 path (onnxruntime), runs interleaved; wall and process_time medians.
   Target: the default model >= 3x faster than the twin.
2. ``bsr upscale <512x512 image>`` in a subprocess with default settings: wall time, CPU time of the child and
   the model latency it reports. Target: < 30 s on 2 cores.

Prints the CPU, the 1-bit kernel ISA and the load average before and after (the numbers are only comparable
on an idle machine; on a loaded one compare the ratios and CPU times).

    python benchmarks/auto_backend.py --threads 2 --runs 5 -m bbcu-l -m e2fif -m ebsr-light
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BABY = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "benchmark" / "Set5" / "baby.png"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", action="append", help="models (default: the manifest default at x4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", type=Path, default=BABY, help="512x512 input for the first-command timing")
    a = ap.parse_args()

    import torch

    from bsr_cli import latency, weights

    models = a.model or [weights.default_model(4)]
    print(f"CPU {latency.cpu_name()}; 1-bit kernel {latency.bitpack_status()[1]}; threads {a.threads}; "
          f"load average {tuple(round(v, 2) for v in os.getloadavg())}")
    torch.set_num_threads(a.threads)
    for name in models:
        rep = latency.measure(name, 4, ("auto",), (128, 128), a.runs, 2, a.threads)
        r, t = rep["results"][0], rep["twin_results"][0]
        print(f"{name:12s} {r['backend']:8s} wall {r['median_ms']:8.1f} ms cpu {r['cpu_ms']:8.1f} ms | "
              f"{rep['twin']} {t['backend']} wall {t['median_ms']:8.1f} ms cpu {t['cpu_ms']:8.1f} ms | "
              f"{1 / rep['ratio_to_twin'][r['backend']]:.2f}x faster (wall), {t['cpu_ms'] / r['cpu_ms']:.2f}x (cpu)")
    if a.image.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "bsr_cli", "upscale", str(a.image), "-o", f"{tmp}/out.png",
                                  "--threads", str(a.threads), "--json"], capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        doc = json.loads(out.stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        f = doc["files"][0]
        print(f"bsr upscale {a.image.name} ({f['input_size'][0]}x{f['input_size'][1]}): {doc['model']} on "
              f"{doc['backend']}, wall {wall:.1f} s, CPU {cpu:.1f} s, model {f['latency_ms'] / 1e3:.1f} s "
              f"({f['megapixels_per_s']:.3f} MP/s), tiling {f['tiling']}")
    print(f"load average after {tuple(round(v, 2) for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
