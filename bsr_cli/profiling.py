"""Eq. 7 cost counting (EBSR Eq. 7; Bi-Real Net / ReActNet): OPs = FLOPs + BOPs/64, Params = P_fp + P_bi/32.

Counted by forward hooks on the real modules of one forward pass at LR size `input_hw` (batch 1):

- `BinaryConv2d` / `BinaryLinear` with an input quantizer (1-bit x 1-bit): MACs -> BOPs.
- `BinaryConv2d` with ``input_quantizer=None`` (binary weights, FP activations, Ma 2019): MACs -> FLOPs.
- `QuantConv2d` (low-bit, EBSR-SQ): MACs * w_bits * a_bits -> BOPs (the equivalent-operations rule the
  EBSR-SQ row of EBSR Table 4 follows).
- every other `nn.Conv2d` / `nn.Conv1d` / `nn.Linear`: MACs -> FLOPs;
  MACs = k_h * k_w * (C_in / groups) * C_out * H_out * W_out (= weight.numel() x output positions).
- `MatMul` (attention scores and weighted sums): MACs -> FLOPs, or BOPs when marked binary (BiBERT).
- elementwise cost of applying re-scaling / attention maps (`Mul`, `Sub`) and of global average pooling
  (`nn.AdaptiveAvgPool2d`): one FLOP per output (pooling: per input) element, in "flops" and "macs". The
  EBSR/SCALES tables include this: e.g. SCALES Table V (1.56 -> 1.63 -> 1.74 G) is reproduced only with it.
- not counted (as in the papers): BN, activations, RPReLU, biases, residual adds, pixel shuffle, bilinear/
  nearest skips, the MeanShift and BBCU's k scaling.

Conventions: "flops" (EBSR/SCALES: FLOPs = 2 x MACs and BOPs = 2 x binary MACs), "macs" (BBCU: each
multiply-accumulate counted once) or "swinir" (SwinIR models only; SCALES Table IV: twice what SwinIR's own
`flops()` in network_swinir.py returns, the binary parts as BOPs). "swinir" is "flops" with SwinIR's rules:
each LayerNorm counts one MAC per element; no elementwise cost (re-scaling maps); conv_after_body counts
3 x C_in x C_out MACs per pixel, not 9 x; the one-conv pixel-shuffle upsampler counts k^2 x C_in x 3 per LR
pixel (as if it had 3 outputs), not k^2 x C_in x 3 s^2. The last two are SwinIR's under-counts, kept so that
the paper's table can be checked (docs/cost.md).

Params: P_bi = binary weights (QuantConv2d weights count w_bits each, i.e. P_bi is in bits), P_fp = every
other parameter (biases, thresholds, scales, RPReLU, BN affine, re-scaling branches); buffers are not counted.

Totals and the four parts of the model contract (head, body, upsampler, tail; BBCU Table 6) are reported;
cost outside the four parts (none for the bsr models) goes to "other".
"""
from __future__ import annotations

import copy
from collections import defaultdict
from fractions import Fraction

import torch
from torch import nn

from bsr_cli.errors import BsrError
from bsr_cli.nn.binary_conv import BinaryConv2d, QuantConv2d
from bsr_cli.nn.blocks import MatMul
from bsr_cli.nn.rescaling import Mul, Sub

__all__ = ["PARTS", "CONVENTIONS", "CONVENTION_NOTES", "profile_model", "format_count"]

PARTS = ("head", "body", "upsampler", "tail")
CONVENTIONS = ("flops", "macs", "swinir")
CONVENTION_NOTES = {  # one line per convention, for titles and help texts
    "flops": "FLOPs = 2 x MACs (EBSR/SCALES)",
    "macs": "MACs counted once (BBCU)",
    "swinir": "2 x SwinIR's flops() rules (SCALES Table IV; see docs/cost.md)",
}
_KEYS = ("fp_macs", "bin_macs", "bit_ops", "elementwise")


def _positions(out: torch.Tensor, c_out: int) -> int:
    return out.numel() // c_out


