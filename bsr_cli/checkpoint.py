"""Packed checkpoints: a safetensors file with the binary weights stored as 1 bit each.

Layout of a file written by `save_checkpoint` (format version 1):

* For every binary conv (a `BinaryConv2d`, found by duck typing: a module with a `weight` parameter, a
  `weight_quantizer` that is not None and a `binarized_weight()` method), with module name `P`:

  - `P.weight.bits`  uint8, shape (O, ceil(K / 8)) with K = weight[0].numel(): the signs s = sign(W) of the
    latent weight (0 -> +1), so that binarized_weight() = alpha_o * s (with alpha_o > 0: the signs of the
    binarized weight), one row per output channel, packed with `numpy.packbits(bits, axis=1)` (default big-endian bit
    order: the first weight of a row is the most significant bit of its first byte; a row is zero-padded
    to whole bytes). **Bit 1 means -1, bit 0 means +1** (the IEEE sign bit; every binarizer maps 0 to +1).
  - `P.weight.alpha` float32, shape (O,), only for quantizers whose scale is computed from the latent weight
    (e.g. mean|W| per output channel as in XNOR/BBCU): binarized_weight()[o] = alpha[o] * s[o].
    Quantizers that own their scale as a parameter (learnable scale, Ma 2019) store it under their own
    state-dict key like any other FP parameter; plain sign (E2FIF) needs no scale at all.

  The latent weight `P.weight` itself is not stored.
* Every other entry of `model.state_dict()` under its own key: floating tensors as float32 (never float16),
  other tensors (e.g. BatchNorm's `num_batches_tracked`) unchanged.
* safetensors string metadata, every value JSON-encoded: `format` ("bsr-packed"), `format_version`,
  `bsr_version`, `packed` ({P: {"shape": [...], "kind": "scale"|"sign", "quantizer": class name}}) and the
  caller's keys: `model`, `scale`, `config`, `recipe` ({data, iterations, hours, device}), ...

Loading never unpickles. `load_into` rebuilds latent weights whose binarization in forward is bit-identical to
the saved model's (``latents="exact"``, for inference): ±1 for "sign" layers; for "scale" layers latent magnitudes chosen so that the quantizer's
own reduction (e.g. a float32 mean) returns exactly the stored alpha (checked, and refined if needed).
Latents of ±1 are frozen for training (an optimizer step of ~lr cannot flip them), so training loads with
``latents="trainable"`` (`trainable_latents`): each binary weight keeps its stored sign and takes the magnitude
of the model's own fresh initialisation (rows of "scale" layers rescaled so that mean|W_o| = alpha_o), which
lies well inside the clamp-STE window |W| <= 1 and leaves the forward pass unchanged.
`save_checkpoint` performs that reconstruction before writing and falls back to storing a layer's latent
weight as float32 (with a warning) if its quantizer cannot be reproduced from signs and scales.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bsr_cli.errors import BsrError

FORMAT = "bsr-packed"
FORMAT_VERSION = 1
_REFINE_STEPS = 64


# --------------------------------------------------------------------------------------------- bit packing
def pack_signs(weight: torch.Tensor) -> torch.Tensor:
    """Signs of `weight` (O, ...) as uint8 (O, ceil(K/8)): bit 1 = negative (-1), bit 0 = +1 (zero included)."""
    neg = (weight.detach().reshape(weight.shape[0], -1) < 0).cpu().numpy()
    return torch.from_numpy(np.packbits(neg, axis=1))


def unpack_signs(bits: torch.Tensor, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Inverse of `pack_signs`: a float32 tensor of ±1 with the given shape."""
    k = int(np.prod(shape[1:]))
    neg = np.unpackbits(bits.cpu().numpy(), axis=1, count=k).astype(bool)
    signs = np.where(neg, np.float32(-1.0), np.float32(1.0))
    return torch.from_numpy(signs).reshape(tuple(shape))


