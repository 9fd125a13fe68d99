"""`bsr eval`: PSNR/SSIM of models on the SR benchmarks under the papers' protocol, beside the published values."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from bsr_cli.backends import FLOAT_PRECISION_HELP, Backend, FloatPrecision
from bsr_cli.errors import BsrError
from bsr_cli.paper_results import paper_result

DEFAULT_DATASETS = ("Set5", "Set14", "B100", "Urban100")
PROTOCOL_LINE = (
    "protocol: HR modcrop(scale); LR = MATLAB bicubic imresize (antialiased) rounded to uint8; SR clamped and "
    "rounded to uint8; PSNR/SSIM on Y (BT.601, 16-235, Y rounded; gray images on raw values), "
    "crop = scale px per side; SSIM 11x11 Gaussian sigma 1.5"
)


def command(
    model: Optional[List[str]] = typer.Option(
        None, "--model", "-m", help="Model name (repeatable). 'bicubic' needs no weights. "
        "Default: the manifest's default model for the scale, else bicubic."
    ),
    dataset: Optional[List[str]] = typer.Option(
        None, "--dataset", "-d", help="Set5, Set14, B100 (BSD100), Urban100, Manga109, DIV2K-val (repeatable). "
        "Default: Set5, Set14, B100, Urban100."
    ),
    scale: int = typer.Option(4, "--scale", "-s", help="Upscaling factor: 2, 3 or 4."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Folder with <Name>/ subfolders of HR images (else $BSR_DATA_DIR, else the cache "
        "or a download)."
    ),
    save_images: Optional[Path] = typer.Option(
        None, "--save-images", help="Write SR images to DIR/<model>/<dataset>/x<scale>/."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout instead of a table."),
    backend: Backend = typer.Option("auto", "--backend",
                                help="auto: bitpack (1-bit kernel) for binary-activation models, else the fastest "
                                     "measured fp32 path."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all CPUs this process "
                                          "may use)."),
    float_precision: FloatPrecision = typer.Option("fp32", "--float-precision",
                                                   help=FLOAT_PRECISION_HELP + " Default fp32: the protocol's numbers."),
) -> None:
    """Score models on SR benchmarks (PSNR/SSIM, Y channel, crop = scale) beside the paper-reported values."""
    from bsr_cli.evaluate import check_scale, default_model_name, evaluate, load_sr_function  # torch: only when run

    check_scale(scale)
    backend = Backend(backend).value
    models = list(model) if model else [default_model_name(scale)]
    datasets = list(dataset) if dataset else list(DEFAULT_DATASETS)
    from bsr_cli.datasets import get_dataset
    from bsr_cli.progress import Progress

    datasets = [get_dataset(d).name for d in datasets]  # unknown names fail before any work

    results = []
    for name in models:
        sr_fn = load_sr_function(name, scale, backend, threads, FloatPrecision(float_precision).value)
        for ds in datasets:
            with Progress("bsr eval") as bar:
                task = bar.add(f"{name} {ds} x{scale}")
                res = evaluate(name, ds, scale, data_dir=data_dir, save_images=save_images,
                               progress=lambda done, total, _path: bar.update(task, done, total),
                               backend=backend, sr_fn=sr_fn)
            paper = paper_result(name, res["dataset"], scale)
            if paper is not None:
                res["paper"] = {"psnr": paper[0], "ssim": paper[1]}
            results.append(res)

    if as_json:
        print(json.dumps({"results": results}, indent=2))
    else:
        _print_table(results, scale)
    failures = [f for res in results for f in res["failures"]]
    if failures:
        seen = set()
        for f in failures:
            line = f["error"] if f["path"] in f["error"] else f"{f['path']}: {f['error']}"
            if line not in seen:
                seen.add(line)
                print(f"bsr: failed: {line}", file=sys.stderr)
        raise typer.Exit(code=1)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _backend_cell(run: dict) -> str:
    """'bitpack (auto, 2 thr)': the backend that ran, whether auto chose it, the threads."""
    why = "auto" if str(run.get("backend_reason", "")).startswith("auto") else ""
    thr = f"{run['threads']} thr" if run.get("threads") else ""
    extra = ", ".join(x for x in (why, thr) if x)
    return f"{run.get('backend', '-')}" + (f" ({extra})" if extra else "")


def _print_table(results: list[dict], scale: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bsr eval x{scale}")
    for col in ("model", "backend", "dataset", "PSNR", "SSIM", "paper PSNR", "paper SSIM", "images", "seconds"):
        table.add_column(col, justify="left" if col in ("model", "backend", "dataset") else "right")
    for res in results:
        paper = res.get("paper") or {}
        images = str(res["images"]) + (f" ({len(res['failures'])} failed)" if res["failures"] else "")
        table.add_row(
            res["model"], _backend_cell(res.get("run") or {}), res["dataset"], _fmt(res["psnr"], 2), _fmt(res["ssim"], 4),
            _fmt(paper.get("psnr"), 2), _fmt(paper.get("ssim"), 4), images, f"{res['seconds']:.1f}",
        )
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(PROTOCOL_LINE, soft_wrap=True)
