#!/usr/bin/env python
"""Put back what a `--resume` used to drop from a training recipe: the stage's `--init-from` source and the
earlier stages it continued (fixed in bsr train, see `train._resumed_chain`; this repairs files made before).

    python scripts/rechain_recipe.py FILE --init-from SOURCE [--stage K] [--source-name NAME]

FILE is a packed checkpoint or a training state; its weights are copied unchanged (atomic replace), only the
recipe metadata changes. Stage K of FILE's chain (0 = FILE's own stage, 1 = the stage before it, ...) gets
`init_from` = SOURCE's name as `bsr train` records it (or NAME) and, when SOURCE holds the same model and scale,
SOURCE's recipe as its previous stage; the totals of stage K and of every later stage are recomputed. Prints the
chain (init_from, iterations) before and after.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from bsr_cli.train import _source_name, chain_stage
from bsr_cli.train_state import is_train_state, read_state_info


def read(path: Path) -> tuple[dict, dict]:
    """(raw string metadata, the file's {"model", "scale", "recipe"}) of a checkpoint or a training state."""
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata() or {})
    if "bsr_train_state" in raw:
        info = json.loads(raw["bsr_train_state"])
        return raw, {"model": info["config"]["model"], "scale": info["config"]["scale"], "recipe": info.get("recipe")}
    return raw, {"model": json.loads(raw["model"]), "scale": json.loads(raw["scale"]),
                 "recipe": json.loads(raw["training"])}


def chain(recipe: dict | None) -> list[dict]:
    out = []
    while recipe:
        out.append(recipe)
        recipe = recipe.get("previous_stage")
    return out  # FILE's own stage first


def rechain(recipe: dict, stage: int, init_name: str, source_meta: dict, model: str, scale: int) -> dict:
    stages = chain(recipe)
    target = dict(stages[stage])
    target["init_from"] = init_name
    target.pop("previous_stage", None), target.pop("total_iterations", None), target.pop("total_hours", None)
    info = {"step": target["iterations"], "elapsed": float(target.get("hours", 0.0)) * 3600}
    target.update(chain_stage(source_meta.get("recipe"), source_meta, model, scale, info))
    for later in reversed(stages[:stage]):  # re-link and re-total the stages after K
        later = dict(later)
        later.pop("previous_stage", None), later.pop("total_iterations", None), later.pop("total_hours", None)
        info = {"step": later["iterations"], "elapsed": float(later.get("hours", 0.0)) * 3600}
        later.update(chain_stage(target, {"model": model, "scale": scale}, model, scale, info))
        target = later
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--init-from", required=True, type=Path)
    ap.add_argument("--stage", type=int, default=0)
    ap.add_argument("--source-name", default=None)
    a = ap.parse_args(argv)
    raw, meta = read(a.file)
    _, source = read(a.init_from)
    new = rechain(meta["recipe"], a.stage, a.source_name or _source_name(str(a.init_from)), source, meta["model"],
                  meta["scale"])
    show = lambda r: [(s.get("init_from"), s["iterations"]) for s in chain(r)]  # noqa: E731
    print("before:", show(meta["recipe"]), "total", meta["recipe"].get("total_iterations"))
    print("after: ", show(new), "total", new.get("total_iterations"))
    if is_train_state(a.file):
        info = read_state_info(a.file)
        info["recipe"] = new
        raw["bsr_train_state"] = json.dumps(info)
    else:
        raw["training"] = json.dumps(new)
    with safe_open(str(a.file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tmp = a.file.with_name(a.file.name + ".tmp")
    save_file(tensors, str(tmp), metadata=raw)
    os.replace(tmp, a.file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
