"""Inference backends: the one table of loaders, the ``auto`` rule, and model / checkpoint / sha256 resolution.

Backends (``BACKENDS``: name -> ``loader(model_name, scale, checkpoint_path) -> callable``):

* ``torch``   the PyTorch module, fp32 (the reference; binary convs run as float math on ±1 values);
* ``onnx``    the model exported in memory (``bsr_cli.export_onnx``) on onnxruntime's CPU provider;
* ``bitpack`` binary-activation convs on the compiled XNOR-popcount kernel (``bsr_cli.bitpack``), the rest
  (FP head, upsampler, tail) in PyTorch on channels-last tensors.

``auto`` (the default of upscale, eval and profile --latency) picks, per model (``choose``):

1. ``bitpack`` when the kernel is built and the model has binary-activation convs (1-bit x 1-bit MACs, the
   BOPs of EBSR Eq. 7): only this backend executes them as XNOR-popcount;
2. otherwise ``FLOAT_AUTO`` (``onnx``; ``torch`` when onnxruntime is not importable): the fastest fp32 path
   measured on this project's CPU (AMD EPYC, AVX-512; srresnet-fp x4, 64x64 LR, interleaved runs): onnxruntime
   0.80x torch's time on 1 thread, 0.18x on 2 threads; torch channels-last 0.91x / 0.63x. bf16 autocast was
   0.60x on 1 thread but 1.20x on 2 threads and changes the output (8-bit mantissa), so it is not chosen.

``load`` returns a ``Loaded``: the callable, the fp32 torch twin (same weights; probed for tiling and counted
for Eq. 7), the backend that runs and why, the checkpoint path and its sha256. An ``.onnx`` checkpoint (from
``bsr export``) runs on ``onnx``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from bsr_cli import weights
from bsr_cli.errors import BsrError

CHOICES = ("auto", "torch", "onnx", "bitpack")
FLOAT_AUTO = "onnx"


class Backend(str, Enum):
    """``--backend`` choices, so ``--help`` lists them (this module imports no torch: help stays fast)."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    bitpack = "bitpack"


