#!/usr/bin/env python
"""Print the README's pretrained-checkpoint table: bsr-measured PSNR/SSIM of every manifest entry (as
`bsr eval` measured them, stored by scripts/add_to_manifest.py) beside the paper-reported numbers.

    python scripts/results_table.py > /tmp/table.md
    python scripts/results_table.py --write-readme     # replace the table (and its sources line) in README.md
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

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


def write_readme(path: Path) -> None:
    """Replace README's table: from its header row through the "Paper numbers" line(s) after it."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main()
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| checkpoint | budget"))
    end = start
    while end < len(lines) and (lines[end].startswith("|") or not lines[end].strip()
                                or lines[end].startswith("Paper numbers")):
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    path.write_text("\n".join(lines[:start] + buf.getvalue().rstrip("\n").splitlines() + lines[end:]) + "\n")


if __name__ == "__main__":
    if "--write-readme" in sys.argv[1:]:
        write_readme(Path(__file__).resolve().parents[1] / "README.md")
    else:
        main()