def _module_parts(model: nn.Module) -> dict[nn.Module, str]:
    owner: dict[nn.Module, str] = {}
    for part in PARTS:
        sub = getattr(model, part, None)
        if isinstance(sub, nn.Module):
            for m in sub.modules():
                owner.setdefault(m, part)
    return owner


def _count_params(modules, seen: set) -> tuple[int, int]:
    fp = bi = 0
    for m in modules:
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "weight" and isinstance(m, BinaryConv2d):
                bi += p.numel()
            elif pname == "weight" and isinstance(m, QuantConv2d):
                bi += p.numel() * m.w_bits
            else:
                fp += p.numel()
    return fp, bi


def _finish(raw: dict, fp: int, bi: int, convention: str) -> dict:
    mult = 1 if convention == "macs" else 2
    flops = mult * raw["fp_macs"] + (0 if convention == "swinir" else raw["elementwise"])
    bops = mult * (raw["bin_macs"] + raw["bit_ops"])
    return {
        "params_fp": fp,
        "params_bi": bi,
        "params": fp + bi / 32,
        "flops": flops,
        "bops": bops,
        "ops": flops + bops / 64,
    }


def _swinir_rules(model: nn.Module) -> dict[nn.Module, Fraction]:
    """SwinIR flops() factors on the true MACs: conv_after_body counted as 3 x C^2 (not 9 x C^2) per pixel; the
    one-step upsampler (conv C -> 3 s^2, PixelShuffle(s)) as if its conv had 3 outputs (k^2 x C x 3 per LR pixel)."""
    cab = getattr(getattr(model, "body", None), "conv_after_body", None)
    up = getattr(model, "upsampler", None)
    if not (isinstance(cab, nn.Conv2d) and isinstance(up, nn.Sequential) and len(up) == 2
            and isinstance(up[0], nn.Conv2d) and isinstance(up[1], nn.PixelShuffle)):
        raise BsrError("convention 'swinir' is SwinIR's own counter: it needs an FP body.conv_after_body and a "
                       "conv + PixelShuffle upsampler (scales-swinir, bibert-swinir)")
    return {cab: Fraction(3, cab.kernel_size[0] * cab.kernel_size[1]), up[0]: Fraction(1, up[1].upscale_factor ** 2)}


def _trace(model: nn.Module, h: int, w: int, device: torch.device, convention: str = "flops") -> dict:
    """One forward pass at LR (h, w) with counting hooks; returns raw counts per part."""
    owner = _module_parts(model)
    raw: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_KEYS, 0))
    factor = _swinir_rules(model) if convention == "swinir" else {}

    def add(m, key, n):
        raw[owner.get(m, "other")][key] += int(n)

    def conv_hook(m, inp, out):
        macs = m.weight.numel() * _positions(out, m.weight.shape[0])
        if m in factor:
            macs = macs * factor[m].numerator // factor[m].denominator
        if isinstance(m, BinaryConv2d) and m.binary_activations:
            add(m, "bin_macs", macs)
        elif isinstance(m, QuantConv2d):
            add(m, "bit_ops", macs * m.w_bits * m.a_bits)
        else:
            add(m, "fp_macs", macs)

    def linear_hook(m, inp, out):
        add(m, "fp_macs", m.weight.numel() * _positions(out, m.out_features))

    def matmul_hook(m, inp, out):
        add(m, "bin_macs" if m.binary else "fp_macs", out.numel() * inp[0].shape[-1])

    def elementwise_hook(m, inp, out):
        add(m, "elementwise", out.numel())

    def pool_hook(m, inp, out):
        add(m, "elementwise", inp[0].numel())

    def norm_hook(m, inp, out):  # "swinir" only: SwinIR's flops() counts C per token for every LayerNorm
        add(m, "fp_macs", inp[0].numel())

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, MatMul):
            handles.append(m.register_forward_hook(matmul_hook))
        elif isinstance(m, (Mul, Sub)):
            handles.append(m.register_forward_hook(elementwise_hook))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            handles.append(m.register_forward_hook(pool_hook))
        elif isinstance(m, nn.LayerNorm) and convention == "swinir":
            handles.append(m.register_forward_hook(norm_hook))
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters(), None)
        x = torch.zeros(1, 3, h, w, dtype=p.dtype if p is not None else torch.float32, device=device)
        with torch.no_grad():
            model(x)
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    return raw


