"""`bsr models`: the model registry (name, paper, family, what is binarized, scales), optionally with cost."""
from __future__ import annotations

import json

import typer


def model_rows(with_cost: bool = False, scale: int = 4, input_hw=(128, 128)) -> list[dict]:
    """One dict per registered model. This is the seam where the weights manifest (which checkpoints exist)
    is joined in: callers add keys to these rows."""
    from bsr_cli.models import get_model_info, list_models

    rows = []
    for name in list_models():
        info = get_model_info(name)
        row = {
            "name": name,
            "paper": info.paper,
            "family": info.family,
            "binarized": info.binarized,
            "scales": list(info.scales),
            "description": info.description,
        }
        if with_cost and scale in info.scales:
            from bsr_cli.bitpack.backend import kernel_coverage
            from bsr_cli.models import create_model
            from bsr_cli.profiling import profile_model

            net = create_model(name, scale)
            res = profile_model(net, input_hw, "flops")
            row.update({"params": res["params"], "ops": res["ops"], "cost_at": f"x{scale} {input_hw[1]}x{input_hw[0]}",
                        "bitpack": kernel_coverage(net)})
        rows.append(row)
    return join_weights(rows)


def join_weights(rows: list[dict]) -> list[dict]:
    """Add `weights` to each row: its manifest checkpoints [{name, scale, default, bundled, metrics}]
    (`default`: the model `bsr upscale`/`bsr eval` use at that scale when none is given)."""
    from bsr_cli.weights import pretrained_summary

    pretrained = pretrained_summary()
    for row in rows:
        row["weights"] = pretrained.get(row["name"], [])
    return rows


def _weights_cell(checkpoints: list[dict]) -> str:
    """'x4: 31.20 / 25.10 dB (default)' per checkpoint (Set5 / Urban100 PSNR), '-' when there are none."""
    def psnr(ck, ds):
        value = (ck["metrics"].get(ds) or {}).get("psnr")
        return f"{value:.2f}" if value is not None else "?"

    lines = [f"x{ck['scale']}: {psnr(ck, 'Set5')} / {psnr(ck, 'Urban100')} dB" + (" (default)" if ck["default"] else "")
             for ck in checkpoints]
    return "\n".join(lines) or "-"


def command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout."),
    cost: bool = typer.Option(False, "--cost", help="Add Params/OPs (Eq. 7, x4, LR 128x128) and what the 1-bit kernel "
                              "runs of each model; takes a few seconds."),
) -> None:
    """List the registered models: name, paper, family, which parts are 1-bit, supported scales, and their
    pretrained weights per scale (Set5 / Urban100 PSNR from the manifest; "default" = used when no --model)."""
    rows = model_rows(with_cost=cost)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from bsr_cli.profiling import format_count

    table = Table(title="bsr models" + (" (Params/OPs: Eq. 7, x4, LR 128x128, FLOPs = 2 x MACs)" if cost else ""))
    cols = (["name", "paper", "binarized", "scales"] + (["Params", "OPs", "1-bit kernel (bitpack)"] if cost else [])
            + ["weights: Set5 / Urban100"])
    for c in cols:
        table.add_column(c, no_wrap=(c in ("name", "scales", "Params", "OPs")),
                         justify="right" if c in ("Params", "OPs") else "left")
    for r in rows:
        vals = [r["name"], r["paper"], r["binarized"], ",".join(f"x{s}" for s in r["scales"])]
        if cost:
            vals += [format_count(r["params"]) if "params" in r else "-", format_count(r["ops"]) if "ops" in r else "-",
                     r["bitpack"]["summary"] if "bitpack" in r else "-"]
        vals.append(_weights_cell(r["weights"]))
        table.add_row(*vals)
    Console().print(table)
