"""`bsr export --onnx`: a verified ONNX file with dynamic height/width (optionally 1-bit packed weights)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from bsr_cli.errors import BsrError


def command(
    onnx_: bool = typer.Option(False, "--onnx", help="Export to ONNX (the only format for now)."),
    model_name: Optional[str] = typer.Option(None, "--model", "-m", "-n",
                                             help="Model name (default: the manifest's default for --scale)."),
    scale: int = typer.Option(4, "--scale", "-s", help="Upscaling factor."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local packed checkpoint (.safetensors)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output file (default: <model>_x<scale>[_packed].onnx)."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (>= 11)."),
    packed: bool = typer.Option(False, "--packed",
                                help="Store binary weights as bits (uint8) unpacked by graph ops: ~Eq. 7 params x 4 B."),
    tolerance: float = typer.Option(1e-4, "--tolerance",
                                    help="Max abs difference to PyTorch (outputs in [0, 1]) that verification accepts."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for export and verification."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report on stdout."),
) -> None:
    """Export a model to ONNX, check it (onnx.checker) and verify it against PyTorch with onnxruntime.

    Verification runs two input sizes, one odd (37x53), and prints the max abs difference. It passes when that
    is <= --tolerance, or when larger differences are binary-activation ties only (the 8-bit image differs in
    <= 1 % of its values, by <= 2 levels: a sign whose input sits within float rounding of its threshold may
    flip between runtimes). Otherwise nothing is written and the exit code is 1.
    The file records model, scale, bsr version and checkpoint sha256 in its metadata.
    """
    from rich.console import Console

    from bsr_cli import backends
    from bsr_cli import export_onnx as ex

    if not onnx_:
        raise BsrError("choose a format: --onnx")
    if opset < 11:
        raise BsrError("--opset must be at least 11 (DepthToSpace CRD, BitShift)")
    # resolution (manifest default, --checkpoint metadata, sha256) is bsr_cli.backends'; ONNX is built from fp32 torch
    loaded = backends.load(model_name, scale, checkpoint, backend="torch", threads=threads)
    name, net, sha = loaded.name, loaded.model, loaded.sha256
    out = output or Path(f"{name}_x{scale}{'_packed' if packed else ''}.onnx")
    if out.exists() and not force:
        raise BsrError(f"{out} exists: pass --force to overwrite it")
    console = Console(stderr=True)
    report, data = ex.export_onnx(net, None, name, scale, opset=opset, packed=packed, checkpoint_sha256=sha,
                                  threads=threads)
    ok, why = report.verdict(tolerance)
    if ok:
        ex._atomic_write(out, data)
        report.path = str(out)
    if json_out:
        doc = {"schema_version": 1, "command": "export", "ok": ok, "tolerance": tolerance, **report.__dict__}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        diffs = ", ".join(f"{k}: {v:.2e}" for k, v in report.max_abs_diff.items())
        kind = (f"packed ({report.pack_info.get('packed', 0)} binary convs as bits, "
                f"{report.pack_info.get('float', 0)} kept float)" if packed else "float32 weights")
        console.print(f"{name} x{scale}: opset {opset}, {kind}, {report.bytes:,} bytes", highlight=False)
        console.print(f"onnx.checker: ok; onnxruntime vs PyTorch max abs diff ({diffs}): "
                      f"{'verified' if ok else 'FAILED'}, {why}", highlight=False)
    if not ok:
        console.print(f"bsr: error: verification failed ({why}); nothing written", highlight=False)
        raise typer.Exit(code=1)
    if not json_out:
        console.print(f"wrote {out}", highlight=False)
