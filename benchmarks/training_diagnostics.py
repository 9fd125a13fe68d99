#!/usr/bin/env python
"""Is a flat training curve a budget limit or a defect? Per binary conv of one model: latent magnitudes, the
gradient a training batch gives them against Adam's eps, and the sign flips between two checkpoints.

    python benchmarks/training_diagnostics.py MODEL [--scale 4] [--checkpoint FILE] [--before FILE]
                                              [--loss-range 255] [--batch 8] [--patch 16] [--json]

--checkpoint: a packed file (latents restored at trainable magnitude, as `bsr train --init-from` does), a
training state (``state.safetensors``: the real latents) or, by default, the bundled checkpoint of MODEL.
--before: an earlier checkpoint of the same model; the table then shows the fraction of signs that differ.
Per layer: mean |W|, the share of latents outside the clamp-STE window (|W| > 1: they get no gradient),
mean |dL/dW| for one fixed batch of BSD400 patches with `bsr train`'s loss, that gradient / Adam eps (below
~10, Adam's update is damped; below 1, frozen), and the flips. A summary line counts the layers at risk.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from bsr_cli.checkpoint import binary_convs
from bsr_cli.models import create_model
from bsr_cli.train import pixel_l1, resolve_source
from bsr_cli.train_data import PatchSampler, to_tensor
from bsr_cli.train_state import init_from_checkpoint

ADAM_EPS = 1e-8
REPO = Path(__file__).resolve().parents[1]


def load(model_name: str, scale: int, path: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(model_name, scale)
    init_from_checkpoint(model, resolve_source(path, scale, "--checkpoint"), create_model, model_name)
    return model


def layer_table(model, batch) -> list[dict]:
    lr_t, hr_t = batch
    model.train()
    model.zero_grad(set_to_none=True)
    pixel_l1(model(lr_t), hr_t, ARGS.loss_range).backward()
    rows = []
    for name, conv in binary_convs(model).items():
        w, g = conv.weight.detach(), conv.weight.grad
        grad = float(g.abs().mean()) if g is not None else 0.0
        rows.append({"layer": name, "mean_abs_w": float(w.abs().mean()), "outside_ste": float((w.abs() > 1).float().mean()),
                     "mean_abs_grad": grad, "grad_over_eps": grad / ADAM_EPS})
    return rows


def main(argv=None) -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--before", default=None)
    ap.add_argument("--loss-range", type=float, default=255.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--train-dir", default=os.environ.get("BSR_TRAIN_DIR", str(REPO / ".." / "shared" / "datasets" /
                                                                             "train" / "BSD400")))
    ap.add_argument("--json", action="store_true")
    ARGS = args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load(args.model, args.scale, args.checkpoint or args.model)
    sampler = PatchSampler.from_folder(args.train_dir, args.scale, args.patch, max_images=32)
    lr_b, hr_b = sampler.sample(args.batch, np.random.default_rng(0))
    rows = layer_table(model, (to_tensor(lr_b, torch.device("cpu"), False), to_tensor(hr_b, torch.device("cpu"), False)))
    if args.before:
        before = binary_convs(load(args.model, args.scale, args.before))
        for r in rows:
            a, b = before[r["layer"]].weight.detach() < 0, binary_convs(model)[r["layer"]].weight.detach() < 0
            r["flipped"] = float((a != b).float().mean())
    damped = sum(r["grad_over_eps"] < 10 for r in rows)
    frozen = sum(r["grad_over_eps"] < 1 for r in rows)
    if args.json:
        print(json.dumps({"model": args.model, "scale": args.scale, "rows": rows, "damped": damped, "frozen": frozen},
                         indent=2))
        return 0
    print(f"{args.model} x{args.scale} ({args.checkpoint or 'bundled'}), L1 on 0..{args.loss_range:g}")
    print(f"{'layer':34s} {'mean|W|':>8s} {'|W|>1':>6s} {'mean|g|':>9s} {'g/eps':>9s}" + (" flipped" if args.before else ""))
    for r in rows:
        flip = f" {100 * r['flipped']:6.2f}%" if "flipped" in r else ""
        print(f"{r['layer']:34s} {r['mean_abs_w']:8.4f} {100 * r['outside_ste']:5.1f}% {r['mean_abs_grad']:9.2e} "
              f"{r['grad_over_eps']:9.1f}{flip}")
    print(f"{len(rows)} binary convs: {damped} with gradient < 10x Adam eps (damped), {frozen} below eps (frozen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
