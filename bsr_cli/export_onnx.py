"""ONNX export with verification, optional 1-bit packed weights, and the onnxruntime backend (``OnnxModel``).

``export_onnx(model, ...)`` traces a model with the TorchScript exporter (``dynamo=False``: the dynamo exporter
needs onnxscript, which bsr does not depend on) at a fixed example size, with height and width (and batch) as
dynamic axes, so one file serves every image size. The file gets ``metadata_props``: model, scale, bsr version,
checkpoint sha256, packed, opset, exporter and torch version, input range.

``--packed`` (``packed=True``): every binary conv's weight is stored as its signs, 8 per byte (uint8 initializer,
layout of ``bsr_cli.checkpoint.pack_signs``: row per output channel, first weight in the most significant bit,
bit 1 = -1) plus one float α per output channel (omitted when all are 1, e.g. E2FIF's plain sign). The graph
unpacks them at load time with integer ops only::

    bits (O, B) uint8 -> Unsqueeze -> BitShift(right, [7..0]) -> b - ((b >> 1) << 1) -> Cast float
        -> 1 - 2*bit -> Reshape (O, B*8) -> Slice [:K] -> Reshape (O, I, kh, kw) -> Mul α

so the file holds about Params_fp x 4 bytes + Params_bi / 8 bytes, the Eq. 7 parameter count x 4 bytes.
Constant folding is turned off for packed exports (it would turn the bits back into floats); onnxruntime folds
them in memory when it loads the file.

``verify_onnx`` runs onnxruntime on two input sizes, one odd (37x53) to catch sizes baked into reshapes, and
returns the max abs difference to PyTorch on [0, 1]-clamped outputs.

``OnnxModel(path_or_bytes, threads)`` is a torch-like callable ((1, 3, H, W) float tensor -> tensor) over an
onnxruntime session with explicit thread counts; ``bsr_cli.backends`` uses it for ``--backend onnx``.
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bsr_cli.errors import BsrError

DEFAULT_OPSET = 18
VERIFY_SIZES = ((32, 48), (37, 53))
INPUT_NAME, OUTPUT_NAME = "input", "output"


# --------------------------------------------------------------------------- packed binary weights


def _pack_conv(conv: nn.Module) -> dict | None:
    """Packed form of one binary conv: {bits uint8 (O, B), alpha (O,1,1,1) or None, shape, k}; None when its
    binarized weight is not ±α per output channel (then it stays float)."""
    from bsr_cli.checkpoint import pack_signs

    with torch.no_grad():
        bw = conv.binarized_weight().detach().float()
    o = bw.shape[0]
    alpha = bw.abs().reshape(o, -1).amax(dim=1)
    signs = torch.where(bw < 0, -1.0, 1.0)
    if not torch.equal(signs * alpha.view(-1, *([1] * (bw.dim() - 1))), bw):
        return None
    return {
        "bits": pack_signs(signs),
        "alpha": None if bool((alpha == 1).all()) else alpha.view(-1, *([1] * (bw.dim() - 1))).contiguous(),
        "shape": tuple(bw.shape),
    }


def _unpacked_signs(self) -> torch.Tensor:
    """±1 weights of a packed conv, rebuilt from the uint8 bits with traceable ops."""
    shape = self._packed_shape
    b = self.packed_bits.unsqueeze(-1) >> self.packed_shifts  # (O, B, 8) uint8, MSB first
    bit = b - ((b >> 1) << 1)
    k = int(np.prod(shape[1:]))
    return (1.0 - 2.0 * bit.reshape(shape[0], -1)[:, :k].to(torch.float32)).reshape(shape)


def _unpacked_weight(self) -> torch.Tensor:
    """Replacement ``binarized_weight`` of a packed conv: ±α from the bits."""
    w = _unpacked_signs(self)
    return w * self.packed_alpha if self.packed_alpha is not None else w


def _unpacked_exact_weight(self):
    """Replacement ``exact_weight`` of a packed conv: (signs, α) straight from the bits for binary-activation
    convs (``BinaryConv2d.exact_weight``), so the graph keeps 1 bit per weight, not a folded ±1/α tensor."""
    if self.input_quantizer is None:
        return _unpacked_weight(self), None
    return _unpacked_signs(self), self.packed_out_alpha


def _frozen_weight(self) -> torch.Tensor:
    return self.frozen_weight


def pack_binary_weights(model: nn.Module, packed: bool = True) -> tuple[nn.Module, dict]:
    """A deep copy of ``model`` for export whose binary convs no longer hold latent weights.

    ``packed=True``: each binary conv computes its weight from packed bits (see module docstring).
    ``packed=False``: each stores its binarized weight (±α) as one float32 constant.
    Returns (copy, info) with info = {"packed": n, "float": n, "bits_bytes": n, "alpha_floats": n}.
    """
    from bsr_cli.checkpoint import binary_convs

    net = copy.deepcopy(model).eval()
    info = {"packed": 0, "float": 0, "bits_bytes": 0, "alpha_floats": 0}
    for _, conv in binary_convs(net).items():
        pf = _pack_conv(conv) if packed else None
        if pf is None:
            with torch.no_grad():
                conv.register_buffer("frozen_weight", conv.binarized_weight().detach().float().clone())
            conv.binarized_weight = types.MethodType(_frozen_weight, conv)
            conv.weight = nn.Parameter(torch.zeros(1), requires_grad=False)
            info["float"] += 1
            continue
        conv.register_buffer("packed_bits", pf["bits"])
        conv.register_buffer("packed_shifts", torch.arange(7, -1, -1, dtype=torch.uint8))
        conv.register_buffer("packed_alpha", pf["alpha"])
        conv._packed_shape = pf["shape"]
        conv.binarized_weight = types.MethodType(_unpacked_weight, conv)
        conv.exact_weight = types.MethodType(_unpacked_exact_weight, conv)
        alpha = pf["alpha"] if pf["alpha"] is not None else torch.ones(pf["shape"][0])
        conv.register_buffer("packed_out_alpha", alpha.reshape(conv.out_shape).contiguous())
        # the latent weight is no longer used by forward; keep a 1-element stand-in so the file does not hold it
        conv.weight = nn.Parameter(torch.zeros(1), requires_grad=False)
        info["packed"] += 1
        info["bits_bytes"] += pf["bits"].numel()
        info["alpha_floats"] += 0 if pf["alpha"] is None else pf["alpha"].numel()
    return net, info


# --------------------------------------------------------------------------- export


TIE_LEVELS = 2  # most 8-bit levels a binary-activation tie may move a value by (ExportReport.verdict)


@dataclass
class ExportReport:
    """What ``export_onnx`` did: where, how big, and the verification numbers."""

    path: str | None
    bytes: int
    opset: int
    packed: bool
    metadata: dict
    max_abs_diff: dict = field(default_factory=dict)  # "HxW" -> max |onnx - torch| on [0, 1] outputs
    pack_info: dict = field(default_factory=dict)
    max_u8_diff: dict = field(default_factory=dict)   # "HxW" -> max |onnx - torch| in 8-bit levels (rounded)
    u8_changed: dict = field(default_factory=dict)    # "HxW" -> fraction of 8-bit output values that differ

    def verdict(self, tolerance: float) -> tuple[bool, str]:
        """(ok, why). ok when every max abs diff is <= tolerance, or when the only larger differences come from
        binary-activation ties: the 8-bit images differ by at most ``TIE_LEVELS`` levels, in at most 1 % of their
        values (PSNR between them >= 62 dB). Two levels, not one: in a binary Transformer (bibert-swinir) one
        LayerNorm output at 0 ± rounding flips one token's q/k/v signs and moves that window's pixels by 2. A 1-bit net can flip a sign whose input sits within float rounding of its
        threshold (the two runtimes sum in different orders); that flip is local and bounded, a broken export
        is not."""
        worst = max(self.max_abs_diff.values())
        if worst <= tolerance:
            return True, f"max abs diff {worst:.2e} <= {tolerance:g}"
        frac = max(self.u8_changed.values(), default=1.0)
        u8 = max(self.max_u8_diff.values(), default=255)
        if frac <= 1e-2 and u8 <= TIE_LEVELS:
            return True, (f"max abs diff {worst:.2e} > {tolerance:g}, from binary-activation ties only: the 8-bit "
                          f"output differs in {frac:.3%} of values, by at most {u8} level")
        return False, (f"max abs diff {worst:.3g} > {tolerance:g}; the 8-bit output differs in {frac:.2%} of "
                       f"values, by up to {u8} levels")


def _metadata(model_name: str, scale: int, opset: int, packed: bool, sha256: str | None) -> dict:
    from bsr_cli import __version__

    return {
        "model": model_name,
        "scale": str(scale),
        "bsr_version": __version__,
        "checkpoint_sha256": sha256 or "none (random init)",
        "packed": "true" if packed else "false",
        "opset": str(opset),
        "exporter": "torch.onnx TorchScript (dynamo=False)",
        "torch_version": torch.__version__,
        "input": "float32 (N, 3, H, W) RGB in [0, 1]",
        "output": f"float32 (N, 3, {scale}H, {scale}W) RGB, clamp to [0, 1]",
    }


def to_onnx_bytes(model: nn.Module, opset: int = DEFAULT_OPSET, packed: bool = False,
                  example_hw: tuple[int, int] = (32, 32)) -> tuple[bytes, dict]:
    """Trace ``model`` to ONNX (dynamic N, H, W) and return (serialized model, pack info)."""
    net, info = pack_binary_weights(model, packed=packed)
    buf = io.BytesIO()
    x = torch.rand(1, 3, *example_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        with torch.no_grad():
            torch.onnx.export(
                net, (x,), buf, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}},
                do_constant_folding=not packed,
            )
    return buf.getvalue(), info


def _compact_names(graph) -> None:
    """Short node and intermediate tensor names ("n12", "t34"): the exporter's scoped names
    ("/body/body.0/unit1/conv/Mul_output_0") would take a third of a packed file."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    rename: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        for j, name in enumerate(node.input):
            if name in rename:
                node.input[j] = rename[name]
        for j, name in enumerate(node.output):
            if name and name not in keep:
                rename[name] = f"t{len(rename)}"
                node.output[j] = rename[name]
    for vi in graph.value_info:
        vi.name = rename.get(vi.name, vi.name)


