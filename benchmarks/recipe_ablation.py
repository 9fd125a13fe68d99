#!/usr/bin/env python
"""Set5 dB gained per CPU-hour by each training recipe of `bsr train`, at an equal iteration budget.

    python benchmarks/recipe_ablation.py [--model e2fif] [--scale 4] [--from FILE|NAME|scratch] [--iters 600]
                                         [--recipes base,loss255,...] [--out runs/ablation] [--json]

Every recipe is one `bsr train` run (1 thread, bf16 where the machine has it, the same seed and data) from the
same start: a packed checkpoint (default: the bundled one of --model, latents restored at a trainable
magnitude) or a fresh init (``--from scratch``). The start and each end are scored by the run's own Set5
validation (the `bsr eval` chain). Reported per recipe: Set5 at the end, the gain over the start, the run's CPU
time (``RUSAGE_CHILDREN``: with other jobs on the machine wall time is noise, CPU time is not) and
gain / CPU-hour. Runs already finished under --out are reused, so an interrupted ablation continues.

Recipes (each differs from ``base`` in one choice; ``base`` is the recipe of stages 1-7):
  base        lr 5e-4, Adam beta2 0.99, L1 on [0, 1], LR patch 16, batch 8
  lr2e-4      lr 2e-4 (E2FIF's official value)
  beta2       Adam beta2 0.999 (E2FIF's official value)
  loss255     L1 on 0..255 (EDSR/E2FIF rgb_range 255: Adam's eps matters 255x less)
  patch24     LR patch 24 (batch 8: 2.25x the pixels and the cost of an iteration)
  teacher     + L1 to the outputs of the FP twin srresnet-fp (output distillation)
  fpwarm      binary-activation-only warm-up for the first third of the budget (E2FIF's pretrain stage)
  official    lr 2e-4 + beta2 0.999 + L1 on 0..255 together
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ["--lr", "5e-4", "--beta2", "0.99", "--loss-range", "1", "--patch-size", "16", "--batch-size", "8"]


def recipes(iters: int) -> dict[str, list[str]]:
    """Name -> the `bsr train` arguments that differ from BASE (later flags win)."""
    return {
        "base": [],
        "lr2e-4": ["--lr", "2e-4"],
        "beta2": ["--beta2", "0.999"],
        "loss255": ["--loss-range", "255"],
        "patch24": ["--patch-size", "24"],
        "teacher": ["--teacher", "srresnet-fp"],
        "fpwarm": ["--fp-weight-iters", str(iters // 3)],
        "official": ["--lr", "2e-4", "--beta2", "0.999", "--loss-range", "255"],
    }


def run_one(name: str, extra: list[str], args) -> dict:
    """Train one recipe (or reuse its finished run); its Set5 history, CPU seconds and wall seconds."""
    out = Path(args.out) / f"{args.model}-x{args.scale}-{name}"
    summary = out / "summary.json"
    if not summary.exists():
        init = [] if args.start == "scratch" else ["--init-from", args.start]
        resume = ["--resume"] if (out / "state.safetensors").exists() else []
        cmd = [sys.executable, "-m", "bsr_cli", "train", "--model", args.model, "--scale", str(args.scale),
               "--train-dir", args.train_dir, "--data-dir", args.data_dir, "--out", str(out), "--iters",
               str(args.iters), "--val-every", str(args.iters), "--save-every", "100", "--log-every", "100",
               "--warmup", "50", "--threads", "1", "--seed", "11", "--precision", args.precision, "--compile", args.compile, *init, *BASE,
               *extra, *resume]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        (out / "cpu_seconds.txt").write_text(f"{cpu:.1f}\n")
    data = json.loads(summary.read_text())
    cpu_file = out / "cpu_seconds.txt"
    cpu = float(cpu_file.read_text()) if cpu_file.exists() else float("nan")
    return {"recipe": name, "set5_end": data["set5_history"][-1][1], "cpu_s": cpu,
            "wall_h": data["recipe"]["hours"], "flips": data.get("flips", [])}


def start_psnr(args) -> float:
    """Set5 of the common start (the packed checkpoint, or a fresh init), by the same validator."""
    import torch

    from bsr_cli.models import create_model
    from bsr_cli.train import Set5Validator, resolve_source
    from bsr_cli.train_state import init_from_checkpoint

    torch.manual_seed(11)
    model = create_model(args.model, args.scale)
    if args.start != "scratch":
        init_from_checkpoint(model, resolve_source(args.start, args.scale, "--from"), create_model, args.model)
    return Set5Validator.find(args.data_dir, args.scale).psnr(model, torch.device("cpu"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="e2fif")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--from", dest="start", default=None, help="checkpoint file, zoo name, or 'scratch'")
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--recipes", default=None, help="comma-separated subset (default: all)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                    help="bsr train --compile for every arm (auto: off for these short runs; compiling costs ~30 s)")
    ap.add_argument("--out", default=str(REPO / "runs" / "ablation"))
    ap.add_argument("--train-dir", default=os.environ.get("BSR_TRAIN_DIR", str(REPO / ".." / "shared" / "datasets" /
                                                                             "train" / "BSD400")))
    ap.add_argument("--data-dir", default=os.environ.get("BSR_DATA_DIR", str(REPO / ".." / "shared" / "datasets" /
                                                                           "benchmark")))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.start = args.start or args.model
    table = recipes(args.iters)
    names = args.recipes.split(",") if args.recipes else list(table)
    start = start_psnr(args)
    rows = [run_one(n, table[n], args) for n in names]
    for r in rows:
        r["gain_db"] = r["set5_end"] - start
        r["db_per_cpu_hour"] = r["gain_db"] / (r["cpu_s"] / 3600) if r["cpu_s"] > 0 else float("nan")
    if args.json:
        print(json.dumps({"model": args.model, "scale": args.scale, "start": args.start, "iters": args.iters,
                          "set5_start": start, "rows": rows}, indent=2))
        return 0
    print(f"{args.model} x{args.scale}, start {args.start} (Set5 {start:.3f} dB), {args.iters} iterations per recipe")
    print(f"{'recipe':10s} {'Set5 end':>9s} {'gain dB':>8s} {'CPU s':>7s} {'dB/CPU-h':>9s} {'flips %':>8s}")
    for r in rows:
        flips = f"{100 * r['flips'][-1][1]:.2f}" if r["flips"] else "-"
        print(f"{r['recipe']:10s} {r['set5_end']:9.3f} {r['gain_db']:+8.3f} {r['cpu_s']:7.0f} "
              f"{r['db_per_cpu_hour']:+9.2f} {flips:>8s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
