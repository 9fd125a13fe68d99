"""`bsr upscale`: super-resolve image files, folders and globs with a 1-bit model."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from bsr_cli.backends import FLOAT_PRECISION_HELP, Backend, FloatPrecision
from bsr_cli.errors import BsrError


class Ext(str, Enum):
    """``--ext`` choices (bsr_cli.upscale.EXT_CHOICES, plus the jpeg spelling)."""

    auto = "auto"
    png = "png"
    jpg = "jpg"
    jpeg = "jpeg"
    webp = "webp"


class Alpha(str, Enum):
    """``--alpha`` choices (bsr_cli.upscale.ALPHA_CHOICES)."""

    bicubic = "bicubic"
    model = "model"

def command(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Image files, folders or glob patterns."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", rich_help_panel="Input/Output",
                                          help="Output folder (or a file name for a single input)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", rich_help_panel="Input/Output",
                                   help="Scan folders recursively; sub-folders are mirrored under -o."),
    suffix: Optional[str] = typer.Option(None, "--suffix", rich_help_panel="Input/Output",
                                         help="Added to the output stem (default: _x<scale>)."),
    ext: Ext = typer.Option("auto", "--ext", rich_help_panel="Input/Output", case_sensitive=False,
                            help="Output format; auto keeps the input's. Alpha never goes to JPEG (PNG instead)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", rich_help_panel="Input/Output",
                                       help="Skip inputs whose output exists (resume a batch)."),
    force: bool = typer.Option(False, "--force", rich_help_panel="Input/Output",
                               help="Overwrite existing outputs (inputs are never overwritten)."),
    json_out: bool = typer.Option(False, "--json", rich_help_panel="Input/Output",
                                  help="Print a JSON summary on stdout."),
    scale: int = typer.Option(4, "--scale", "-s", rich_help_panel="Model", help="Upscaling factor (2, 3 or 4)."),
    model_name: Optional[str] = typer.Option(None, "--model", "-m", "-n", rich_help_panel="Model",
                                             help="Model name (default: the manifest's default for --scale; `bsr models` lists them)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", rich_help_panel="Model",
                                              help="Local checkpoint (.safetensors, or .onnx with --backend onnx)."),
    alpha: Alpha = typer.Option("bicubic", "--alpha", rich_help_panel="Model",
                                help="How the alpha channel is upscaled (it is always kept); model costs 2x."),
    backend: Backend = typer.Option("auto", "--backend", rich_help_panel="Performance",
                                help="auto: bitpack (1-bit XNOR-popcount kernel) for binary-activation models, "
                                     "else the fastest measured fp32 path (onnxruntime)."),
    float_precision: FloatPrecision = typer.Option("auto", "--float-precision", rich_help_panel="Performance",
                                                   help=FLOAT_PRECISION_HELP),
    tile: int = typer.Option(0, "--tile", "-t", rich_help_panel="Performance",
                             help="Tile size in input pixels; 0 = automatic (bounded memory, one tile if it fits)."),
    tile_pad: Optional[int] = typer.Option(None, "--tile-pad", rich_help_panel="Performance",
                                           help="Context pixels around each tile (default: the model's receptive "
                                                "field + 10, so tiled == untiled)."),
    threads: Optional[int] = typer.Option(None, "--threads", rich_help_panel="Performance",
                                          help="CPU threads (default: all CPUs this process may use)."),
    reference: Optional[Path] = typer.Option(None, "--reference", rich_help_panel="Report",
                                             help="HR image (one input) or folder of HR images matched by file "
                                                  "stem: adds PSNR/SSIM as bsr eval computes them (Y, crop = scale)."),
    compare: Optional[Path] = typer.Option(None, "--compare", rich_help_panel="Report",
                                           help="Write DIR/<stem>_compare.png per image: bicubic | bsr | reference, "
                                                "with a zoomed crop where bsr differs most from bicubic."),
) -> None:
    """Upscale images with a binary (1-bit) SR model; alpha, 16-bit, gray, ICC and EXIF are kept.

    Outputs are written atomically; an existing output is an error for that file unless --force or
    --skip-existing; one bad file never stops the batch. Progress and the summary go to stderr, --json to stdout.
    Each image is reported with its Eq. 7 OPs and params at its size, the model's latency (ms, output megapixels/s)
    and, with --reference, PSNR/SSIM; the run with totals and means.

    [bold]Examples[/bold]: [cyan]bsr upscale photo.png[/cyan] writes photo_x4.png next to it;
    [cyan]bsr upscale photos/ -o big/ -r --skip-existing[/cyan] mirrors a folder tree and resumes;
    [cyan]bsr upscale "*.jpg" -o out/ --ext png[/cyan]. Without -o only files named one by one are allowed.

    [bold]Exit codes[/bold]: 0 every file done or skipped; 1 one or more files failed (each listed once);
    2 usage error; 3 the weights could not be downloaded (network, checksum, offline).
    """
    from bsr_cli import upscale as up

    ext, alpha = Ext(ext).value, Alpha(alpha).value
    if tile < 0:
        raise BsrError("--tile must be 0 (automatic) or a positive number of pixels")
    if force and skip_existing:
        raise BsrError("--force and --skip-existing contradict each other: pick one")
    settings = up.Settings(scale=scale, tile=tile, tile_pad=tile_pad, suffix=suffix, ext=ext.lower(),
                           alpha=alpha, skip_existing=skip_existing, force=force, compare=compare)

    out_dir = output if output is not None and output.suffix.lower() not in up.IMAGE_EXTS else None
    pairs, missing, notes = up.collect_inputs(inputs, recursive, exclude=out_dir)
    named = not any(Path(s).is_dir() or (up._is_glob(s) and not Path(s).exists()) for s in inputs)
    jobs = missing + up.plan_outputs(pairs, output, settings, named_one_by_one=named)
    if not jobs:
        raise BsrError("no image files found in the given inputs")

    if reference is not None:
        notes += up.match_references(reference, jobs)
    engine = up.load_engine(model_name, scale, checkpoint, Backend(backend).value, threads,
                            FloatPrecision(float_precision).value)
    costs: dict = {}

    def on_done(job) -> None:
        if job.status == "done" and job.input_size:
            job.cost = up.model_cost(engine.torch_model, job.input_size[1], job.input_size[0], costs)
        reporter.done(job)

    tiling_for, probe = up.make_tiling(engine.model, engine.torch_model, scale, tile, tile_pad)

    reporter = Reporter(quiet=json_out, total=len(jobs))
    reporter.header(engine, probe, settings)
    for note in notes:
        reporter.note(note)
    with reporter.live():
        up.run_batch(jobs, engine.model, settings, tiling_for,
                     on_start=reporter.start, on_tile=reporter.tile, on_done=on_done)
    counts = up.summary(jobs)
    total = up.totals(jobs)
    reporter.table(jobs, counts, total, engine)
    if json_out:
        doc = {
            "schema_version": 1,
            "command": "upscale",
            "model": engine.name,
            "scale": scale,
            "backend": engine.backend,
            "backend_reason": engine.reason,
            "threads": engine.threads,
            "checkpoint": engine.checkpoint,
            "checkpoint_sha256": engine.sha256,
            "weights": engine.source,
            "tile": tile,
            "tile_pad": tile_pad,
            "receptive_radius": probe.receptive_radius,
            "global_ops": probe.global_ops,
            "counts": counts,
            "total": total,
            "notes": notes,
            "files": [j.as_dict() for j in jobs],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    if counts.get("failed"):
        raise typer.Exit(code=1)


class Reporter:
    """Progress (overall + current file's tiles; ``bsr_cli.progress``) and the summary table on stderr, with rich.

    A bar on a terminal, periodic log lines with ETA otherwise, nothing with --json; the summary is printed in
    any case (plainly when stderr is not a terminal) because it lists each failure once.
    """

    MAX_ROWS = 50

    def __init__(self, quiet: bool, total: int):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.total = total
        from bsr_cli.progress import Progress

        self.progress = Progress("bsr upscale", enabled=not quiet)
        self.overall = self.progress.add("images", total=total)
        self.current = self.progress.add("tiles", total=1, visible=False)
        self.finished = 0

    def header(self, engine, probe, settings) -> None:
        if self.quiet:
            return
        pad = "auto" if settings.tile_pad is None else settings.tile_pad
        tile = "auto" if settings.tile == 0 else settings.tile
        glob = f"; global means: {', '.join(probe.global_ops)}" if probe.global_ops else ""
        self.console.print(
            f"bsr upscale: {engine.name} x{engine.scale}, weights {engine.source} "
            f"(sha256 {(engine.sha256 or '?')[:12]}); {engine.backend}: {engine.reason}; {engine.threads} threads; "
            f"tile {tile}, pad {pad} (receptive field {probe.receptive_radius:g} px{glob})", highlight=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"note: {text}", highlight=False, markup=False, soft_wrap=True)

    def live(self):
        return self.progress

    def start(self, job) -> None:
        self.progress.update(self.current, 0, total=1, label=job.input.name, visible=True)

    def tile(self, done: int, total: int) -> None:
        self.progress.update(self.current, done, total=total)
        self.progress.update(self.overall, self.finished + done / max(total, 1))

    def done(self, job) -> None:
        self.finished += 1
        self.progress.update(self.overall, self.finished)

    def table(self, jobs, counts: dict, total: dict | None = None, engine=None) -> None:
        from rich.table import Table

        from bsr_cli.profiling import format_count

        total = total or {}
        shown = jobs if len(jobs) <= self.MAX_ROWS else [j for j in jobs if j.status != "done"]
        scored = bool(total.get("scored"))

        def metrics(j) -> list[str]:
            if j.status != "done" or j.latency_ms is None:
                return ["", "", "", ""] + (["", ""] if scored else [])
            row = [f"{j.latency_ms:.0f}", f"{j.megapixels_per_s:.3f}",
                   format_count(j.cost.get("ops", 0) * j.model_passes) if j.cost else "",
                   format_count(j.cost.get("params", 0)) if j.cost else ""]
            if scored:
                row += [f"{j.psnr:.2f}" if j.psnr is not None else "-", f"{j.ssim:.4f}" if j.ssim is not None else "-"]
            return row

        def total_line() -> str:
            if not total.get("images"):
                return ""
            line = (f"total: {total['images']} images, {total['latency_ms']:.0f} ms, "
                    f"{total['megapixels_per_s']:.3f} MP/s, {format_count(total['ops'])} OPs (Eq. 7)")
            if scored:
                line += f"; mean PSNR {total['psnr_mean']:.2f} dB, SSIM {total['ssim_mean']:.4f} over {total['scored']}"
            if engine is not None:
                line += f"; {engine.name} x{engine.scale} on {engine.backend}, {engine.threads} threads"
            return line

        if self.quiet or not self.console.is_terminal:
            # --json (stdout has everything) or a log file: plain lines, each failure named once
            for j in jobs:
                if j.status == "failed" or not self.quiet:
                    what = j.reason if j.status != "done" else f"-> {j.output}"
                    m = metrics(j)
                    if j.status == "done" and m[0]:
                        what += (f" [{m[0]} ms, {m[1]} MP/s, {m[2]} OPs, {m[3]} params"
                                 + (f", PSNR {m[4]} SSIM {m[5]}" if scored else "") + "]")
                    notes = f" ({'; '.join(j.notes)})" if j.notes else ""
                    self.console.print(f"{j.status}: {j.input}: {what}{notes}", highlight=False, markup=False,
                                       soft_wrap=True)
            if not self.quiet:
                if total_line():
                    self.console.print(total_line(), highlight=False, soft_wrap=True)
                self.console.print(f"{counts.get('done', 0)} done, {counts.get('skipped', 0)} skipped, "
                                   f"{counts.get('failed', 0)} failed", highlight=False)
            return
        table = Table(title="bsr upscale", title_justify="left")
        cols = ["status", "input", "size", "output / reason", "ms", "MP/s", "OPs", "params"]
        cols += ["PSNR", "SSIM"] if scored else []
        for col in cols:
            table.add_column(col, overflow="fold", justify="right" if col in ("ms", "MP/s", "OPs", "params",
                                                                               "PSNR", "SSIM") else "left")
        style = {"done": "green", "skipped": "yellow", "failed": "red"}
        for j in shown:
            size = ""
            if j.input_size and j.output_size:
                size = f"{j.input_size[0]}x{j.input_size[1]} -> {j.output_size[0]}x{j.output_size[1]}"
            what = str(j.output) if j.status == "done" else j.reason
            if j.notes:
                what += " (" + "; ".join(j.notes) + ")"
            table.add_row(f"[{style.get(j.status, '')}]{j.status}[/]", str(j.input), size, what, *metrics(j))
        if shown:
            self.console.print(table)
        if total_line():
            self.console.print(total_line(), highlight=False, soft_wrap=True)
        self.console.print(f"{counts.get('done', 0)} done, {counts.get('skipped', 0)} skipped, "
                           f"{counts.get('failed', 0)} failed", highlight=False)