class FloatPrecision(str, Enum):
    """``--float-precision`` choices: the precision of a bitpack model's FP upsampler and tail."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


FLOAT_PRECISION_HELP = ("Upsampler and tail of a bitpack model: fp32, bf16 autocast (AMX / AVX512-BF16; outputs move by "
                        "bf16 rounding), or auto: bf16 on CPUs with native bf16 for models with > 10 % of their FP "
                        "twin's FLOPs in float (bbcu-l: 2x faster), else fp32.")


# --------------------------------------------------------------------------------------------- the table
def _torch_loader(model: str, scale: int, path: Path | None):
    from bsr_cli.checkpoint import load_into
    from bsr_cli.models import create_model

    net = create_model(model, scale)
    if path is not None:
        load_into(net, path)
    return net.eval()


def _onnx_loader(model: str, scale: int, path: Path | None):
    from bsr_cli.export_onnx import OnnxModel, export_onnx

    net = _torch_loader(model, scale, path)
    sha = weights.sha256_file(path) if path is not None else None
    _, data = export_onnx(net, None, model, scale, checkpoint_sha256=sha, verify=False)
    return OnnxModel(data)


def _bitpack_loader(model: str, scale: int, path: Path | None):
    from bsr_cli.bitpack.backend import convert_model

    return convert_model(_torch_loader(model, scale, path))


#: backend name -> loader(model_name, scale, checkpoint_path or None) -> callable model
BACKENDS: dict[str, Callable] = {"torch": _torch_loader, "onnx": _onnx_loader, "bitpack": _bitpack_loader}


def register_backend(name: str, loader: Callable) -> None:
    """Make ``load(..., backend=name)`` call ``loader(model_name, scale, checkpoint_path)``."""
    BACKENDS[name] = loader


# --------------------------------------------------------------------------------------------- auto rule
def has_binary_activations(net) -> bool:
    """True when ``net`` has a conv with binary weights *and* binary inputs (an XNOR-popcount conv)."""
    return any(getattr(m, "binary_activations", False) is True for m in net.modules())


def bitpack_status() -> tuple[bool, str]:
    """(available, ISA or reason) of the compiled 1-bit kernel."""
    from bsr_cli.bitpack.kernel import bitpack_available  # reports a missing or unbuilt extension itself

    return bitpack_available()


def float_auto() -> str:
    """The float path ``auto`` uses: ``FLOAT_AUTO`` when its runtime is importable, else torch."""
    if FLOAT_AUTO == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return FLOAT_AUTO


def choose(requested: str, net) -> tuple[str, str]:
    """(backend, reason) for ``requested`` (a name or ``auto``) and the fp32 torch model ``net``."""
    if requested not in CHOICES and requested not in BACKENDS:
        raise BsrError(f"unknown backend {requested!r} (choose from {', '.join(CHOICES)})")
    if requested != "auto":
        return requested, "requested"
    ok, why = bitpack_status()
    binary = has_binary_activations(net)
    if binary and ok:
        return "bitpack", f"auto: binary-activation convs, 1-bit kernel built ({why})"
    fl = float_auto()
    if binary:
        return fl, f"auto: 1-bit kernel unavailable ({why}); fastest measured fp32 path"
    return fl, "auto: no binary-activation convs; fastest measured fp32 path"


# --------------------------------------------------------------------------------------------- resolution
@dataclass
class Resolved:
    """Which weights a (model, scale, checkpoint) request means."""

    model: str
    scale: int
    checkpoint: Path | None  # None: random init (latency / counting only)
    sha256: str | None
    source: str  # "manifest <entry> (bundled|cache|download)", "--checkpoint", "random init"


def resolve(name: str | None, scale: int | None = None, checkpoint: str | Path | None = None,
            pretrained: bool = True) -> Resolved:
    """Model name, scale, checkpoint path and sha256 for a request.

    ``name``: a model (``ebsr-light``), a manifest entry (``ebsr-light-x4``) or None (the manifest default at
    ``scale``, or the model recorded in ``checkpoint``). ``checkpoint``: a packed safetensors file that overrides
    the manifest. ``pretrained=False`` skips the manifest (random init).
    """
    if checkpoint is not None:
        from bsr_cli.checkpoint import read_metadata

        path = Path(checkpoint)
        if not path.is_file():
            raise BsrError(f"checkpoint {path} does not exist")
        meta = read_metadata(path)
        model = name
        if name is not None and name not in _model_names() and any(e.get("name") == name for e in weights.entries()):
            model = weights.find_entry(name)["model"]
        model = model or meta.get("model")
        scale = scale or meta.get("scale")
        if not model or not scale:
            raise BsrError(f"{path} does not record its model/scale: pass --model and --scale")
        if meta.get("model") not in (None, model):
            raise BsrError(f"{path} holds weights for {meta['model']}, not {model}")
        if meta.get("scale") not in (None, "") and int(meta["scale"]) != int(scale):
            raise BsrError(f"{path} is a x{meta['scale']} checkpoint, not x{scale}")
        return Resolved(model, int(scale), path, weights.sha256_file(path), "--checkpoint")
    if name is None:
        if scale is None:
            raise BsrError("give a model name or a scale")
        name = weights.default_model(scale)
        if name is None:
            raise BsrError(f"no pretrained weights at x{scale}; pass --model and --checkpoint")
    if not pretrained:
        if scale is None:
            raise BsrError("give a scale")
        return Resolved(name, int(scale), None, None, "random init")
    entry = weights.find_entry(name, scale)
    where, path = weights.locate(entry)
    if path is None:
        path, where = weights.resolve_checkpoint(entry), "download"
    return Resolved(entry["model"], int(entry["scale"]), path, entry.get("sha256"), f"manifest {entry['name']} ({where})")


def _model_names() -> set[str]:
    from bsr_cli.models import list_models

    return set(list_models())


def float_precision_for(model: str, scale: int, requested: str) -> tuple[str, str]:
    """("fp32" | "bf16", why) for a bitpack model's upsampler and tail (``--float-precision``). ``auto``: bf16 where
    the CPU runs bf16 natively (AMX / AVX512-BF16) and the model keeps more than ``weights.FLOAT_SHARE_MAX`` (10 %)
    of its FP twin's FLOPs in float (``weights.float_share``: bbcu-l 0.68), else fp32. Measured 2026-12-07 on the
    Xeon (AMX), LR 128x128, 1 thread: bbcu-l 458 -> 234 ms with bf16 float parts, e2fif / ebsr-light (shares
    0.015 / 0.026) 3-5 %, within noise, so they keep the reference's fp32 numbers. A rule, not a timing per run: the
    same command on the same machine always picks the same numbers."""
    choices = [p.value for p in FloatPrecision]  # the CLI's list, one place
    if requested not in choices:
        raise BsrError(f"unknown --float-precision {requested!r} ({', '.join(choices)})")
    if requested != "auto":
        return requested, f"float parts {requested} (requested)"
    from bsr_cli.cpu import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        return "fp32", "float parts fp32 (no native bf16 on this CPU)"
    try:
        share = weights.float_share(weights.find_entry(model, scale))
    except BsrError:  # no manifest entry: count it
        share = weights.measured_float_share(model, scale)
    if share > weights.FLOAT_SHARE_MAX:
        return "bf16", f"float parts bf16 (native bf16; {share:.0%} of the twin's FLOPs in float)"
    return "fp32", f"float parts fp32 ({share:.1%} of the twin's FLOPs in float: bf16 would not pay)"


# --------------------------------------------------------------------------------------------- loading
@dataclass
class Loaded:
    """A model ready to run: ``model`` is called on (1, 3, h, w) float tensors in [0, 1]."""

    name: str
    scale: int
    backend: str
    reason: str
    threads: int
    model: Callable
    torch_model: object  # fp32 torch twin with the same weights (probe, Eq. 7 counts)
    checkpoint: str | None
    sha256: str | None
    source: str

    def describe(self) -> dict:
        """The JSON fields every command reports about what ran."""
        return {"model": self.name, "scale": self.scale, "backend": self.backend, "backend_reason": self.reason,
                "threads": self.threads, "checkpoint": self.checkpoint, "checkpoint_sha256": self.sha256,
                "weights": self.source}


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (default: the CPUs this process may run on) to torch; returns the count."""
    import os

    import torch

    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            threads = os.cpu_count() or 1
    threads = int(threads)
    if threads < 1:
        raise BsrError("--threads must be at least 1")
    torch.set_num_threads(threads)
    return threads


