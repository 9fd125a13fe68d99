#!/usr/bin/env python
"""Record the earlier stages in a checkpoint whose run started from a training state saved before states
carried their recipe (bsr before 2026-12-04): its metadata then names only its own stage.

    python scripts/chain_recipe.py NEW.safetensors --previous OLD.safetensors [-o OUT.safetensors]

OLD is the packed checkpoint of the stage the state belonged to (same model and scale: e.g. the file that stage
shipped, from git history). Only metadata changes (`training.previous_stage`, `total_iterations`,
`total_hours`, as `bsr train` writes them now, bsr_cli.train.chain_stage); the tensors are copied as they are,
so metrics measured on NEW stay valid. Writes OUT (default: NEW, replaced atomically).

    python scripts/chain_recipe.py CKPT --into-state STATE

copies CKPT's recipe (with its chain) into the training state of the same run, which a state saved by an
older bsr lacks, so that a stage started from STATE later chains it.

    python scripts/chain_recipe.py CKPT --time-budget-s SECONDS [--stage N] [-o OUT]

records the wall-time budget of CKPT's newest stage (or the N-th before it) (its run's `--time-budget`, printed in its train.log), for
stages trained before the recipe recorded `time_budget_s`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from bsr_cli.checkpoint import read_metadata
from bsr_cli.errors import BsrError
from bsr_cli.train import chain_stage


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("new", type=Path)
    ap.add_argument("--previous", type=Path)
    ap.add_argument("--into-state", type=Path, help="write NEW's recipe into this training state instead")
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--time-budget-s", type=float, help="the run's --time-budget in seconds (its state's config), "
                    "recorded as the stage's budget")
    ap.add_argument("--stage", type=int, default=0, help="with --time-budget-s alone: which stage, 0 = the newest, "
                    "1 = the one before it, ...")
    args = ap.parse_args(argv)
    try:
        if args.into_state:
            return into_state(args.new, args.into_state)
        if args.previous is None and args.time_budget_s:   # a first stage trained before recipes recorded it
            return set_time_budget(args.new, args.output or args.new, args.time_budget_s, args.stage)
        if args.previous is None:
            raise BsrError("pass --previous OLD.safetensors, --into-state STATE or --time-budget-s")
        new, old = read_metadata(args.new), read_metadata(args.previous)
        rec = dict(new["training"])
        if "previous_stage" in rec:
            raise BsrError(f"{args.new} already records its previous stage")
        rec.pop("total_iterations", None), rec.pop("total_hours", None)
        info = {"step": rec["iterations"], "elapsed": float(rec["hours"]) * 3600}
        chained = chain_stage(old.get("training"), old, new["model"], int(new["scale"]), info)
        if not chained:
            raise BsrError(f"{args.previous} is not a stage of {new['model']} x{new['scale']}")
        rec.update(chained)
        if args.time_budget_s:
            rec["time_budget_s"] = args.time_budget_s
        out = args.output or args.new
        if out != args.new:
            out.write_bytes(args.new.read_bytes())
        _rewrite(out, "training", json.dumps(rec))
    except BsrError as exc:
        print(f"chain_recipe: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: {rec['iterations']} iterations after {rec['total_iterations'] - rec['iterations']} "
          f"(total {rec['total_iterations']}, {rec['total_hours']} h)")
    return 0


def set_time_budget(new: Path, out: Path, seconds: float, stage: int = 0) -> int:
    """Record a stage's wall-time budget (`--time-budget`, from its run's train.log) in NEW's recipe: stage 0 is
    the newest, 1 its `previous_stage`, and so on."""
    rec = read_metadata(new)["training"]
    target = rec
    for _ in range(stage):
        target = target.get("previous_stage")
        if not isinstance(target, dict):
            raise BsrError(f"{new} has no stage {stage}")
    target["time_budget_s"] = seconds
    if out != new:
        out.write_bytes(new.read_bytes())
    _rewrite(out, "training", json.dumps(rec))
    print(f"{out}: stage of {target['iterations']} iterations recorded with time_budget_s {seconds}")
    return 0


def _rewrite(path: Path, key: str, value: str) -> None:
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    raw[key] = value
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=raw)
    os.replace(tmp, path)


def into_state(ckpt: Path, state: Path) -> int:
    from bsr_cli.train_state import read_state_info

    meta, info = read_metadata(ckpt), read_state_info(state)
    conf = info.get("config") or {}
    if (conf.get("model"), int(conf.get("scale") or 0)) != (meta["model"], int(meta["scale"])):
        raise BsrError(f"{state} is not a run of {meta['model']} x{meta['scale']}")
    if int(info["step"]) != int(meta["training"]["iterations"]):
        raise BsrError(f"{state} is at step {info['step']}, {ckpt} has {meta['training']['iterations']} iterations")
    info["recipe"] = meta["training"]
    _rewrite(state, "bsr_train_state", json.dumps(info))
    print(f"{state}: recipe of {ckpt} recorded (total {meta['training'].get('total_iterations')} iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
