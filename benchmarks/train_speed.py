#!/usr/bin/env python
"""Training iterations/s of one model in fp32 vs bf16 autocast + channels_last (the choice `bsr train` makes).

    python benchmarks/train_speed.py [--model ebsr-light] [--scale 4] [--batch-size 16] [--patch-size 32]
                                     [--iters 5] [--threads N] [--repeat 2] [--json]

Patches come from synthetic random images (no data needed); each timing is forward + L1 + backward + Adam step
on a copy of the model, after 2 warm-up iterations. Modes are timed in alternation (`--repeat` rounds) and the
best round is kept, which is the fairest number on a machine shared with other jobs.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from bsr_cli.models import create_model
from bsr_cli.train import PatchSampler, cpu_has_native_bf16, make_pair, measure_its, pick_device


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ebsr-light")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    side = args.patch_size * args.scale * 3
    pairs = [make_pair(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), args.scale) for _ in range(4)]
    sampler = PatchSampler(pairs, args.scale, args.patch_size)
    model = create_model(args.model, args.scale)
    device = pick_device("auto")
    modes = ["fp32", "bf16"] if (device.type == "cuda" or cpu_has_native_bf16()) else ["fp32"]
    best = {m: 0.0 for m in modes}
    for _ in range(args.repeat):
        for mode in modes:
            best[mode] = max(best[mode], measure_its(model, sampler, args.batch_size, device, mode, iters=args.iters))
    result = {
        "model": args.model, "scale": args.scale, "batch": args.batch_size, "patch_lr": args.patch_size,
        "threads": torch.get_num_threads(), "device": device.type,
        "its_fp32": round(best["fp32"], 3), "its_bf16_channels_last": round(best.get("bf16", 0.0), 3) or None,
    }
    if "bf16" in best:
        result["speedup"] = round(best["bf16"] / best["fp32"], 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} x{args.scale} batch {args.batch_size} LR patch {args.patch_size}, "
              f"{result['threads']} threads, {device.type}")
        print(f"  fp32:                {best['fp32']:.3f} it/s")
        if "bf16" in best:
            print(f"  bf16+channels_last:  {best['bf16']:.3f} it/s  ({result['speedup']:.2f}x)")
        else:
            print("  bf16: no native bf16 on this CPU (skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
