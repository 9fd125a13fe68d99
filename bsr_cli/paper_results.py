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
# (e.g. RCAN Table 3, EDSR Table 2). Manga109 x3 is omitted: not found verbatim.
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


# Published rows of the seed methods (Y channel, crop = scale). Each paper trained on DIV2K (800 images) for
# hundreds of thousands of iterations; bsr's own checkpoints are trained far shorter on BSD400, so the gap
# between bsr's numbers and these is expected and shown, not hidden.
# (model, scale): ({dataset: (psnr, ssim)}, source table)
PAPER_MODEL_ROWS: dict[tuple[str, int], tuple[dict[str, tuple[float, float]], str]] = {
    ("srresnet-fp", 4): ({"Set5": (31.76, 0.888), "Set14": (28.25, 0.773), "B100": (27.38, 0.727),
                          "Urban100": (25.54, 0.767)}, "EBSR Table 6 / SCALES Table III (SRResNet-FP)"),
    ("srresnet-fp", 2): ({"Set5": (37.76, 0.958), "Set14": (33.27, 0.914), "B100": (31.95, 0.895),
                          "Urban100": (31.28, 0.919)}, "EBSR Table 6 (SRResNet-fp)"),
    ("srresnet-fp", 3): ({"Set5": (34.07, 0.922), "Set14": (30.04, 0.835), "B100": (28.91, 0.798),
                          "Urban100": (27.50, 0.837)}, "EBSR Table 6 (SRResNet-fp)"),
    ("e2fif", 4): ({"Set5": (31.33, 0.880), "Set14": (27.93, 0.766), "B100": (27.20, 0.723),
                    "Urban100": (25.08, 0.750)}, "EBSR Table 6 (SRResNet-E2FIF)"),
    ("e2fif", 3): ({"Set5": (33.65, 0.920), "Set14": (29.67, 0.830), "B100": (28.72, 0.795),
                    "Urban100": (27.01, 0.825)}, "EBSR Table 6 (SRResNet-E2FIF)"),
    ("e2fif", 2): ({"Set5": (37.50, 0.958), "Set14": (32.96, 0.911), "B100": (31.79, 0.894),
                    "Urban100": (30.73, 0.913)}, "EBSR Table 6 (SRResNet-E2FIF)"),
    ("ebsr-light", 4): ({"Set5": (31.64, 0.885), "Set14": (28.22, 0.772), "B100": (27.30, 0.727),
                         "Urban100": (25.36, 0.761)}, "EBSR Table 6"),
    ("ebsr-light", 3): ({"Set5": (33.89, 0.921), "Set14": (29.95, 0.834), "B100": (28.82, 0.797),
                         "Urban100": (27.33, 0.833)}, "EBSR Table 6"),
    ("ebsr-light", 2): ({"Set5": (37.64, 0.958), "Set14": (33.16, 0.913), "B100": (31.88, 0.895),
                         "Urban100": (31.11, 0.917)}, "EBSR Table 6"),
    ("ebsr", 2): ({"Set5": (37.99, 0.959), "Set14": (33.52, 0.916), "B100": (32.10, 0.898),
                   "Urban100": (31.96, 0.926)}, "EBSR Table 7"),
    ("ebsr", 3): ({"Set5": (34.36, 0.925), "Set14": (30.28, 0.840), "B100": (29.04, 0.803),
                   "Urban100": (28.06, 0.849)}, "EBSR Table 7"),
    ("scales", 4): ({"Set5": (31.54, 0.883), "Set14": (28.15, 0.770), "B100": (27.28, 0.726),
                     "Urban100": (25.27, 0.757)}, "SCALES Table III (SRResNet-SCALES)"),
    ("scales", 2): ({"Set5": (37.56, 0.958), "Set14": (33.10, 0.912), "B100": (31.83, 0.895),
                     "Urban100": (30.95, 0.915)}, "SCALES Table III (SRResNet-SCALES)"),
    ("bbcu-l", 4): ({"Set5": (31.79, 0.8905), "Set14": (28.38, 0.7762), "B100": (27.41, 0.7303),
                     "Urban100": (25.62, 0.7696)}, "BBCU Table 1"),
    ("bbcu-l", 2): ({"Set5": (37.58, 0.9590), "Set14": (33.18, 0.9143), "B100": (31.91, 0.8962),
                     "Urban100": (31.12, 0.9179)}, "BBCU Table 1"),
    ("bbcu-m", 4): ({"Set5": (31.54, 0.8862), "Set14": (28.20, 0.7718), "B100": (27.31, 0.7263),
                     "Urban100": (25.35, 0.7602)}, "BBCU Table 1"),
    ("bbcu-m", 2): ({"Set5": (37.44, 0.9584), "Set14": (33.04, 0.9127), "B100": (31.81, 0.8946),
                     "Urban100": (30.84, 0.9149)}, "BBCU Table 1"),
    ("ebsr-baseline", 4): ({"Set5": (31.301, 0.880), "Urban100": (25.093, 0.751)},
                           "EBSR Table 2 (strong baseline; Set5 and Urban100 only)"),
    ("ebsr-sq", 4): ({"Set5": (31.59, 0.884), "Urban100": (25.33, 0.759)},
                     "EBSR Table 4 (EBSR-SQ W4A4; Set5 and Urban100 only)"),
    ("scales-c40", 4): ({"Set14": (28.02, 0.767), "B100": (27.18, 0.722)},
                        "SCALES Table VI (SCALES chl=40; Set14 and B100 only)"),
    ("ma2019-bwn", 4): ({"Set5": (30.34, 0.864), "Set14": (27.16, 0.756), "Urban100": (24.48, 0.728)},
                        "Ma et al. 2019 Table 1 (SRResNet Binary; no B100 reported)"),
    ("ma2019-bwn", 2): ({"Set5": (35.66, 0.946), "Set14": (31.56, 0.897), "Urban100": (28.76, 0.882)},
                        "Ma et al. 2019 Table 1 (SRResNet Binary; no B100 reported)"),
    ("abnn-both-spatial-se", 2): ({"Set5": (37.68, 0.976), "Set14": (33.17, 0.964), "B100": (31.91, 0.978),
                                   "Urban100": (31.08, 0.908)},
                                  "BNN-SR-attention Table 1 (EDSR backbone, x2; SSIM column as printed)"),
    ("scales-swinir", 4): ({"Set5": (29.96, 0.849), "Set14": (27.13, 0.743), "B100": (26.67, 0.704),
                            "Urban100": (24.06, 0.704)}, "SCALES Table IV (SwinIR-SCALES)"),
    ("scales-swinir", 2): ({"Set5": (36.97, 0.956), "Set14": (32.53, 0.908), "B100": (31.39, 0.889),
                            "Urban100": (29.56, 0.897)}, "SCALES Table IV (SwinIR-SCALES)"),
    ("bibert-swinir", 4): ({"Set5": (29.52, 0.835), "Set14": (26.80, 0.734), "B100": (26.50, 0.697),
                            "Urban100": (23.77, 0.690)}, "SCALES Table IV (SwinIR-BiBERT)"),
    ("bibert-swinir", 2): ({"Set5": (35.58, 0.947), "Set14": (31.79, 0.900), "B100": (30.80, 0.880),
                            "Urban100": (28.34, 0.877)}, "SCALES Table IV (SwinIR-BiBERT)"),
    # FSRCNN (Dong et al. 2016, Y channel, trained on T91 + General-100) as tabulated by CARN (Ahn et al. 2018,
    # Table 2) and IMDN (Hui et al. 2019, Table 3): the floor issue #12 sets for every 1-bit checkpoint.
    ("fsrcnn", 4): ({"Set5": (30.71, 0.8657), "Set14": (27.59, 0.7535), "B100": (26.98, 0.7150),
                     "Urban100": (24.62, 0.7280)}, "CARN Table 2 / IMDN Table 3 (FSRCNN)"),
    ("fsrcnn", 3): ({"Set5": (33.18, 0.9140), "Set14": (29.37, 0.8240), "B100": (28.53, 0.7910),
                     "Urban100": (26.43, 0.8080)}, "CARN Table 2 / IMDN Table 3 (FSRCNN)"),
    ("fsrcnn", 2): ({"Set5": (37.00, 0.9558), "Set14": (32.63, 0.9088), "B100": (31.53, 0.8920),
                     "Urban100": (29.88, 0.9020)}, "CARN Table 2 / IMDN Table 3 (FSRCNN)"),
}
for (_model, _scale), (_rows, _source) in PAPER_MODEL_ROWS.items():
    for _dataset, (_psnr, _ssim) in _rows.items():
        register_paper_result(_model, _dataset, _scale, _psnr, _ssim)