_PROBES = ((4, 4), (4, 8), (8, 6))  # small LR sizes for the affine fit: areas 16, 32, 48
_AFFINE_MAX_PARAMS = 5_000_000


def _affine_trace(model: nn.Module, h: int, w: int, convention: str) -> dict | None:
    """Counts at (h, w) from real CPU traces at three small sizes, or None. In a network of stride-1 "same" convs,
    pixel shuffles and global pooling every count is a * (h * w) + b (b: layers on pooled vectors), so two small
    traces fix a and b and the third checks the fit exactly (integers). A model that pads its input
    (``pads_input``: SwinIR to window multiples), a wide one, or one that fails the check is counted at full size
    instead. 0.1-0.4 s for the light models, where the meta-device trace costs ~2 s on its first call in a process
    (``bsr upscale`` reports Eq. 7 OPs per image)."""
    if getattr(model, "pads_input", False) or (h, w) in _PROBES:
        return None
    if sum(p.numel() for p in model.parameters()) > _AFFINE_MAX_PARAMS:
        return None  # three real passes of a wide model (ebsr: 39 M) cost more than the meta trace
    try:
        traces = [_trace(model, ph, pw, torch.device("cpu"), convention) for ph, pw in _PROBES]
    except (RuntimeError, ValueError):  # e.g. a probe smaller than something in the model needs
        return None
    (a1, a2, a3), area = (ph * pw for ph, pw in _PROBES), h * w
    out: dict = defaultdict(lambda: dict.fromkeys(_KEYS, 0))
    for part in set().union(*traces):
        for key in _KEYS:
            c1, c2, c3 = (t[part][key] if part in t else 0 for t in traces)
            slope = Fraction(c2 - c1, a2 - a1)
            if c1 + slope * (a3 - a1) != c3 or (c1 + slope * (area - a1)).denominator != 1:
                return None
            out[part][key] = int(c1 + slope * (area - a1))
    return out


def profile_model(model: nn.Module, input_hw=(128, 128), convention: str = "flops") -> dict:
    """Count Params_fp, Params_bi, Params, FLOPs, BOPs, OPs (Eq. 7) of `model` for one LR input of size
    `input_hw` = (h, w), in total and per part. Returns the JSON-ready dict of `bsr profile --json`."""
    if convention not in CONVENTIONS:
        raise BsrError(f"unknown convention {convention!r} (use one of: {', '.join(CONVENTIONS)})")
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0:
        raise BsrError(f"input size must be positive, got {h}x{w}")
    raw = _affine_trace(model, h, w, convention)
    if raw is None:
        try:  # shapes are all the counters need: trace a parameter-less "meta" copy (no compute)
            target = copy.deepcopy(model).to("meta")
            raw = _trace(target, h, w, torch.device("meta"), convention)
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel: run it for real
            raw = _trace(model, h, w, torch.device("cpu"), convention)

    seen: set = set()
    parts = {}
    for part in PARTS:
        sub = getattr(model, part, None)
        fp, bi = _count_params(sub.modules(), seen) if isinstance(sub, nn.Module) else (0, 0)
        parts[part] = _finish(raw[part], fp, bi, convention)
    fp_o, bi_o = _count_params(model.modules(), seen)
    if fp_o or bi_o or any(raw["other"].values()):
        parts["other"] = _finish(raw["other"], fp_o, bi_o, convention)
    total = {k: sum(pv[k] for pv in parts.values()) for k in ("params_fp", "params_bi", "flops", "bops")}
    result = {
        "model": getattr(model, "model_name", type(model).__name__),
        "scale": getattr(model, "scale", None),
        "input": [h, w],
        "convention": convention,
        "params_fp": total["params_fp"],
        "params_bi": total["params_bi"],
        "params": total["params_fp"] + total["params_bi"] / 32,
        "flops": total["flops"],
        "bops": total["bops"],
        "ops": total["flops"] + total["bops"] / 64,
        "parts": parts,
    }
    return result


def format_count(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M', 6.498e10 -> '64.98G'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.2f}{unit}"
