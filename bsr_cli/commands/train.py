"""`bsr train`: train one model at one scale on a folder of HR images (see bsr_cli.train for the recipe)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from bsr_cli.errors import BsrError


def command(
    model: str = typer.Option(..., "--model", "-m", help="Model name (see `bsr models`)."),
    scale: int = typer.Option(4, "--scale", "-s", help="Upscaling factor."),
    train_dir: Optional[Path] = typer.Option(
        None, "--train-dir", help="Folder of HR training images (default: $BSR_TRAIN_DIR)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<model>-x<scale>/)."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Number of training iterations."),
    time_budget: Optional[str] = typer.Option(
        None, "--time-budget", help="Stop after this much training time: seconds or 90s, 30m, 1.5h."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Patches per batch."),
    patch_size: int = typer.Option(32, "--patch-size", help="LR patch size in pixels (HR patch = scale x this)."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak Adam learning rate."),
    beta2: float = typer.Option(0.99, "--beta2", help="Adam beta2 (E2FIF's official code uses 0.999)."),
    loss_range: float = typer.Option(
        255.0, "--loss-range", help="L1 on pixel values 0..N (255: EDSR/E2FIF's rgb_range; 1: on [0, 1])."
    ),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine (to 1% of --lr) or step (x0.5 at 50%, 75%)."),
    warmup: int = typer.Option(50, "--warmup", help="Linear lr warm-up iterations."),
    val_every: int = typer.Option(500, "--val-every", help="Validate on Set5 every N iterations (0: only at the end)."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Benchmark folder holding Set5/ (default: $BSR_DATA_DIR); skipped if absent."
    ),
    save_every: int = typer.Option(200, "--save-every", help="Write the resume state every N iterations."),
    log_every: int = typer.Option(50, "--log-every", help="Log a line every N iterations."),
    precision: str = typer.Option("auto", "--precision", help="auto (time fp32 vs bf16 at start), fp32 or bf16."),
    compile_mode: str = typer.Option("auto", "--compile", help="torch.compile the training step: auto (runs of >= 10 "
                                     "min or >= 2000 iterations; ~2x the it/s after ~30 s of compiling), on, off."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (init, patches, augmentation)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its saved state."),
    init_from: Optional[str] = typer.Option(
        None, "--init-from", help="Initialise from a checkpoint file or zoo name (the x4 one for x2, the FP twin "
        "srresnet-fp): copies tensors whose name and shape match; binary latents restored at a trainable magnitude."
    ),
    teacher: Optional[str] = typer.Option(
        None, "--teacher", help="Distil from an FP teacher (zoo name or checkpoint file at the same scale)."
    ),
    distill_weight: float = typer.Option(1.0, "--distill-weight", help="Weight of L1(student, teacher output)."),
    teacher_targets: str = typer.Option(
        "image", "--teacher-targets", help="image: the teacher's outputs on the whole training images, computed "
        "once, cropped like the HR patches (no teacher pass per step); patch: the teacher on every batch."
    ),
    fp_weight_iters: int = typer.Option(
        0, "--fp-weight-iters", help="Binary-activation-only warm-up: FP weights for the first N iterations (E2FIF)."
    ),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Use only the first N training images."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout."),
) -> None:
    """Train MODEL at SCALE: random LR/HR patches (MATLAB bicubic), L1, Adam, cosine/step lr, Set5 validation.

    Writes train.log, a resumable state and, at the end, packed final.safetensors and best.safetensors
    (best Set5 PSNR) into --out. SIGTERM / Ctrl-C save the state after the current step (exit 130).
    Several processes: torchrun --nproc-per-node N -m bsr_cli train ... (rank 0 validates and writes).
    """
    from bsr_cli.train import TrainConfig, parse_duration, train

    train_dir = train_dir or (Path(os.environ["BSR_TRAIN_DIR"]) if os.environ.get("BSR_TRAIN_DIR") else None)
    if train_dir is None:
        raise BsrError("no training data: pass --train-dir DIR or set BSR_TRAIN_DIR")
    data_dir = data_dir or (Path(os.environ["BSR_DATA_DIR"]) if os.environ.get("BSR_DATA_DIR") else None)
    _check_model(model)
    cfg = TrainConfig(
        model=model,
        scale=scale,
        train_dir=str(train_dir),
        out_dir=str(out or Path("runs") / f"{model}-x{scale}"),
        iters=iters,
        time_budget=parse_duration(time_budget),
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        beta2=beta2,
        loss_range=loss_range,
        schedule=schedule,
        warmup=warmup,
        val_every=val_every,
        data_dir=str(data_dir) if data_dir else None,
        save_every=save_every,
        log_every=log_every,
        precision=precision,
        compile=compile_mode,
        device=device,
        threads=threads,
        seed=seed,
        resume=resume,
        init_from=init_from,
        teacher=teacher,
        distill_weight=distill_weight,
        teacher_targets=teacher_targets,
        fp_weight_iters=fp_weight_iters,
        max_images=max_images,
    )
    summary = train(cfg)
    if as_json:
        print(json.dumps(summary, indent=2))


def _check_model(name: str) -> None:
    """BsrError for a model name the registry does not know."""
    from bsr_cli.models import list_models

    names = list_models()
    if name not in names:
        raise BsrError(f"unknown model {name!r}; known: {', '.join(names)}")
