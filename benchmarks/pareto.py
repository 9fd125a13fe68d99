"""Quality against latency: Set5 x4 PSNR vs CPU latency of every shipped x4 checkpoint and the float references.

    python benchmarks/pareto.py [--rounds 5] [--size 256] [--threads 1,2] [--out DIR] [--quick]
                                [--extra fsrcnn=FILE --extra espcn=FILE] [--data-dir ../shared/datasets/benchmark]

Candidates (all built before timing, then timed in ONE run, interleaved: every round runs A B C ... at each
thread count; the median of the rounds is reported, wall time and ``time.process_time`` side by side):

* every x4 manifest entry (``bsr_cli.weights.entries()``) on its best backend: ``bitpack`` for models with
  binary-activation convs (``bsr_cli.backends.has_binary_activations``, kernel built) as ``bsr upscale`` runs it
  (with ``--bf16 auto`` on a native-bf16 CPU: ``--float-precision auto``, i.e. the upsampler and tail in bf16
  for models with > 10 % of the twin's FLOPs in float, row "bitpack + bf16 float", PSNR measured through it),
  else torch fp32 channels-last (the FP twin ``srresnet-fp`` and the binary-weight-only ``ma2019-bwn``);
* the FP twin on onnxruntime static int8 (QDQ, per-channel s8 weights, u8 activations, calibrated on 8 BSD400
  LR crops; ``bsr_cli.export_onnx.to_onnx_bytes`` for the fp32 graph);
* ``fsrcnn`` and ``espcn`` (torch fp32 channels-last) with ``--extra NAME=FILE`` checkpoints; without one the
  network is timed at random init and its PSNR is missing (latency does not depend on the weights);
* on a CPU with native bf16 (AMX-BF16 / AVX512-BF16; ``--bf16 auto``, the default) the float networks a user
  would run there — the FP twin, ``fsrcnn``, ``espcn`` — also as torch bf16 autocast channels-last, with their
  Set5 PSNR measured here through bf16 (it changes the output); ``--bf16 off`` leaves them out;
* bicubic: PSNR of the protocol's MATLAB bicubic, latency of ``torch.nn.functional.interpolate(bicubic)``.

PSNR: the manifest's ``metrics.Set5.psnr`` (measured by bsr's eval chain, ``benchmarks/verify_manifest.py``)
when present, else measured here with ``bsr_cli.evaluate.evaluate`` on Set5. A point is on the Pareto front
(per thread count) when no other point is both faster (median wall ms) and better (PSNR).
Writes pareto.md, pareto.json and pareto.png to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bsr_cli import backends, weights
from bsr_cli.evaluate import evaluate, model_sr
from bsr_cli.latency import build, cpu_name
from bsr_cli.train import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "benchmark"
CALIB_DIR = ROOT.parent / "shared" / "datasets" / "train" / "BSD400"
SCALE = 4
TWIN = "srresnet-fp"
LIGHT = ("fsrcnn", "espcn")


def pareto_front(points: list[tuple[float, float | None]]) -> list[bool]:
    """For (ms, dB) points: True where no other point is both faster (smaller ms) and better (larger dB).
    A point without dB (None) is never on the front and dominates nothing."""
    out = []
    for ms, db in points:
        if db is None:
            out.append(False)
            continue
        out.append(not any(d is not None and m < ms and d > db for m, d in points))
    return out


def isa_flags() -> str:
    """The SIMD extensions lscpu reports (avx2, avx512*, amx*)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "?"
    import re

    return " ".join(sorted(set(re.findall(r"avx512[a-z_0-9]*|amx[a-z_0-9]*|avx2", text)))) or "none"


def channels_last(net: torch.nn.Module):
    """torch fp32 channels-last: the module and its input in NHWC memory order."""
    net = net.eval().to(memory_format=torch.channels_last)
    return lambda x: net(x.contiguous(memory_format=torch.channels_last))


def bf16_channels_last(net: torch.nn.Module):
    """torch bf16 autocast channels-last (oneDNN runs its convs on AMX where the CPU has it); fp32 output."""
    fp32 = channels_last(net)

    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fp32(x).float()

    return run