def _with_metadata(data: bytes, meta: dict) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    _compact_names(proto.graph)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify_onnx(data: bytes | str | Path, model: nn.Module, sizes=VERIFY_SIZES, threads: int | None = None,
                seed: int = 0, details: dict | None = None) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch outputs (both clamped to [0, 1]) per input size.
    `details`, when given, receives per size {"max_u8_diff", "u8_changed"}: the largest difference of the
    rounded 8-bit outputs and the fraction of 8-bit values that differ."""
    sess = OnnxModel(data, threads=threads)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=g)
        with torch.inference_mode():
            ref = model(x).clamp(0, 1)
        got = sess(x).clamp(0, 1)
        if got.shape != ref.shape:
            raise BsrError(f"ONNX output shape {tuple(got.shape)} != PyTorch {tuple(ref.shape)} at {h}x{w}")
        diff = (got - ref).abs()
        out[f"{h}x{w}"] = float(diff.max())
        if details is not None:
            u8 = ((got * 255).round() - (ref * 255).round()).abs()
            details[f"{h}x{w}"] = {"max_u8_diff": int(u8.max()), "u8_changed": float((u8 > 0).float().mean())}
    return out


def export_onnx(model: nn.Module, path: str | Path | None, model_name: str, scale: int,
                opset: int = DEFAULT_OPSET, packed: bool = False, checkpoint_sha256: str | None = None,
                verify: bool = True, threads: int | None = None) -> tuple[ExportReport, bytes]:
    """Export, check (``onnx.checker``), verify against PyTorch and (if ``path``) write atomically."""
    model = model.eval()
    data, info = to_onnx_bytes(model, opset=opset, packed=packed)
    meta = _metadata(model_name, scale, opset, packed, checkpoint_sha256)
    data = _with_metadata(data, meta)
    report = ExportReport(str(path) if path else None, len(data), opset, packed, meta, pack_info=info)
    if verify:
        details: dict = {}
        report.max_abs_diff = verify_onnx(data, model, threads=threads, details=details)
        report.max_u8_diff = {k: v["max_u8_diff"] for k, v in details.items()}
        report.u8_changed = {k: v["u8_changed"] for k, v in details.items()}
    if path is not None:
        _atomic_write(Path(path), data)
    return report, data


# --------------------------------------------------------------------------- onnxruntime backend


class OnnxModel:
    """A torch-like callable over an onnxruntime CPU session: (N, 3, H, W) float tensor -> tensor.

    ``threads``: intra-op threads, set explicitly (default: ``torch.get_num_threads()``, i.e. what ``--threads``
    chose); inter-op 1, sequential execution, all graph optimizations. ``metadata`` holds the file's
    metadata_props; ``providers`` the providers actually used. ``bsr_cli.backends`` builds it for
    ``--backend onnx`` (the checkpoint loaded in torch and exported in memory).
    """

    def __init__(self, source: bytes | str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.threads = int(threads or torch.get_num_threads())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        src = source if isinstance(source, bytes) else str(source)
        try:
            self.session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BsrError(f"cannot load ONNX model: {' '.join(str(exc).split())[:300]}") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = self.session.get_providers()
        self.model_name = self.metadata.get("model")
        self.scale = int(self.metadata["scale"]) if "scale" in self.metadata else None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(np.float32, copy=False)
        (y,) = self.session.run(None, {self.input_name: arr})
        return torch.from_numpy(y)

    def eval(self) -> "OnnxModel":
        return self

    def __repr__(self) -> str:
        return f"OnnxModel({self.model_name} x{self.scale}, threads={self.threads}, {self.providers[0]})"
