"""Latency table (torch, onnxruntime, bitpack if built, FP twin; 128x128 LR at x4) for every shipped model,
and the peak memory (RSS) of `bsr upscale` on a 2000x1500 image at x4 with automatic tiling.

    python benchmarks/latency.py                       # everything (slow on a busy 2-core machine)
    python benchmarks/latency.py --skip-rss --runs 10  # only the table
    python benchmarks/latency.py --skip-latency        # only the RSS measurement

Models: the manifest's entries at the scale (shipped weights); when the manifest has none, the zoo's trained
models listed in FALLBACK. Weights do not change latency, so random-init builds are timed.
The RSS run happens in a child process (`python -m bsr_cli upscale ...`) and is read with
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, so this script's own memory is not counted.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FALLBACK = ("e2fif", "ma2019-bwn", "bbcu-l", "ebsr-light", "scales", "abnn-both-spatial-se")


def shipped_models(scale: int) -> list[str]:
    from bsr_cli import weights

    names = [e["model"] for e in weights.entries() if int(e.get("scale", 0)) == scale]
    names = [n for n in dict.fromkeys(names) if n != "srresnet-fp"]
    return names or list(FALLBACK)


def latency_table(models: list[str], scale: int, runs: int, threads: int, size: int) -> list[dict]:
    from bsr_cli import latency

    ok, why = latency.bitpack_status()
    backends = ("torch", "onnx", "bitpack") if ok else ("torch", "onnx")
    if not ok:
        print(f"bitpack column skipped: {why}", file=sys.stderr)
    reports = []
    for name in models:
        t0 = time.perf_counter()
        rows = [latency.measure_one(name, scale, b, (size, size), runs, 3, threads, parts=False) for b in backends]
        reports.append({"model": name, "results": [r.as_dict() for r in rows]})
        print(f"  {name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    twin = [latency.measure_one(latency.FP_TWIN, scale, b, (size, size), runs, 3, threads, parts=False).as_dict()
            for b in ("torch", "onnx")]
    twin_ms = {r["backend"]: r["median_ms"] for r in twin}
    int8 = int8_twin_row(scale, size, runs, threads)
    head = f"| model | " + " | ".join(f"{b} median / p90 ms" for b in backends) + " | torch / FP | onnx / FP |"
    print(f"\nLatency, x{scale}, LR {size}x{size}, batch 1, {threads} thread(s), CPU: {latency.cpu_name()}\n")
    print(head)
    print("|" + "---|" * (len(backends) + 3))
    rows = reports + [{"model": latency.FP_TWIN + " (FP twin)", "results": twin}]
    if int8 is not None:
        rows.append({"model": latency.FP_TWIN + " (FP twin, onnxruntime static int8 QDQ)", "results": [int8]})
    for rep in rows:
        by = {r["backend"]: r for r in rep["results"]}
        cells = [f"{by[b]['median_ms']:.1f} / {by[b]['p90_ms']:.1f}" if b in by else "-" for b in backends]
        ratios = [f"{by[b]['median_ms'] / twin_ms[b]:.2f}" if b in by else "-" for b in ("torch", "onnx")]
        print(f"| {rep['model']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if int8 is not None:
        by = {r["backend"]: r["median_ms"] for rep in reports for r in rep["results"] if rep["model"] == models[0]}
        if "bitpack" in by:
            print(f"\n{models[0]} on bitpack vs the int8 twin: {int8['median_ms'] / by['bitpack']:.2f}x faster")
    print(f"\n{latency.FLOAT_MATH_NOTE}")
    return reports + [{"model": latency.FP_TWIN, "results": twin + ([int8] if int8 else [])}]


def int8_twin_row(scale: int, size: int, runs: int, threads: int) -> dict | None:
    """The FP twin as onnxruntime static int8 (QDQ, per-channel weights, calibrated on BSD400-like crops as in
    benchmarks/pareto.py), timed like the other rows (in the onnx column); None when quantization fails."""
    import statistics

    import torch

    from bsr_cli import latency
    from bsr_cli.export_onnx import OnnxModel
    from bsr_cli.models import create_model
    from pareto import ort_int8

    try:
        sess = OnnxModel(ort_int8(create_model(latency.FP_TWIN, scale).eval()), threads=threads)
    except Exception as exc:  # noqa: BLE001  (a benchmark row, not a product path)
        print(f"int8 twin skipped: {exc}", file=sys.stderr)
        return None
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    secs = latency.time_runs(sess, x, runs, 3)
    return {"model": latency.FP_TWIN, "backend": "onnx", "median_ms": round(1e3 * statistics.median(secs), 3),
            "p90_ms": round(1e3 * latency.percentile(secs, 90), 3), "note": "static int8 QDQ"}


def peak_rss(model: str, scale: int, width: int, height: int, threads: int, backend: str) -> dict:
    """Upscale a synthetic width x height RGB PNG in a child process; return its peak RSS and wall time."""
    import torch
    from PIL import Image

    from bsr_cli.checkpoint import save_checkpoint
    from bsr_cli.models import create_model

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(d / "big.png")
        torch.manual_seed(0)
        ckpt = d / f"{model}.safetensors"
        save_checkpoint(create_model(model, scale).eval(), ckpt, {"model": model, "scale": scale})
        cmd = [sys.executable, "-m", "bsr_cli", "upscale", str(d / "big.png"), "-o", str(d / "out"),
               "--model", model, "--checkpoint", str(ckpt), "--scale", str(scale), "--threads", str(threads),
               "--backend", backend, "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"upscale failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        doc = json.loads(proc.stdout)
        rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        out = Image.open(d / "out" / "big_x4.png").size
    return {"model": model, "backend": backend, "input": [width, height], "output": list(out),
            "peak_rss_mib": round(rss_kib / 1024, 1), "seconds": round(wall, 1), "threads": threads,
            "tiling": doc["files"][0]["tiling"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="LR input side for the latency table")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-model", default="e2fif")
    ap.add_argument("--rss-backend", default="torch")
    ap.add_argument("--json", type=Path, default=None, help="also write all numbers to this JSON file")
    args = ap.parse_args()

    import torch

    threads = args.threads or torch.get_num_threads()
    doc: dict = {}
    if not args.skip_latency:
        doc["latency"] = latency_table(args.models or shipped_models(args.scale), args.scale, args.runs, threads,
                                       args.size)
    if not args.skip_rss:
        rss = peak_rss(args.rss_model, args.scale, 2000, 1500, threads, args.rss_backend)
        doc["rss"] = rss
        verdict = "under" if rss["peak_rss_mib"] < 2048 else "OVER"
        print(f"\nPeak RSS, bsr upscale 2000x1500 -> {rss['output'][0]}x{rss['output'][1]} ({rss['model']}, "
              f"{rss['backend']}, auto tile {rss['tiling'].get('tile')}, pad {rss['tiling'].get('tile_pad')}, "
              f"{rss['tiling'].get('tiles')} tiles): {rss['peak_rss_mib']:.0f} MiB ({verdict} the 2 GiB target), "
              f"{rss['seconds']:.0f} s with {threads} thread(s)")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