def with_bf16_rows(cands: list[dict], data_dir) -> list[dict]:
    """Each float network (the twin, fsrcnn, espcn on torch fp32) once more as torch bf16, PSNR measured here."""
    out = list(cands)
    for c in cands:
        if c["model"] in (TWIN,) + LIGHT and c["backend"] == "torch fp32 CL":
            fn = bf16_channels_last(c["net"])
            psnr = set5_psnr(fn, data_dir) if c["psnr"] is not None else None
            out.append(dict(model=c["model"], backend="torch bf16 CL", psnr=psnr, net=c["net"],
                            psnr_source="measured here (bf16 autocast)" if psnr is not None else c["psnr_source"],
                            fns={t: fn for t in c["fns"]}))
    return out


def calibration_inputs(n: int = 8, size: int = 64) -> list[np.ndarray]:
    """n LR crops (float32 NCHW in [0, 1]) from BSD400 (training data, not the benchmark); random when absent."""
    from bsr_cli.evaluate import load_hr
    from bsr_cli.protocol import bicubic_downscale_uint8

    files = sorted(CALIB_DIR.glob("*.jpg"))[:n] if CALIB_DIR.is_dir() else []
    out = []
    for f in files:
        hr = load_hr(f)
        if hr.ndim == 2:
            hr = np.repeat(hr[..., None], 3, axis=2)
        hr = hr[: size * SCALE, : size * SCALE]
        lr = bicubic_downscale_uint8(np.ascontiguousarray(hr), SCALE)
        out.append((lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0))
    rng = np.random.default_rng(0)
    while len(out) < n:
        out.append(rng.random((1, 3, size, size), dtype=np.float32))
    return out


def ort_int8(net: torch.nn.Module) -> bytes:
    """The model as an onnxruntime static int8 (QDQ) graph, calibrated on ``calibration_inputs``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from bsr_cli.export_onnx import INPUT_NAME, to_onnx_bytes

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration_inputs())

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    data, _ = to_onnx_bytes(net)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(data)
        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice, twice
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def set5_psnr(fn, data_dir) -> float:
    """Set5 x4 PSNR of a callable model through bsr's eval chain."""
    return round(evaluate("model", "Set5", SCALE, data_dir=data_dir, sr_fn=model_sr(fn, SCALE))["psnr"], 4)


def candidates(threads: list[int], extra: dict[str, str], data_dir, only: set[str] | None = None,
               bf16: bool = False) -> list[dict]:
    """Each candidate: model, backend, psnr (or None), psnr_source, fns {threads: callable}, net.
    ``only``: model names to build (None: all); ``bf16``: add the float networks in bf16 too."""
    from bsr_cli.export_onnx import OnnxModel
    from bsr_cli.models import create_model

    out = []
    kernel_ok, _ = backends.bitpack_status()
    for e in weights.entries():
        if int(e["scale"]) != SCALE or (only and e["model"] not in only):
            continue
        net = backends.load(e["name"], SCALE, backend="torch").torch_model
        psnr = (e.get("metrics") or {}).get("Set5", {}).get("psnr")
        source = f"manifest (measured on {e.get('metrics_backend', '?')})"
        if psnr is None:
            psnr, source = set5_psnr(net, data_dir), "measured here (torch)"
        if kernel_ok and backends.has_binary_activations(net):  # as `bsr upscale` runs it (--float-precision auto)
            fns = {t: build(net, "bitpack", t, "auto" if bf16 else "fp32") for t in threads}
            backend = "bitpack"
            if fns[threads[0]].float_precision == "bf16":  # upsampler + tail in bf16: PSNR measured through it
                backend, psnr, source = "bitpack + bf16 float", set5_psnr(fns[threads[0]], data_dir), "measured here"
            out.append(dict(model=e["model"], backend=backend, psnr=psnr, psnr_source=source, fns=fns, net=net))
        else:
            fn = channels_last(net)
            out.append(dict(model=e["model"], backend="torch fp32 CL", psnr=psnr, psnr_source=source,
                            fns={t: fn for t in threads}, net=net))
        if e["model"] == TWIN:
            q = ort_int8(net)
            psnr = set5_psnr(OnnxModel(q, threads=max(threads)), data_dir)
            out.append(dict(model=TWIN, backend="ORT int8 static", psnr=psnr, psnr_source="measured here",
                            fns={t: OnnxModel(q, threads=t) for t in threads}, net=net))
    shipped = {c["model"] for c in out}
    for name in LIGHT:
        if (only and name not in only) or (name in shipped and name not in extra):
            continue  # a shipped fsrcnn/espcn checkpoint is already a candidate above
        if name in extra:
            net = backends.load(name, SCALE, checkpoint=extra[name], backend="torch").torch_model
            psnr, source = set5_psnr(net, data_dir), f"measured here ({Path(extra[name]).name})"
        else:
            net, psnr, source = create_model(name, SCALE), None, "missing (random init, no checkpoint)"
        fn = channels_last(net)
        out = [c for c in out if c["model"] != name]  # --extra replaces a shipped one
        out.append(dict(model=name, backend="torch fp32 CL", psnr=psnr, psnr_source=source,
                        fns={t: fn for t in threads}, net=net))
    if bf16:
        out = with_bf16_rows(out, data_dir)
    if only and "bicubic" not in only:
        return out
    bic = round(evaluate("bicubic", "Set5", SCALE, data_dir=data_dir)["psnr"], 4)

    def bicubic(x):
        return torch.nn.functional.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False)

    out.append(dict(model="bicubic", backend="torch interpolate", psnr=bic, psnr_source="measured here (protocol)",
                    fns={t: bicubic for t in threads}))
    return out