# --------------------------------------------------------------------------------------------- binary convs
def binary_convs(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Module name -> binary conv (duck-typed `BinaryConv2d`: binary weights with a weight quantizer)."""
    found = {}
    for name, m in model.named_modules():
        if (
            callable(getattr(m, "binarized_weight", None))
            and getattr(m, "weight_quantizer", None) is not None
            and isinstance(getattr(m, "weight", None), torch.nn.Parameter)
        ):
            found[name] = m
    return found


def _binarized(conv: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return conv.binarized_weight().detach().clone()


def _exact_sum_magnitudes(total: torch.Tensor, n: int) -> torch.Tensor:
    """(O, n) non-negative float32 magnitudes whose float32 sum is exactly `total[o]` in any order.

    Each magnitude is an integer multiple of ulp(total[o]), so every partial sum is exactly representable.
    """
    _, exp = torch.frexp(total)
    quantum = torch.ldexp(torch.ones_like(total, dtype=torch.float64), (exp - 24).to(torch.int64))
    units = torch.round(total.double() / quantum).to(torch.int64)
    base, rem = units // n, units % n
    ints = base[:, None] + (torch.arange(n, device=total.device)[None, :] < rem[:, None]).to(torch.int64)
    return (ints.double() * quantum[:, None]).float()


def _reconstruct_scaled(conv: torch.nn.Module, signs: torch.Tensor, alpha: torch.Tensor) -> bool:
    """Set `conv.weight` so that `conv.binarized_weight() == alpha[o] * signs` bit for bit. Returns success."""
    w = conv.weight
    shape, n = w.shape, w[0].numel()
    signs = signs.to(w.device, w.dtype)
    alpha = alpha.to(w.device, w.dtype)
    target = alpha.view(-1, *([1] * (w.dim() - 1))) * signs
    flat_signs = signs.reshape(shape[0], -1)
    with torch.no_grad():
        w.copy_(target)  # uniform magnitudes: exact for max-, param- or most mean-based scales
        for _ in range(_REFINE_STEPS):
            out = conv.binarized_weight().detach()
            bad = (out != target).reshape(shape[0], -1).any(dim=1)
            if not bad.any():
                return True
            # for mean-style scales: make the float32 sum of |W[o]| hit n*alpha exactly, then step that sum
            if not hasattr(conv, "_bsr_sum"):
                conv._bsr_sum = (alpha.double() * n).float()
            else:
                cur = out.abs().reshape(shape[0], -1).amax(dim=1)
                step = torch.where(cur < alpha, torch.full_like(alpha, float("inf")), torch.zeros_like(alpha))
                conv._bsr_sum = torch.where(bad, torch.nextafter(conv._bsr_sum, step), conv._bsr_sum)
            mags = _exact_sum_magnitudes(conv._bsr_sum, n)
            rows = torch.where(bad[:, None], mags * flat_signs, w.reshape(shape[0], -1))
            w.copy_(rows.reshape(shape))
        return bool(((conv.binarized_weight().detach() == target).all()))


def _finish(conv: torch.nn.Module) -> None:
    if hasattr(conv, "_bsr_sum"):
        del conv._bsr_sum


# --------------------------------------------------------------------------------------------- save / load
def save_checkpoint(model: torch.nn.Module, path: str | Path, metadata: dict) -> Path:
    """Write `model` as a packed safetensors checkpoint at `path` (see module docstring for the layout).

    `metadata` holds JSON-serialisable values (model, scale, config, recipe, ...); each is JSON-encoded.
    The model is left unchanged. Returns the path.
    """
    path = Path(path)
    state = {k: v.detach() for k, v in model.state_dict(keep_vars=True).items()}
    tensors: dict[str, torch.Tensor] = {}
    packed: dict[str, dict] = {}
    for name, conv in binary_convs(model).items():
        key = f"{name}.weight" if name else "weight"
        latent = conv.weight.detach().clone()
        bw = _binarized(conv)
        signs = torch.where(latent >= 0, 1.0, -1.0).to(latent.dtype)  # binarized_weight() = alpha * signs
        info = {"shape": list(latent.shape), "quantizer": type(conv.weight_quantizer).__name__}
        try:
            with torch.no_grad():
                conv.weight.copy_(signs.to(latent.dtype))
            if torch.equal(_binarized(conv), bw):
                info["kind"] = "sign"
            else:
                alpha = (bw * signs).reshape(bw.shape[0], -1)[:, 0].float()
                uniform = torch.equal(alpha.view(-1, *([1] * (bw.dim() - 1))) * signs, bw)
                if uniform and _reconstruct_scaled(conv, signs, alpha):
                    info["kind"] = "scale"
                    tensors[f"{key}.alpha"] = alpha.cpu().contiguous()
        finally:
            _finish(conv)
            with torch.no_grad():
                conv.weight.copy_(latent)
        if "kind" not in info:
            warnings.warn(f"{key}: quantizer {info['quantizer']} cannot be rebuilt from signs; stored as float32")
            continue
        tensors[f"{key}.bits"] = pack_signs(signs)
        packed[key] = info
        state.pop(key, None)
    for key, value in state.items():
        t = value.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float32)
        tensors[key] = t.clone().contiguous()

    from bsr_cli import __version__

    meta = {k: json.dumps(v) for k, v in metadata.items()}
    meta.update(
        format=json.dumps(FORMAT),
        format_version=json.dumps(FORMAT_VERSION),
        bsr_version=json.dumps(__version__),
        packed=json.dumps(packed),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict:
    """The decoded metadata of a checkpoint without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except FileNotFoundError:
        raise BsrError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise BsrError(f"not a safetensors checkpoint: {path} ({exc})") from None
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    if meta.get("format") != FORMAT:
        raise BsrError(f"not a bsr packed checkpoint (no format={FORMAT!r} metadata): {path}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise BsrError(f"{path} uses checkpoint format {meta['format_version']}; this bsr reads up to "
                       f"{FORMAT_VERSION}: upgrade bsr")
    return meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a packed checkpoint: (tensors exactly as stored, decoded metadata). Never unpickles.

    Packed layers appear as `P.weight.bits` (+ `P.weight.alpha`); `metadata["packed"]` describes them.
    Use `unpack_signs` for ±1 signs, or `load_into` to fill a model.
    """
    meta = read_metadata(path)
    return load_file(str(path)), meta


def trainable_latents(signs: torch.Tensor, init: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """Latent weights to continue training from packed signs: sign * |init| (the model's fresh initialisation),
    rows rescaled so that mean|W_o| = alpha_o when the layer's scale is computed from its latents ("scale" kind,
    MeanAbsSign). Zero init magnitudes take their row's mean. Sign-only magnitudes are capped at 0.5; a rescaled
    row that would leave the STE window (|W| > 0.95) takes the uniform magnitude alpha_o instead. Never ±1 for
    sign-only layers: such latents cannot flip under an lr-sized step (issue #12)."""
    mag = init.detach().abs().float().reshape(init.shape[0], -1)
    row_mean = mag.mean(dim=1, keepdim=True).clamp_min(1e-4)
    mag = torch.where(mag > 0, mag, row_mean)
    if alpha is None:
        mag = mag.clamp(max=0.5)
    else:
        a = alpha.float().view(-1, 1)
        mag = mag * (a / mag.mean(dim=1, keepdim=True))
        mag = torch.where(mag.amax(dim=1, keepdim=True) > 0.95, a.expand_as(mag), mag)
    return (signs.reshape(mag.shape) * mag).reshape(signs.shape)


def load_into(model: torch.nn.Module, path: str | Path, latents: str = "exact") -> dict:
    """Load a packed checkpoint into `model` (same architecture); returns the metadata.

    ``latents="exact"``: binary layers get latent weights whose `binarized_weight()` equals the saved one bit
    for bit (inference, export). ``latents="trainable"``: signs kept, magnitudes from `model`'s current
    (freshly initialised) latents via `trainable_latents`, so training can flip them; the metadata then holds
    ``latents_restored`` = {"layers": n, "mean_abs": mean |W| of the restored latents}.
    """
    if latents not in ("exact", "trainable"):
        raise ValueError(f"latents must be 'exact' or 'trainable', not {latents!r}")
    init = {f"{n}.weight" if n else "weight": c.weight.detach().clone() for n, c in binary_convs(model).items()}
    state, meta = load_checkpoint(path)
    scale = meta.get("scale")
    if scale is not None and getattr(model, "scale", scale) != scale:
        raise BsrError(f"{path} is a x{scale} checkpoint but the model is x{model.scale}")
    packed = meta.get("packed", {})
    full = {}
    signs_of = {}
    for key, info in packed.items():
        signs = unpack_signs(state.pop(f"{key}.bits"), info["shape"])
        alpha = state.pop(f"{key}.alpha", None)
        signs_of[key] = (signs, alpha)
        full[key] = signs if alpha is None else alpha.view(-1, *([1] * (signs.dim() - 1))) * signs
    full.update(state)
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise BsrError(f"{path} does not fit model {meta.get('model', '?')}: {detail[:300]}") from None
    convs = binary_convs(model)
    if latents == "trainable":
        total, count = 0.0, 0
        for key, (signs, alpha) in signs_of.items():
            conv = convs.get(key[: -len(".weight")] if key.endswith(".weight") else "")
            if conv is None or key not in init:
                continue
            w = trainable_latents(signs, init[key], alpha)
            with torch.no_grad():
                conv.weight.copy_(w.to(conv.weight.dtype))
            total += float(w.abs().sum())
            count += w.numel()
        meta["latents_restored"] = {"layers": len(signs_of), "mean_abs": total / max(count, 1)}
        return meta
    for key, (signs, alpha) in signs_of.items():
        name = key[: -len(".weight")] if key.endswith(".weight") else ""
        conv = convs.get(name)
        if conv is None or alpha is None:
            continue
        try:
            ok = _reconstruct_scaled(conv, signs, alpha)
        finally:
            _finish(conv)
        if not ok:
            warnings.warn(f"{key}: binarized weight differs from the saved one in the last bit")
    return meta
