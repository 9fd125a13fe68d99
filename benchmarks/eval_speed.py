"""Wall time of `bsr eval --model bicubic --dataset Urban100 --scale 4` (target: < 60 s on 2 cores).

Usage: python benchmarks/eval_speed.py [--data-dir DIR]   (default: ../shared/datasets/benchmark beside the repo)
Not a test: prints the time, PSNR/SSIM and the per-image mean.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bsr_cli.evaluate import evaluate

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--dataset", default="Urban100")
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args()
    start = time.perf_counter()
    res = evaluate("bicubic", args.dataset, args.scale, data_dir=args.data_dir)
    wall = time.perf_counter() - start
    print(
        f"bicubic {res['dataset']} x{args.scale}: {res['images']} images in {wall:.1f} s wall "
        f"({wall / max(res['images'], 1):.2f} s/image); PSNR {res['psnr']:.4f} SSIM {res['ssim']:.4f}"
    )


if __name__ == "__main__":
    main()