def measure(cands: list[dict], threads: list[int], size: int, rounds: int, warmup: int) -> None:
    """Interleaved timing: per round, per thread count, every candidate once. Adds ms/cpu_ms {threads: median}."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    wall = {(i, t): [] for i in range(len(cands)) for t in threads}
    cpu = {k: [] for k in wall}
    with torch.inference_mode():
        for t in threads:
            torch.set_num_threads(t)
            for c in cands:
                for _ in range(warmup):
                    c["fns"][t](x)
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}, load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
            for t in threads:
                torch.set_num_threads(t)
                for i, c in enumerate(cands):
                    w0, c0 = time.perf_counter(), time.process_time()
                    c["fns"][t](x)
                    wall[i, t].append(time.perf_counter() - w0)
                    cpu[i, t].append(time.process_time() - c0)
    for i, c in enumerate(cands):
        c["ms"] = {t: round(1e3 * statistics.median(wall[i, t]), 1) for t in threads}
        c["cpu_ms"] = {t: round(1e3 * statistics.median(cpu[i, t]), 1) for t in threads}
    for t in threads:
        for c, on in zip(cands, pareto_front([(c["ms"][t], c["psnr"]) for c in cands])):
            c.setdefault("front", {})[t] = on


def markdown(cands: list[dict], env: dict) -> str:
    ts = env["threads"]
    head = (["model", "backend", "Set5 dB"] + [f"ms {t}T" for t in ts] + ["CPU ms " + " / ".join(f"{t}T" for t in ts)]
            + ["on front " + " / ".join(f"{t}T" for t in ts)])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for c in sorted(cands, key=lambda c: c["ms"][ts[0]]):
        db = f"{c['psnr']:.2f}" if c["psnr"] is not None else "n/a"
        row = [c["model"], c["backend"], db] + [f"{c['ms'][t]:.1f}" for t in ts]
        row += [" / ".join(f"{c['cpu_ms'][t]:.0f}" for t in ts), " / ".join("yes" if c["front"][t] else "no" for t in ts)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"LR {env['size']}x{env['size']} x{SCALE}, batch 1; median of {env['rounds']} interleaved rounds "
                 f"({env['warmup']} warm-up); CPU ms = median time.process_time per call (all threads). "
                 f"{env['cpu']}; ISA {env['isa']} (1-bit kernel: {env['kernel']}); load average "
                 f"{env['load_start']} at start, {env['load_end']} at end; {env['date']}; torch {env['torch']}, "
                 f"onnxruntime {env['onnxruntime']}.")
    missing = [c["model"] for c in cands if c["psnr"] is None]
    if missing:
        lines.append(f"PSNR n/a: {', '.join(missing)} timed at random init (no checkpoint; pass --extra NAME=FILE).")
    return "\n".join(lines) + "\n"


def plot(cands: list[dict], env: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = env["threads"]
    fig, axes = plt.subplots(1, len(ts), figsize=(6.5 * len(ts), 7), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], ts):
        pts = [c for c in cands if c["psnr"] is not None]
        front = sorted((c for c in pts if c["front"][t]), key=lambda c: c["ms"][t])
        ax.step([c["ms"][t] for c in front], [c["psnr"] for c in front], where="post", color="tab:red", lw=1,
                alpha=0.6, label="Pareto front")
        for c in pts:
            on = c["front"][t]
            color = "tab:blue" if c["backend"] == "bitpack" else "tab:gray"
            ax.scatter(c["ms"][t], c["psnr"], s=45, marker="o" if on else "x", color=color, zorder=3)
            crowded = any(abs(o["psnr"] - c["psnr"]) < 0.1 and o["ms"][t] < c["ms"][t] for o in pts)
            right = c["ms"][t] == max(o["ms"][t] for o in cands)
            ax.annotate(f"{c['model']} ({c['backend']})", (c["ms"][t], c["psnr"]), fontsize=7,
                        xytext=(-4 if right else 4, -5 if crowded else 3), textcoords="offset points",
                        ha="right" if right else "left", va="top" if crowded else "baseline")
        for c in cands:
            if c["psnr"] is None:  # timed, no checkpoint: where it would sit on the latency axis
                ax.axvline(c["ms"][t], color="tab:gray", ls=":", lw=1)
                ax.annotate(f"{c['model']} (no PSNR)", (c["ms"][t], 0.02), xycoords=("data", "axes fraction"),
                            fontsize=7, rotation=90, xytext=(2, 0), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per LR {env['size']}x{env['size']} image, {t} thread{'s' if t > 1 else ''} (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}  (o on front, x dominated; blue = 1-bit on bitpack)",
                     fontsize=9)
    axes[0][0].set_ylabel(f"Set5 x{SCALE} PSNR (dB, Y)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Quality vs latency, x{SCALE}, one interleaved run, median of {env['rounds']} rounds — "
                 f"{env['cpu']}, {env['nproc']} CPUs; load average {env['load_start']} → {env['load_end']}; "
                 f"{env['date']}\nISA: {env['isa']}; 1-bit kernel: {env['kernel']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--size", type=int, default=256, help="LR height and width")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--out", default="pareto_out")
    p.add_argument("--quick", action="store_true", help="2 rounds, 1 warm-up (smoke test)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=FILE",
                   help="checkpoint for fsrcnn / espcn")
    p.add_argument("--only", default="", help="comma-separated model names to keep (smoke tests)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--bf16", choices=("auto", "off"), default="auto",
                   help="auto: add the float networks in bf16 where the CPU has native bf16 (AMX / AVX512-BF16)")
    a = p.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    rounds, warmup = (2, 1) if a.quick else (a.rounds, a.warmup)
    extra = dict(kv.split("=", 1) for kv in a.extra)
    load_start = [round(v, 2) for v in os.getloadavg()]
    bf16 = a.bf16 == "auto" and cpu_has_native_bf16()
    cands = candidates(threads, extra, a.data_dir, set(a.only.split(",")) if a.only else None, bf16=bf16)
    measure(cands, threads, a.size, rounds, warmup)
    import onnxruntime

    env = dict(size=a.size, threads=threads, rounds=rounds, warmup=warmup, cpu=cpu_name(), isa=isa_flags(),
               kernel=backends.bitpack_status()[1], load_start=load_start,
               load_end=[round(v, 2) for v in os.getloadavg()], nproc=os.cpu_count(),
               date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               torch=torch.__version__, onnxruntime=onnxruntime.__version__, bf16=bf16)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(cands, env)
    (out / "pareto.md").write_text(md)
    rows = [{k: v for k, v in c.items() if k not in ("fns", "net")} for c in cands]
    (out / "pareto.json").write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    plot(cands, env, out / "pareto.png")
    print(md, end="")
    print(f"wrote {out / 'pareto.md'}, {out / 'pareto.json'}, {out / 'pareto.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
