#!/usr/bin/env python
"""Print the README's pretrained-checkpoint table: bsr-measured PSNR/SSIM of every manifest entry (as
`bsr eval` measured them, stored by scripts/add_to_manifest.py) beside the paper-reported numbers.

    python scripts/results_table.py > /tmp/table.md
"""
from __future__ import annotations

from bsr_cli import weights
from bsr_cli.paper_results import PAPER_MODEL_ROWS, paper_result

DATASETS = ("Set5", "Set14", "B100", "Urban100")


def cell(pair) -> str:
    return "—" if pair is None else f"{pair[0]:.2f} / {pair[1]:.4f}"


def main() -> None:
    rows = sorted(weights.entries(), key=lambda e: (-int(e["scale"]), e["model"]))
    default = {s: weights.default_model(s) for s in {int(e["scale"]) for e in rows}}
    print("| checkpoint | budget (iterations) | " + " | ".join(f"{d} bsr | {d} paper" for d in DATASETS) + " |")
    print("|---|---|" + "---|---|" * len(DATASETS))
    for e in rows:
        rec = e.get("recipe", {})
        iters = rec.get("total_iterations", rec.get("iterations", "?"))
        name = e["name"] + (" (default)" if default.get(int(e["scale"])) == e["model"] else "")
        cells = []
        for d in DATASETS:
            m = e.get("metrics", {}).get(d)
            cells.append(cell(None if m is None else (m["psnr"], m["ssim"])))
            cells.append(cell(paper_result(e["model"], d, int(e["scale"]))))
        print(f"| `{name}` | {iters} | " + " | ".join(cells) + " |")
    sources = sorted({PAPER_MODEL_ROWS[(e["model"], int(e["scale"]))][1] for e in rows
                      if (e["model"], int(e["scale"])) in PAPER_MODEL_ROWS})
    print("\nPaper numbers (labelled \"paper\"): " + "; ".join(sources) + ".")


if __name__ == "__main__":
    main()