def load(name: str | None, scale: int | None = None, checkpoint: str | Path | None = None, backend: str = "auto",
         threads: int | None = None, pretrained: bool = True, float_precision: str = "fp32") -> Loaded:
    """Resolve, build the fp32 torch model, pick the backend (``choose``) and build it. ``float_precision``
    (fp32 | bf16 | auto) is that of a bitpack model's FP parts (``bsr_cli.bitpack.convert_model``); the other
    backends run fp32."""
    threads = set_threads(threads)
    if checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx":
        return _load_onnx_file(name, scale, Path(checkpoint), backend, threads)
    res = resolve(name, scale, checkpoint, pretrained)
    import torch

    torch.set_num_threads(1)  # building is many tiny ops: one thread (see tiling.one_thread), then `threads`
    try:
        net = _torch_loader(res.model, res.scale, res.checkpoint)
        chosen, reason = choose(backend, net)
        loader = BACKENDS.get(chosen)
        if loader is None:
            raise BsrError(f"backend {chosen} not available (available: {', '.join(sorted(BACKENDS))})")
        model = None
        if chosen == "torch" and loader is _torch_loader:
            model = net
        elif chosen == "bitpack" and loader is _bitpack_loader:
            from bsr_cli.bitpack.backend import convert_model

            precision, why = float_precision_for(res.model, res.scale, float_precision)
            model = convert_model(net, float_precision=precision)
            reason += f"; {why}"
    finally:
        torch.set_num_threads(threads)
    if chosen != "bitpack" and float_precision == "bf16":
        raise BsrError(f"--float-precision bf16 is for the bitpack backend's float parts; {res.model} runs on {chosen}")
    if model is None:  # other loaders (onnxruntime reads torch's thread count for its own)
        model = loader(res.model, res.scale, res.checkpoint)
    return Loaded(res.model, res.scale, chosen, reason, threads, model, net,
                  str(res.checkpoint) if res.checkpoint else None, res.sha256, res.source)


def _load_onnx_file(name, scale, path: Path, backend: str, threads: int) -> Loaded:
    from bsr_cli.export_onnx import OnnxModel

    if backend not in ("auto", "onnx"):
        raise BsrError(f"{path} is an ONNX file: use --backend onnx (or auto)")
    if not path.is_file():
        raise BsrError(f"checkpoint {path} does not exist")
    model = OnnxModel(path, threads=threads)
    name = name or model.metadata.get("model")
    if not name:
        raise BsrError(f"{path} does not record its model: pass --model")
    file_scale = int(model.metadata.get("scale", scale or 0)) or None
    if scale is not None and file_scale not in (None, int(scale)):
        raise BsrError(f"{path} is a x{file_scale} model, not x{scale}")
    scale = int(scale or file_scale or 0)
    if not scale:
        raise BsrError(f"{path} does not record its scale: pass --scale")
    reason = "requested" if backend == "onnx" else "auto: checkpoint is an ONNX file"
    return Loaded(name, scale, "onnx", reason, threads, model, _torch_loader(name, scale, None), str(path),
                  weights.sha256_file(path), "--checkpoint (onnx)")


def load_model(name: str | None, scale: int | None = None, checkpoint: str | Path | None = None,
               backend: str = "torch"):
    """Just the callable of ``load`` (library use; default backend ``torch``, an ``nn.Module`` in eval mode)."""
    if backend not in BACKENDS and backend != "auto":
        raise BsrError(f"backend {backend} not available (available: {', '.join(sorted(BACKENDS))})")
    if backend not in ("torch", "onnx", "bitpack", "auto"):  # a registered loader: call it directly
        res = resolve(name, scale, checkpoint)
        return BACKENDS[backend](res.model, res.scale, res.checkpoint)
    import torch

    threads = torch.get_num_threads()
    return load(name, scale, checkpoint, backend, threads).model
