"""Re-measure shipped checkpoints with the `bsr eval` chain and compare with weights_manifest.json (±0.01 dB).

    python benchmarks/verify_manifest.py [NAME ...] [--datasets Set5 Set14 B100 Urban100] [--backend torch]
                                         [--data-dir ../shared/datasets/benchmark]

Also checks each entry's sha256 against its bundled file. Not a test (all four benchmarks take minutes per
checkpoint on a CPU); tests/test_shipped_weights.py re-measures one checkpoint on Set5. Exit code 1 when any
PSNR differs by more than 0.01 dB or any checksum differs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bsr_cli import weights
from bsr_cli.evaluate import evaluate, model_sr

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="manifest entries (default: all)")
    p.add_argument("--datasets", nargs="+", default=["Set5", "Set14", "B100", "Urban100"])
    p.add_argument("--backend", default="torch", choices=["torch", "bitpack", "onnx"])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    a = p.parse_args(argv)
    entries = [e for e in weights.entries() if not a.names or e["name"] in a.names]
    bad = 0
    for e in entries:
        path = weights.BUNDLED_DIR / e["file"]
        sha_ok = path.is_file() and weights.sha256_file(path) == e["sha256"]
        bad += not sha_ok
        print(f"{e['name']}: sha256 {'ok' if sha_ok else 'MISMATCH'} (metrics measured with "
              f"{e.get('metrics_backend', 'torch')}; now {a.backend})")
        sr_fn = model_sr(weights.load_model(e["model"], int(e["scale"]), backend=a.backend), int(e["scale"]))
        for d in a.datasets:
            t = time.perf_counter()
            res = evaluate(e["model"], d, int(e["scale"]), data_dir=a.data_dir, sr_fn=sr_fn)
            want = e["metrics"][d]
            diff = res["psnr"] - want["psnr"]
            ok = abs(diff) <= 0.01
            bad += not ok
            print(f"  {d:9s} {res['psnr']:.4f} / {res['ssim']:.4f}  manifest {want['psnr']:.4f} / {want['ssim']:.4f}"
                  f"  diff {diff:+.4f} dB {'ok' if ok else 'OFF'}  ({time.perf_counter() - t:.0f} s)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
