"""Measured CPU latency per backend, with the FP twin of the same shape timed in the same run.

``measure(model, scale, backends)`` builds the model (random init: latency does not depend on the weights'
values), runs ``warmup`` untimed forward passes on one fixed input, then ``runs`` timed ones, and reports
median, p90 and min in milliseconds per backend:

* ``torch``   the PyTorch module (``torch.set_num_threads(threads)``);
* ``onnx``    the model exported in memory (``bsr_cli.export_onnx``) on onnxruntime's CPU provider,
  ``intra_op_num_threads = threads``;
* ``bitpack`` ``bsr_cli.bitpack.convert_model``: binary-activation convs on the compiled XNOR-popcount kernel.

In torch and onnx a binary conv is an ordinary float conv on ±1 values: no 1-bit kernel runs, so a BNN is about
as fast as its FP twin there (the Eq. 7 BOP savings are not realised). Only ``bitpack`` executes 1-bit math.

Both ``measure`` and ``measure_one`` also split a torch-module backend's time (torch, bitpack) per part (head,
body, upsampler, tail, other) and per kind (binary-conv, float-conv, other) with forward hooks, in a few extra
passes after the timed ones; onnxruntime sessions cannot be split. ``measure`` interleaves the runs of all rows and reports
``time.process_time`` beside wall time, so a loaded machine shows as CPU time < wall x threads.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from bsr_cli.backends import bitpack_status  # noqa: F401  (re-exported for benchmarks)
from bsr_cli.errors import BsrError

BACKENDS = ("auto", "torch", "onnx", "bitpack")  # bsr_cli.backends.CHOICES
FP_TWIN = "srresnet-fp"
PARTS = ("head", "body", "upsampler", "tail")
FLOAT_MATH_NOTE = ("torch and onnx run binary convs as float math on ±1 values (no 1-bit kernel), so a BNN is "
                   "about as fast as its FP twin there; only the bitpack backend executes XNOR-popcount.")


@dataclass
class Latency:
    """One model on one backend."""

    model: str
    backend: str
    scale: int
    input: list[int]  # [h, w]
    threads: int
    runs: int
    warmup: int
    median_ms: float
    p90_ms: float
    min_ms: float
    parts_ms: dict = field(default_factory=dict)
    note: str = ""
    reason: str = ""  # why this backend (``auto`` resolved by bsr_cli.backends.choose)
    cpu_ms: float = 0.0  # median time.process_time per run (all threads): CPU actually used
    kinds_ms: dict = field(default_factory=dict)  # binary-conv / float-conv / other, ms per pass

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def build(model: torch.nn.Module, backend: str, threads: int, float_precision: str = "fp32") -> Callable:
    """The callable that runs ``model`` on ``backend`` (``auto`` resolved first with ``backends.choose``);
    ``float_precision``: that of a bitpack model's FP parts (``bsr_cli.bitpack.convert_model``)."""
    if backend == "auto":
        from bsr_cli.backends import choose

        backend = choose("auto", model)[0]
    if backend == "torch":
        return model
    if backend == "onnx":
        from bsr_cli.export_onnx import OnnxModel, to_onnx_bytes

        data, _ = to_onnx_bytes(model)
        return OnnxModel(data, threads=threads)
    if backend == "bitpack":
        ok, reason = bitpack_status()
        if not ok:
            raise BsrError(f"backend bitpack unavailable: {reason}")
        from bsr_cli.bitpack import convert_model

        from bsr_cli.backends import float_precision_for

        precision, why = float_precision_for(model.model_name, model.scale, float_precision)
        fn = convert_model(model, threads=threads, float_precision=precision)
        fn.float_precision_reason = why
        return fn
    raise BsrError(f"unknown backend {backend!r} (use one of {', '.join(BACKENDS)})")


KINDS = ("binary-conv", "float-conv", "other")


def conv_kind(module: torch.nn.Module) -> str | None:
    """``binary-conv`` for a 1-bit conv (bitpack kernel, or a BinaryConv2d run as float math on the torch
    backend), ``float-conv`` for any other conv or linear (the spatial re-scaling map's FP C -> 1 conv too, also
    when the kernel's `spatial` routine computes it), None for everything else."""
    from bsr_cli.bitpack.backend import BitpackConv2d, BitpackSpatialRescale
    from bsr_cli.nn.binary_conv import BinaryConv2d

    if isinstance(module, (BitpackConv2d, BinaryConv2d)):
        return "binary-conv"
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, BitpackSpatialRescale)):
        return "float-conv"
    return None


