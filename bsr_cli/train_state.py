"""Training state: the resume file (weights, Adam moments, RNG, JSON info in one safetensors file, written
atomically, no pickle), initialisation from another run or a packed checkpoint, and sign-flip accounting."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bsr_cli.errors import BsrError

STATE_FILE = "state.safetensors"
BEST_WEIGHTS_FILE = "best.weights.safetensors"


def binary_signs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Sign bits (W < 0) of every binary conv's latent weight, keyed by module name."""
    from bsr_cli.checkpoint import binary_convs

    return {name: (conv.weight.detach() < 0).cpu().clone() for name, conv in binary_convs(model).items()}


def flip_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float | None:
    """Fraction of binary weights whose sign differs between two `binary_signs` snapshots (None: no binary
    weights). A stage whose flip fraction stays 0 trains only its FP parts (issue #12's frozen ±1 latents)."""
    keys = [k for k in before if k in after]
    total = sum(before[k].numel() for k in keys)
    if not total:
        return None
    return sum(int((before[k] != after[k]).sum()) for k in keys) / total




def _atomic_save(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as plain contiguous fp32-or-native tensors (shared storage broken)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def save_state(path: Path, model, optimizer, info: dict, np_rng: np.random.Generator) -> None:
    """Write the resume state to one safetensors file (atomic replace): weights, Adam moments, RNG, JSON info."""
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, val in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(val).detach().cpu().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(info)
    meta["param_groups"] = opt["param_groups"]
    meta["numpy_rng"] = np_rng.bit_generator.state
    _atomic_save(tensors, path, {"bsr_train_state": json.dumps(meta)})


def is_train_state(path: str | Path) -> bool:
    """True for a `save_state` file (as opposed to a packed checkpoint)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return "bsr_train_state" in (f.metadata() or {})
    except Exception:  # not a safetensors file at all
        return False


def read_state_info(path: Path) -> dict:
    """The JSON part of a resume state file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "bsr_train_state" not in meta:
        raise BsrError(f"{path} is not a bsr training state")
    return json.loads(meta["bsr_train_state"])


def load_state(path: Path, model, optimizer, np_rng: np.random.Generator) -> dict:
    """Restore model, optimizer, RNG from ``save_state``'s file; returns its info dict."""
    info = read_state_info(path)
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": opt_state, "param_groups": info.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    np_rng.bit_generator.state = info.pop("numpy_rng")
    return info


def init_optimizer_from_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module, path: str | Path) -> int:
    """A new stage from a training state of the same model: copy Adam's moments (and step counts) of every
    parameter whose shape matches, so the stage continues with what the optimizer learnt, not from zero
    moments (the lr and betas stay the new stage's). Returns the number of parameters restored."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        info = json.loads((f.metadata() or {})["bsr_train_state"])
    saved = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, field = key.split(".", 2)
            saved.setdefault(int(idx), {})[field] = val
    params = list(model.parameters())
    order = info["param_groups"][0]["params"]
    restored = 0
    for pos, idx in enumerate(order):
        st = saved.get(int(idx))
        if pos >= len(params) or st is None or tuple(st["exp_avg"].shape) != tuple(params[pos].shape):
            continue
        optimizer.state[params[pos]] = {k: v.clone().to(params[pos].device) if k != "step" else v.clone()
                                        for k, v in st.items()}
        restored += 1
    return restored


def init_from_checkpoint(model: torch.nn.Module, path: str | Path, create_model: Callable, name: str) -> tuple[list, list]:
    """Copy every parameter/buffer of ``path`` whose name and shape match ``model`` (e.g. x4 head/body -> x2).

    ``path`` is a packed checkpoint (``bsr_cli.checkpoint``; its model is rebuilt at the checkpoint's scale and
    loaded with ``load_into``) or a training state (``state.safetensors``). Returns (copied, skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise BsrError(f"--init-from: file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    note = "latents copied as trained (training state)"
    if "bsr_train_state" in meta:
        src = {k[6:]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}
    else:
        from bsr_cli.checkpoint import load_into, read_metadata

        meta = read_metadata(path)
        src_model = create_model(meta.get("model", name), int(meta.get("scale", 4)))
        restored = load_into(src_model, path, latents="trainable").get("latents_restored", {})
        src = src_model.state_dict()
        note = "no binary latents"
        if restored.get("layers"):
            note = (f"packed file stores signs only: latents of {restored['layers']} binary convs restored at "
                    f"init magnitude (mean |W| {restored['mean_abs']:.4f}), signs kept")
    dst = model.state_dict()
    copied, skipped = [], []
    for key, val in dst.items():
        if key in src and tuple(src[key].shape) == tuple(val.shape):
            dst[key] = src[key].to(val.dtype)
            copied.append(key)
        else:
            skipped.append(key)
    model.load_state_dict(dst)
    return copied, skipped, note


def _group_names(keys: list[str]) -> str:
    """A short summary of parameter names by top-level part: 'head 2, body 96, ...'."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    return ", ".join(f"{part} {n}" for part, n in counts.items()) or "none"
