"""How much does each shipped checkpoint's body contribute? Set5 PSNR with the trained body, and with the body
replaced by zeros (the output is then FP head -> global skip -> FP upsampler/tail). A body that costs little
when removed has not learnt much yet (README, "Why abnn-both-spatial-se is flat").

    python benchmarks/body_contribution.py [NAME ...] [--dataset Set5] [--data-dir ../shared/datasets/benchmark]

Also prints, for BNN-SR-attention models, the range of the SE maps' means on a 64x64 crop of the dataset's first
image (an SE map on the
residual branch near 0.5 halves the FP stream at each unit). Not a test: a few seconds per checkpoint.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from bsr_cli import weights
from bsr_cli.datasets import resolve_dataset
from bsr_cli.evaluate import evaluate, load_hr, model_sr
from bsr_cli.nn.attention import SEAttention

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "benchmark"


class ZeroBody(nn.Module):
    """Stands in for a trained body: returns zeros, so SRNet's global skip passes the head's features on."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(h)


def se_map_means(model: nn.Module, lr: torch.Tensor) -> list[float]:
    """Mean value of every SE attention map of ``model`` on one LR input."""
    means: list[float] = []
    hooks = [m.fc2.register_forward_hook(lambda _m, _i, out: means.append(torch.sigmoid(out).mean().item()))
             for m in model.modules() if isinstance(m, SEAttention)]
    with torch.no_grad():
        model(lr)
    for h in hooks:
        h.remove()
    return means


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="manifest entries (default: every x4 entry)")
    p.add_argument("--dataset", default="Set5")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    entries = [e for e in weights.entries() if (e["name"] in a.names if a.names else int(e["scale"]) == 4)]
    first = resolve_dataset(a.dataset, a.data_dir)[0]
    crop = torch.from_numpy(load_hr(first)[:64, :64].astype("float32") / 255).permute(2, 0, 1)[None]
    print(f"| checkpoint | {a.dataset} PSNR | body zeroed | body's share (dB) |")
    print("|---|---|---|---|")
    for e in entries:
        scale = int(e["scale"])
        model = weights.load_model(e["name"])
        full = evaluate(e["model"], a.dataset, scale, data_dir=a.data_dir, sr_fn=model_sr(model, scale))["psnr"]
        means = se_map_means(model, crop)
        model.body = ZeroBody()
        zeroed = evaluate(e["model"], a.dataset, scale, data_dir=a.data_dir, sr_fn=model_sr(model, scale))["psnr"]
        print(f"| `{e['name']}` | {full:.2f} | {zeroed:.2f} | {full - zeroed:.2f} |")
        if means:
            print(f"|   SE map means ({len(means)}) | {min(means):.2f}–{max(means):.2f} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