class _SplitTimer:
    """Forward hooks that time head/body/upsampler/tail of a torch module and, across the whole network, the
    time spent in binary convs and in float convs/linears (outermost conv module only, so a conv inside a
    timed conv is not counted twice); ``other`` = the rest (elementwise work, re-scaling maps, layout copies,
    Python dispatch)."""

    def __init__(self, model: torch.nn.Module):
        self.handles = []
        self.times: dict[str, list[float]] = {p: [] for p in PARTS}
        self.kind_s = {k: 0.0 for k in KINDS[:2]}
        self._start: dict[object, float] = {}
        self._depth = 0
        for part in PARTS:
            mod = getattr(model, part, None)
            if isinstance(mod, torch.nn.Module) and not isinstance(mod, torch.nn.Identity):
                self.handles.append(mod.register_forward_pre_hook(self._pre(part)))
                self.handles.append(mod.register_forward_hook(self._post(part)))
        for mod in model.modules():
            kind = conv_kind(mod)
            if kind is not None:
                self.handles.append(mod.register_forward_pre_hook(self._kind_pre(mod)))
                self.handles.append(mod.register_forward_hook(self._kind_post(mod, kind)))

    def _pre(self, part):
        def hook(_m, _a):
            self._start[part] = time.perf_counter()
        return hook

    def _post(self, part):
        def hook(_m, _a, _o):
            self.times[part].append(time.perf_counter() - self._start.pop(part))
        return hook

    def _kind_pre(self, mod):
        def hook(_m, _a):
            self._depth += 1
            if self._depth == 1:
                self._start[id(mod)] = time.perf_counter()
        return hook

    def _kind_post(self, mod, kind):
        def hook(_m, _a, _o):
            if self._depth == 1:
                self.kind_s[kind] += time.perf_counter() - self._start.pop(id(mod))
            self._depth -= 1
        return hook

    def medians_ms(self) -> dict[str, float]:
        return {p: round(1e3 * statistics.median(t), 3) for p, t in self.times.items() if t}

    def kinds_ms(self, total_s: float, passes: int) -> dict[str, float]:
        """Mean ms per pass in binary convs, float convs and the rest, from ``passes`` passes of ``total_s``."""
        out = {k: round(1e3 * v / passes, 3) for k, v in self.kind_s.items()}
        out["other"] = round(max(0.0, 1e3 * total_s / passes - sum(out.values())), 3)
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def split_time(fn: torch.nn.Module, x: torch.Tensor, passes: int = 3) -> tuple[dict, dict]:
    """(ms per part with ``other`` = outside the parts, ms per kind: binary-conv / float-conv / other), from
    ``passes`` extra hooked passes (the hooks add a little time; the timed runs are measured without them)."""
    timer = _SplitTimer(fn)
    try:
        total = time_runs(fn, x, passes, 0)
    finally:
        timer.close()
    parts = timer.medians_ms()
    parts["other"] = round(max(0.0, 1e3 * statistics.median(total) - sum(parts.values())), 3)
    return parts, timer.kinds_ms(sum(total), passes)


