"""`bsr profile`: Params / FLOPs / BOPs / OPs per EBSR Eq. 7, in total and per part (head, body, upsampler, tail)."""
from __future__ import annotations

import json
import re
from enum import Enum
from typing import List, Optional

import typer

from bsr_cli.backends import FLOAT_PRECISION_HELP, Backend, FloatPrecision
from bsr_cli.errors import BsrError


class Convention(str, Enum):
    """``--convention`` choices (bsr_cli.profiling.CONVENTIONS)."""

    flops = "flops"
    macs = "macs"

DEFAULT_MODELS = ("srresnet-fp", "e2fif", "bbcu-l", "ebsr-light", "scales")


def parse_size(text: str) -> tuple[int, int]:
    """'320x180' (width x height, as image sizes are written) -> (h, w) = (180, 320)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise BsrError(f"bad --input {text!r}: expected WIDTHxHEIGHT of the LR input, e.g. 128x128 or 320x180")
    return int(m.group(2)), int(m.group(1))


def profile_results(models: list[str], scale: int, input_hw: tuple[int, int], convention: str) -> list[dict]:
    """One Eq. 7 result dict per model (the `--json` rows). Extra measurements (e.g. latency) can be merged
    into these dicts by the caller."""
    from bsr_cli.models import create_model
    from bsr_cli.profiling import profile_model

    results = []
    for name in models:
        model = create_model(name, scale)
        res = profile_model(model, input_hw, convention)
        res["model"] = name
        results.append(res)
    return results


def render_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from bsr_cli.profiling import format_count

    if not results:
        return
    r0 = results[0]
    h, w = r0["input"]
    title = (f"Eq. 7 cost, x{r0['scale']}, LR input {w}x{h}, convention {r0['convention']} "
             f"({'FLOPs = 2 x MACs' if r0['convention'] == 'flops' else 'MACs counted once'}); "
             "OPs = FLOPs + BOPs/64, Params = P_fp + P_bi/32")
    table = Table(title=title, title_justify="left")
    for col in ("model", "part", "Params", "P_fp", "P_bi", "FLOPs", "BOPs", "OPs"):
        table.add_column(col, justify="left" if col in ("model", "part") else "right", no_wrap=True)
    for res in results:
        rows = [("total", res)] + list(res["parts"].items())
        for i, (part, v) in enumerate(rows):
            table.add_row(
                res["model"] if i == 0 else "",
                part,
                format_count(v["params"]),
                format_count(v["params_fp"]),
                format_count(v["params_bi"]),
                format_count(v["flops"]),
                format_count(v["bops"]),
                format_count(v["ops"]),
                style="bold" if i == 0 else None,
                end_section=(i == len(rows) - 1),
            )
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the numbers into 80 columns
        console = Console(width=max(console.width, 110))
    console.print(table)


def command(
    model: Optional[List[str]] = typer.Option(
        None, "--model", "-m", help=f"Model name (repeatable). Default: {', '.join(DEFAULT_MODELS)}."
    ),
    scale: int = typer.Option(4, "--scale", "-s", help="Upscaling factor (2, 3 or 4)."),
    input_size: str = typer.Option(
        "128x128", "--input", help="LR input WIDTHxHEIGHT (EBSR/SCALES: 128x128 at x4; BBCU: 320x180)."
    ),
    convention: Convention = typer.Option(
        "flops", "--convention", help="flops: FLOPs = 2 x MACs (EBSR/SCALES); macs: MACs once (BBCU)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {\"results\": [...]} JSON on stdout."),
    latency: bool = typer.Option(False, "--latency", help="Measure CPU latency instead of counting (median, p90; "
                                 "the FP twin srresnet-fp timed in the same run, interleaved). Default model: the "
                                 "manifest default for --scale."),
    backend: Optional[List[Backend]] = typer.Option(None, "--backend",
                                                help="Latency backend, repeatable. Default auto: bitpack (1-bit "
                                                "kernel) for binary-activation models, else the fastest fp32 path."),
    runs: int = typer.Option(20, "--runs", help="Timed runs per backend (after 3 warm-up runs)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and onnxruntime."),
    float_precision: FloatPrecision = typer.Option("fp32", "--float-precision",
                                                   help=FLOAT_PRECISION_HELP + " Latency rows only (default fp32)."),
) -> None:
    """Count parameters and operations of models per EBSR Eq. 7 by tracing one forward pass.

    OPs = FLOPs + BOPs/64 and Params = Params_fp + Params_bi/32, in total and per part (head, body, upsampler,
    tail). Example: bsr profile -m bbcu-l -m bbcu-m --input 320x180 --convention macs
    """
    convention = Convention(convention).value
    input_hw = parse_size(input_size)
    if latency:
        from bsr_cli import latency as lat

        if runs < 1:
            raise BsrError("--runs must be at least 1")
        if not model:
            from bsr_cli.weights import default_model

            model = [default_model(scale) or DEFAULT_MODELS[1]]
        from bsr_cli.progress import Progress

        reports = []
        for m in model:
            with Progress("bsr profile") as bar:
                task = bar.add(f"{m} x{scale} latency runs")
                reports.append(lat.measure(m, scale, tuple(Backend(b).value for b in backend or ["auto"]), input_hw,
                                           runs, 3, threads, progress=lambda done, total: bar.update(task, done, total),
                                           float_precision=FloatPrecision(float_precision).value))
        if as_json:
            print(json.dumps({"latency": reports}, indent=2))
        else:
            lat.render(reports)
        return
    results = profile_results(list(model or DEFAULT_MODELS), scale, input_hw, convention)
    if as_json:
        print(json.dumps({"results": results}, indent=2))
    else:
        render_table(results)
