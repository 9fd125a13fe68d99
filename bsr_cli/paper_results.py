"""Published PSNR/SSIM rows that `bsr eval` prints beside its own numbers, labelled "paper".

``PAPER_RESULTS[(model, dataset, scale)] = (psnr_db, ssim)``, keys use bsr's model and canonical dataset names
(``bsr_cli.datasets``). Add rows with ``register_paper_result``; cite the table they come from in a comment.
"""
from __future__ import annotations

PAPER_RESULTS: dict[tuple[str, str, int], tuple[float, float]] = {}


def register_paper_result(model: str, dataset: str, scale: int, psnr: float, ssim: float) -> None:
    """Record one published (PSNR dB, SSIM) value, Y channel, crop = scale."""
    PAPER_RESULTS[(model, dataset, scale)] = (psnr, ssim)


def paper_result(model: str, dataset: str, scale: int) -> tuple[float, float] | None:
    """The published (PSNR, SSIM) for this model/dataset/scale, or None when unknown."""
    return PAPER_RESULTS.get((model, dataset, scale))


# Bicubic baseline: RCAN (ECCV'18) Table 3 / EDSR-lineage comparison tables, copied verbatim by many SR papers
# (see ../shared/notes/bnn-sr-reference-code.md §5). Manga109 x3 is omitted: not found verbatim.
_BICUBIC = {
    "Set5": {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    "Set14": {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
    "B100": {2: (29.56, 0.8431), 3: (27.21, 0.7385), 4: (25.96, 0.6675)},
    "Urban100": {2: (26.88, 0.8403), 3: (24.46, 0.7349), 4: (23.14, 0.6577)},
    "Manga109": {2: (30.80, 0.9339), 4: (24.89, 0.7866)},
}
for _dataset, _rows in _BICUBIC.items():
    for _scale, (_psnr, _ssim) in _rows.items():
        register_paper_result("bicubic", _dataset, _scale, _psnr, _ssim)