def time_runs(fn: Callable, x: torch.Tensor, runs: int, warmup: int) -> list[float]:
    """Seconds per call for ``runs`` calls after ``warmup`` untimed ones, on one fixed input."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t0)
    return out


def measure_one(name: str, scale: int, backend: str, input_hw=(128, 128), runs: int = 20, warmup: int = 3,
                threads: int | None = None, model: torch.nn.Module | None = None, parts: bool = True) -> Latency:
    """Latency of model ``name`` (or the given module) on one backend."""
    from bsr_cli.models import create_model

    threads = int(threads or torch.get_num_threads())
    torch.set_num_threads(threads)
    net = (model if model is not None else create_model(name, scale)).eval()
    fn = build(net, backend, threads)
    x = torch.rand(1, 3, *input_hw, generator=torch.Generator().manual_seed(0))
    secs = time_runs(fn, x, runs, warmup)
    split: dict[str, float] = {}
    kinds: dict[str, float] = {}
    if parts and isinstance(fn, torch.nn.Module):
        split, kinds = split_time(fn, x, max(3, runs // 4))
    note = "" if backend == "bitpack" or name == FP_TWIN else "binary convs as float math"
    return Latency(name, backend, scale, list(input_hw), threads, runs, warmup,
                   round(1e3 * statistics.median(secs), 3), round(1e3 * percentile(secs, 90), 3),
                   round(1e3 * min(secs), 3), split, note, kinds_ms=kinds)


def measure(name: str, scale: int = 4, backends=("auto",), input_hw=(128, 128), runs: int = 20,
            warmup: int = 3, threads: int | None = None, twin: str = FP_TWIN,
            progress: Callable[[int, int], None] | None = None, float_precision: str = "fp32") -> dict:
    """Latency of ``name`` and of its FP twin, measured in this one run with the runs interleaved (round-robin
    over all callables), so machine load hits every row alike; ``ratio_to_twin`` divides the model's median by
    the twin's.

    ``auto`` is resolved per model (``bsr_cli.backends.choose``: bitpack for the binary model, the fastest fp32
    path for the twin). The twin runs on every float backend asked for, and on the fp32 path ``auto`` picks;
    a bitpack row is divided by the twin on that path (the best fp32 the twin gets). ``progress(done, total)``
    is called after every timed or warm-up call. ``float_precision``: that of the bitpack rows' FP parts (the
    twin runs fp32); the row's reason says what ran.
    """
    from bsr_cli.backends import choose, float_auto
    from bsr_cli.models import create_model

    threads = int(threads or torch.get_num_threads())
    torch.set_num_threads(threads)
    net = create_model(name, scale).eval()
    twin_net = create_model(twin, scale).eval()
    rows: list[tuple[str, str, str, torch.nn.Module]] = []  # (model, backend, reason, net)
    for b in dict.fromkeys(backends):
        chosen, reason = choose(b, net)
        rows.append((name, chosen, reason, net))
    fl = float_auto()
    twin_backends = dict.fromkeys([r[1] if r[1] in ("torch", "onnx") else fl for r in rows])
    for b in twin_backends:
        rows.append((twin, b, "fp32 twin" if b != fl else "fp32 twin, auto's fp32 path", twin_net))
    seen, unique = set(), []
    for r in rows:
        if (r[0], r[1]) not in seen:
            seen.add((r[0], r[1]))
            unique.append(r)
    fns = [build(r[3], r[1], threads, float_precision if r[0] == name else "fp32") for r in unique]
    unique = [(m, b, reason + (f"; {fn.float_precision_reason}" if b == "bitpack" else ""), n)
              for (m, b, reason, n), fn in zip(unique, fns)]
    x = torch.rand(1, 3, *input_hw, generator=torch.Generator().manual_seed(0))
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    calls, done = (warmup + runs) * len(fns), 0
    with torch.inference_mode():
        for fn in fns:
            for _ in range(warmup):
                fn(x)
                done += 1
                if progress:
                    progress(done, calls)
        for _ in range(runs):
            for i, fn in enumerate(fns):
                w0, c0 = time.perf_counter(), time.process_time()
                fn(x)
                wall[i].append(time.perf_counter() - w0)
                cpu[i].append(time.process_time() - c0)
                done += 1
                if progress:
                    progress(done, calls)
        splits = [split_time(fn, x, 3) if isinstance(fn, torch.nn.Module) else ({}, {}) for fn in fns]
    results = []
    for (model, backend, reason, _), secs, cs, (parts, kinds) in zip(unique, wall, cpu, splits):
        note = "" if backend == "bitpack" or model == twin else "binary convs as float math"
        results.append(Latency(model, backend, scale, list(input_hw), threads, runs, warmup,
                               round(1e3 * statistics.median(secs), 3), round(1e3 * percentile(secs, 90), 3),
                               round(1e3 * min(secs), 3), parts, note, reason, round(1e3 * statistics.median(cs), 3),
                               kinds))
    mine = [r for r in results if r.model == name]
    twins = {r.backend: r for r in results if r.model == twin}
    ratio = {}
    for r in mine:
        ref = twins.get(r.backend) or twins[fl]
        ratio[r.backend] = round(r.median_ms / ref.median_ms, 3)
    import os

    return {
        "model": name, "twin": twin, "scale": scale, "input": list(input_hw), "threads": threads,
        "cpu": cpu_name(), "isa": bitpack_status()[1], "load_average": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__, "results": [r.as_dict() for r in mine],
        "twin_results": [t.as_dict() for t in twins.values()], "ratio_to_twin": ratio, "note": FLOAT_MATH_NOTE,
    }


def render(reports: list[dict], console=None) -> None:
    """A rich table of ``measure`` reports, then the CPU/threads line and the float-math note."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:
        console = Console(width=150, file=console.file)
    if not reports:
        return
    r0 = reports[0]
    h, w = r0["input"]
    table = Table(title=f"latency, x{r0['scale']}, LR input {w}x{h}, batch 1 (ms)", title_justify="left")
    for col in ("model", "backend", "median", "p90", "min", "CPU", f"/ {r0['twin']}", "why"):
        table.add_column(col, justify="left" if col in ("model", "backend", "why") else "right",
                         no_wrap=col != "why")  # the reason wraps, the numbers never
    for rep in reports:
        rows = [(r, rep["ratio_to_twin"].get(r["backend"])) for r in rep["results"]]
        rows += [(t, None) for t in rep["twin_results"]]
        for r, ratio in rows:
            table.add_row(r["model"], r["backend"], f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}",
                          f"{r['min_ms']:.1f}", f"{r.get('cpu_ms', 0):.1f}",
                          "" if ratio is None else f"{ratio:.2f}x", r.get("reason", ""))
        table.add_section()
    console.print(table)
    for rep in reports:
        for r in rep["results"] + rep["twin_results"]:
            if r.get("parts_ms") or r.get("kinds_ms"):
                parts = ", ".join(f"{k} {v:.1f}" for k, v in r.get("parts_ms", {}).items())
                kinds = ", ".join(f"{k} {v:.1f}" for k, v in r.get("kinds_ms", {}).items())
                console.print(f"{r['model']} on {r['backend']}, ms per pass: {parts}; {kinds}", highlight=False)
    console.print(f"CPU: {r0['cpu']} (1-bit kernel: {r0.get('isa', '?')}); load average {r0.get('load_average')}; "
                  f"threads: {r0['threads']} (torch.set_num_threads, onnxruntime intra-op); "
                  f"{r0['results'][0]['warmup']} warm-up + {r0['results'][0]['runs']} timed runs, interleaved; "
                  "CPU = median process_time per run.", highlight=False)
    console.print(f"note: {FLOAT_MATH_NOTE}", highlight=False)
