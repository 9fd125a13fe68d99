"""Training loop for bsr models: patch sampling, L1 + Adam, lr schedule, Set5 validation, resume, packing.

The recipe, step by step:

* **Data.** Every HR image of ``--train-dir`` is decoded once into memory, modcropped to a multiple of the
  scale, and its LR is made ONCE with the protocol's MATLAB bicubic, rounded to uint8 exactly like the
  benchmark LR files (``protocol.bicubic_downscale_uint8``). Training batches are random aligned patch pairs:
  an LR patch of ``patch_size`` pixels at (y, x) and the HR patch of ``scale * patch_size`` pixels at
  (scale*y, scale*x), with the same random flip / 90-degree rotation applied to both.
* **Loss and optimiser.** L1 on pixel values 0..255 (``loss_range``, as EDSR/E2FIF's official code with
  ``rgb_range=255``; logged in [0, 1] units), Adam (betas 0.9/``beta2``). Adam is invariant to the loss scale
  except for its eps (1e-8): on [0, 1] the per-element latent gradients of bbcu-l at init average 7e-10, so
  Adam's update is ~15x damped; on 0..255 they are 255x larger and every binary conv of the zoo clears eps. The lr follows ``cosine`` (from ``lr`` down
  to 1 % of it) or ``step`` (halved at 50 % and 75 % of the run), after a short linear warm-up. Progress is
  measured in iterations (``--iters``), or in seconds when only ``--time-budget`` is given; with both, the run
  stops at whichever comes first.
* **Precision.** ``auto`` uses bf16 autocast + channels_last on a CPU with native bf16 (AMX / AVX512-BF16)
  when a short timing of both modes at start says it is faster (>= 10 %), fp32 otherwise; CUDA when present.
  Validation and the saved weights are always fp32.
* **Validation.** Every ``val_every`` iterations: PSNR on Y of Set5 (protocol chain, fp32, eval mode). The
  best weights are kept.
* **Files** in the run dir: ``train.log``; ``state.safetensors`` (resume state: model, Adam moments, step,
  elapsed time, RNG, best PSNR; one file written atomically, no pickle); ``best.weights.safetensors`` (raw fp32
  weights of the best validation); at the end the packed checkpoints ``final.safetensors`` and
  ``best.safetensors`` (``bsr_cli.checkpoint.save_checkpoint``) and ``summary.json``.
"""
from __future__ import annotations

import copy
import json
import math
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file

from bsr_cli import train_dist
from bsr_cli.cpu import cpu_has_native_bf16  # noqa: F401  (used here and by benchmarks)
from bsr_cli.errors import BsrError
from bsr_cli.train_data import IMAGE_EXTS, PatchSampler, list_images, load_rgb_uint8, make_pair, to_tensor
from bsr_cli.train_state import (
    BEST_WEIGHTS_FILE,
    STATE_FILE,
    _atomic_save,
    _group_names,
    binary_signs,
    flip_fraction,
    init_from_checkpoint,
    init_optimizer_from_state,
    is_train_state,
    load_state,
    model_tensors,
    read_state_info,
    save_state,
)

ADAM_BETAS = (0.9, 0.99)
__all__ = ["TrainConfig", "train", "TrainingRun", "PatchSampler", "make_pair", "load_rgb_uint8", "list_images",
           "read_state_info", "STATE_FILE", "train_step", "pixel_l1", "lr_at", "parse_duration"]
MIN_LR_RATIO = 0.01  # cosine decays to 1 % of the base lr
STEP_MILESTONES = (0.5, 0.75)  # step schedule: lr x0.5 at these fractions of the run
BF16_MIN_SPEEDUP = 1.10


# --------------------------------------------------------------------------------------------- options


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``"90"``, ``"90s"``, ``"30m"``, ``"1.5h"`` or ``"1h30m"``; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s.replace(" ", ""):
        raise BsrError(f"cannot read duration {text!r}: use seconds or e.g. 90s, 30m, 1.5h, 1h30m")
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(n) * unit[u] for n, u in parts)


TEACHER_TARGETS = ("image", "patch")
# The whole-image teacher outputs are kept in memory as float16 (2 bytes per HR value) and computed once at the
# start; above these sizes (e.g. DIV2K: ~110 M LR pixels) the run falls back to a teacher pass per step.
TEACHER_CACHE_MAX_LR_PIXELS = 8_000_000
TEACHER_CACHE_MAX_BYTES = 2 << 30


@dataclass
class TrainConfig:
    """Everything that defines one training run (stored in the run's state and checkpoint metadata)."""

    model: str
    scale: int
    train_dir: str
    out_dir: str
    iters: int | None = None
    time_budget: float | None = None  # seconds
    batch_size: int = 16
    patch_size: int = 32  # LR pixels
    lr: float = 5e-4
    beta2: float = ADAM_BETAS[1]  # Adam beta2 (E2FIF's official code: 0.999)
    loss_range: float = 255.0  # L1 on pixel values 0..loss_range (runs before this option: 1.0)
    teacher: str | None = None  # FP teacher (zoo name or checkpoint file) for output distillation
    distill_weight: float = 1.0  # weight of L1(student, teacher) beside L1(student, HR)
    teacher_targets: str = "image"  # image: the teacher's whole-image outputs, computed once | patch: every step
    fp_weight_iters: int = 0  # binary-activation-only warm-up: weights binarized from this iteration on (E2FIF)
    schedule: str = "cosine"  # cosine | step
    warmup: int = 50  # linear warm-up iterations
    val_every: int = 500
    data_dir: str | None = None  # benchmark root holding Set5/
    save_every: int = 200
    log_every: int = 50
    precision: str = "auto"  # auto | fp32 | bf16
    compile: str = "auto"  # auto | on | off: torch.compile the training forward/backward (see compile_wanted)
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None
    seed: int = 0
    resume: bool = False
    init_from: str | None = None
    max_images: int | None = None  # use only the first N training images (tests)

    def check(self) -> None:
        """Raise BsrError on inconsistent options."""
        if self.iters is None and self.time_budget is None:
            raise BsrError("give --iters and/or --time-budget")
        if self.iters is not None and self.iters < 1:
            raise BsrError("--iters must be >= 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise BsrError("--time-budget must be > 0")
        if self.scale < 1:
            raise BsrError("--scale must be >= 1")
        if self.batch_size < 1 or self.patch_size < 4:
            raise BsrError("--batch-size must be >= 1 and --patch-size >= 4")
        if self.lr <= 0:
            raise BsrError("--lr must be > 0")
        if not 0.0 < self.beta2 < 1.0:
            raise BsrError("--beta2 must be in (0, 1)")
        if self.loss_range <= 0:
            raise BsrError("--loss-range must be > 0")
        if self.fp_weight_iters < 0:
            raise BsrError("--fp-weight-iters must be >= 0")
        if self.distill_weight < 0:
            raise BsrError("--distill-weight must be >= 0")
        if self.teacher_targets not in TEACHER_TARGETS:
            raise BsrError(f"unknown --teacher-targets {self.teacher_targets!r} ({', '.join(TEACHER_TARGETS)})")
        if self.schedule not in ("cosine", "step"):
            raise BsrError(f"unknown --schedule {self.schedule!r} (cosine, step)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise BsrError(f"unknown --precision {self.precision!r} (auto, fp32, bf16)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BsrError(f"unknown --device {self.device!r} (auto, cpu, cuda)")
        if self.compile not in ("auto", "on", "off"):
            raise BsrError(f"unknown --compile {self.compile!r} (auto, on, off)")



# --------------------------------------------------------------------------------------------- schedule


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning rate at iteration ``step`` with run ``progress`` in [0, 1] (cosine or step, after warm-up)."""
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        factor = MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * p))
    else:
        factor = 0.5 ** sum(p >= m for m in STEP_MILESTONES)
    if cfg.warmup > 0:
        factor *= min(1.0, (step + 1) / cfg.warmup)
    return cfg.lr * factor


def run_progress(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the run done: iterations when --iters is set, time when only --time-budget is."""
    fractions = []
    if cfg.iters is not None:
        fractions.append(step / cfg.iters)
    if cfg.time_budget is not None:
        fractions.append(elapsed / cfg.time_budget)
    return max(fractions)


# --------------------------------------------------------------------------------------------- device / precision


COMPILE_MIN_SECONDS = 600  # auto compiles runs of at least 10 minutes (or COMPILE_MIN_ITERS iterations)
COMPILE_MIN_ITERS = 2000


def compile_wanted(cfg: TrainConfig, distributed: bool) -> tuple[bool, str]:
    """(compile?, why) for ``--compile``. torch.compile (inductor) fuses the many small elementwise ops of a binary
    network's training step (quantizers, STE masks, scale/bias, RPReLU, re-scaling maps): measured 2026-12-07 on
    the Xeon (AMX), 1 thread, bf16, batch 8, LR patch 16: e2fif 7.9 -> 18.2 it/s. Compiling costs 20-60 s of CPU
    at the first step (and again after a resume), so ``auto`` compiles runs of >= 10 minutes or >= 2000 iterations,
    single-process only (DDP runs eager)."""
    if cfg.compile == "off":
        return False, "off"
    if distributed:
        return False, "off (distributed run: eager DDP)"
    if cfg.compile == "on":
        return True, "on"
    long = (cfg.time_budget or 0) >= COMPILE_MIN_SECONDS or (cfg.iters or 0) >= COMPILE_MIN_ITERS
    return (True, "auto: a long run") if long else (False, "auto: off for a short run (compiling costs ~30 s)")


def pick_device(pref: str) -> torch.device:
    """cuda when asked or (auto) when available, else cpu."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BsrError("--device cuda: no CUDA device available")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_ctx(device: torch.device, precision: str):
    """The autocast context for a training/timing step (a no-op for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def pixel_l1(sr: torch.Tensor, hr: torch.Tensor, loss_range: float = 255.0) -> torch.Tensor:
    """The training loss: mean |sr - hr| on pixel values 0..loss_range (sr, hr in [0, 1]); fp32."""
    return torch.nn.functional.l1_loss(sr.float(), hr) * loss_range


def train_step(model, optimizer, lr_t, hr_t, device, precision, loss_range: float = 255.0,
               teacher_out: torch.Tensor | None = None, distill_weight: float = 1.0) -> float:
    """One L1 step (plus ``distill_weight`` * L1 to ``teacher_out`` when given); returns the loss in [0, 1] units.
    Under bf16 the forward runs in autocast, the loss in fp32."""
    with autocast_ctx(device, precision):
        sr = model(lr_t)
    loss = pixel_l1(sr, hr_t, loss_range)
    if teacher_out is not None:
        loss = loss + distill_weight * pixel_l1(sr, teacher_out, loss_range)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()) / loss_range


def measure_its(model, sampler, batch_size, device, precision, iters=5, warmup=2, seed=0) -> float:
    """Training iterations/s of a throw-away copy of ``model`` in ``precision`` (fp32 or bf16+channels_last)."""
    m = copy.deepcopy(model).to(device)
    cl = precision == "bf16"
    if cl:
        m = m.to(memory_format=torch.channels_last)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-6, betas=ADAM_BETAS)
    rng = np.random.default_rng(seed)
    batches = [sampler.sample(batch_size, rng) for _ in range(warmup + iters)]
    t0 = 0.0
    for i, (lr_b, hr_b) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        train_step(m, opt, to_tensor(lr_b, device, cl), to_tensor(hr_b, device, cl), device, precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters / (time.perf_counter() - t0)


def choose_precision(cfg, model, sampler, device, log) -> str:
    """fp32 or bf16: the user's choice, or (auto) bf16 when the hardware has it and a timing says it is faster."""
    if cfg.precision != "auto":
        return cfg.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if not cpu_has_native_bf16():
        log("precision auto: CPU without native bf16 -> fp32")
        return "fp32"
    fp32 = measure_its(model, sampler, cfg.batch_size, device, "fp32", seed=cfg.seed)
    bf16 = measure_its(model, sampler, cfg.batch_size, device, "bf16", seed=cfg.seed)
    choice = "bf16" if bf16 >= BF16_MIN_SPEEDUP * fp32 else "fp32"
    log(f"precision auto: fp32 {fp32:.2f} it/s, bf16+channels_last {bf16:.2f} it/s -> {choice}")
    return choice


# --------------------------------------------------------------------------------------------- validation


class Set5Validator:
    """Mean Set5 PSNR of a model through `bsr eval`'s own chain (``evaluate.score_image``: modcrop, MATLAB
    bicubic LR as uint8, SR rounded to uint8, PSNR on Y with crop = scale), so a protocol change is made once."""

    def __init__(self, folder: Path, scale: int):
        from bsr_cli.evaluate import load_hr

        self.scale = scale
        self.items = [load_hr(path) for path in list_images(folder)]

    @classmethod
    def find(cls, data_dir: str | None, scale: int):
        """A validator for ``data_dir``/Set5 (or ``data_dir`` itself holding Set5's images); None if absent."""
        if not data_dir:
            return None
        root = Path(data_dir)
        for cand in (root / "Set5", root / "benchmark" / "Set5", root):
            if cand.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in cand.iterdir()):
                return cls(cand, scale)
        return None

    @torch.no_grad()
    def psnr(self, model: torch.nn.Module, device: torch.device) -> float:
        """Mean Set5 PSNR (dB) in fp32, eval mode; restores the model's train mode."""
        from bsr_cli.evaluate import model_sr, score_image

        was_training = model.training
        model.eval()
        sr_fn = model_sr(lambda x: model(x.to(device)).float().cpu(), self.scale)
        scores = [score_image(hr, sr_fn, self.scale)[0] for hr in self.items]
        model.train(was_training)
        return float(np.mean(scores))


# --------------------------------------------------------------------------------------------- logging


class RunLog:
    """Log lines to ``train.log`` and (when stderr is not a TTY, or for important lines) to stderr."""

    def __init__(self, path: Path, console=None):
        self.file = open(path, "a", encoding="utf-8")
        self.console = console  # rich console when a TTY progress bar is shown

    def __call__(self, msg: str, echo: bool = True) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        self.file.write(line + "\n")
        self.file.flush()
        if echo:
            if self.console is not None:
                self.console.print(msg, highlight=False)
            else:
                print(f"bsr train: {msg}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.file.close()


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------------------------- main loop


def recipe(cfg: TrainConfig, info: dict, device: torch.device, precision: str, n_images: int) -> dict:
    """The training recipe as stored in checkpoint metadata and the manifest."""
    return {
        "data": f"{Path(cfg.train_dir).name} ({n_images} images), LR = MATLAB bicubic (uint8)",
        "iterations": info["step"],
        "hours": round(info["elapsed"] / 3600, 3),
        "time_budget_s": cfg.time_budget,  # the stage's budget when it was wall time (--time-budget), else None
        "device": _device_name(device),
        "precision": precision + ("+channels_last" if precision == "bf16" else ""),
        "compiled": str(info.get("compile", "off")).startswith(("on", "auto: a long")),
        "batch": cfg.batch_size,
        "patch_lr": cfg.patch_size,
        "patch_hr": cfg.patch_size * cfg.scale,
        "loss": f"L1 on 0..{cfg.loss_range:g}",
        "optimizer": f"Adam betas={[ADAM_BETAS[0], cfg.beta2]}",
        "lr": cfg.lr,
        "lr_schedule": (
            f"cosine to {MIN_LR_RATIO:g}x" if cfg.schedule == "cosine" else f"step x0.5 at {list(STEP_MILESTONES)}"
        )
        + f", warmup {cfg.warmup}",
        "augment": "flips + 90-degree rotations",
        "init_from": _source_name(cfg.init_from) if cfg.init_from else (info.get("recipe") or {}).get("init_from"),
        "fp_weight_iters": cfg.fp_weight_iters or None,
        "teacher": {"model": cfg.teacher, "weight": cfg.distill_weight, "loss": "L1 to outputs",
                    "targets": info.get("teacher_targets", "patch")} if cfg.teacher else None,
        **(_continued(cfg, info) if cfg.init_from else _resumed_chain(cfg, info)),
        "seed": cfg.seed,
        "best_set5_psnr": info.get("best_psnr"),
        "best_step": info.get("best_step"),
    }


def _source_name(path: str) -> str:
    """The --init-from file as a recipe names it: its file name, with its run folder for a training state
    (`e2fif-x4-s12/state.safetensors`: every run's state has the same file name)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.name == STATE_FILE and p.parent.name else p.name


def _continued(cfg: TrainConfig, info: dict) -> dict:
    """When a run continues the SAME model and scale (`--init-from` a packed checkpoint or a training state), the
    recipe keeps the earlier stages and the totals, so a manifest entry states the whole budget:
    {"previous_stage", "total_iterations", "total_hours"}. A training state carries its run's recipe (written at
    every save, with that run's own earlier stages). Empty for a fresh run or an x4 -> x2 initialisation of body
    weights."""
    if not cfg.init_from:
        return {}
    from bsr_cli.checkpoint import read_metadata

    src = resolve_source(cfg.init_from, cfg.scale, "--init-from")
    try:
        if is_train_state(src):
            state = read_state_info(Path(src))
            conf = state.get("config") or {}
            meta = {"model": conf.get("model"), "scale": conf.get("scale"), "training": state.get("recipe")}
        else:
            meta = read_metadata(src)
    except Exception:  # not a bsr checkpoint: nothing to chain
        return {}
    return chain_stage(meta.get("training") or meta.get("recipe"), meta, cfg.model, cfg.scale, info)


def _resumed_chain(cfg: TrainConfig, info: dict) -> dict:
    """A run continued with `--resume` (no `--init-from` on that command line) keeps the earlier stages its state
    recorded when it started (the recipe saved with the state), so a stop/resume cycle loses no stage."""
    saved = info.get("recipe") or {}
    return chain_stage(saved.get("previous_stage"), {"model": cfg.model, "scale": cfg.scale}, cfg.model, cfg.scale,
                       info)


def chain_stage(prev, meta: dict, model: str, scale: int, info: dict) -> dict:
    """{"previous_stage": prev, totals} when ``prev`` is the recipe of the same model and scale, else {}."""
    if not isinstance(prev, dict) or meta.get("model") != model or int(meta.get("scale") or 0) != scale:
        return {}
    prev_iters = prev.get("total_iterations", prev.get("iterations", 0))
    prev_hours = prev.get("total_hours", prev.get("hours", 0.0))
    return {
        "previous_stage": prev,
        "total_iterations": int(prev_iters) + int(info["step"]),
        "total_hours": round(float(prev_hours) + info["elapsed"] / 3600, 3),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def set_weight_binarization(model: torch.nn.Module, on: bool) -> None:
    """Binarize the weights of every binary conv (on) or use their latents as FP weights (off: the binary-
    activation-only warm-up of E2FIF's official recipe, where only activations are 1-bit at first)."""
    from bsr_cli.checkpoint import binary_convs

    for conv in binary_convs(model).values():
        conv.binarize_weight = on


class _ProgressBar:
    """A rich bar on a terminal (iterations, or seconds of a time budget); nothing otherwise."""

    def __init__(self, console, cfg: TrainConfig, start: float):
        self.bar = None
        if console is None:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.by_iters = cfg.iters is not None
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.bar.start()
        total = cfg.iters if self.by_iters else cfg.time_budget
        self.task = self.bar.add_task(f"{cfg.model} x{cfg.scale}", total=total, completed=start, stats="")

    def update(self, step: int, elapsed: float, stats: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step if self.by_iters else elapsed, stats=stats)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _StopRequest:
    """SIGTERM / SIGINT while training: finish the current step, save the state, exit 130 (resume continues
    exactly). Installed only in the main thread; the previous handlers come back on `restore`."""

    def __init__(self):
        self.requested = False
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def resolve_source(text: str, scale: int, what: str) -> Path:
    """A checkpoint given as a file, or as a zoo name (``srresnet-fp`` -> its x`scale` checkpoint, bundled or
    downloaded): the FP twin for --init-from, a teacher for --teacher."""
    path = Path(text)
    if path.is_file():
        return path
    from bsr_cli.models import list_models

    if text in list_models():
        from bsr_cli.weights import resolve_checkpoint

        try:
            return Path(resolve_checkpoint(text, scale))
        except BsrError as exc:
            raise BsrError(f"{what}: {exc}".split("; pass --checkpoint")[0] + "; pass a checkpoint file instead") from None
    raise BsrError(f"{what}: {text} is neither a file nor a model name with a x{scale} checkpoint")


def load_teacher(cfg: TrainConfig, create_model: Callable, device: torch.device) -> torch.nn.Module | None:
    """The frozen FP teacher of --teacher (eval mode, no gradients), or None."""
    if not cfg.teacher:
        return None
    from bsr_cli.checkpoint import load_into, read_metadata

    path = resolve_source(cfg.teacher, cfg.scale, "--teacher")
    meta = read_metadata(path)
    if int(meta.get("scale", cfg.scale)) != cfg.scale:
        raise BsrError(f"--teacher {path} is a x{meta.get('scale')} checkpoint; this run is x{cfg.scale}")
    teacher = create_model(meta.get("model", cfg.teacher), cfg.scale)
    load_into(teacher, path)
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def teacher_image_targets(teacher: torch.nn.Module, sampler: PatchSampler, device: torch.device,
                          precision: str) -> list[np.ndarray]:
    """The teacher's output on each whole LR training image, (s*H, s*W, 3) float16 in [0, 1], computed once, in
    the run's precision. A patch of it is the distillation target of the LR patch at the same place: the teacher
    pass per step (a quarter to a third of a compiled step of the light 1-bit nets) is gone, and the target is what
    the teacher makes with the image's real context around the patch, not the zero padding of a patch's border."""
    out = []
    channels_last = precision == "bf16"
    with torch.no_grad(), autocast_ctx(device, precision):
        for lr, _ in sampler.pairs:
            y = teacher(to_tensor(lr[None], device, channels_last)).float().clamp(0, 1)
            out.append(y[0].permute(1, 2, 0).cpu().numpy().astype(np.float16))
    return out


class TrainingRun:
    """One run of `train`: set-up (new, resumed or initialised), the loop, validation, state and the end files.

    Every rank of a distributed run (``bsr_cli.train_dist``) builds the same run; rank 0 alone logs, validates
    and writes.
    """

    def __init__(self, cfg: TrainConfig, create_model: Callable):
        cfg.check()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg, self.create_model = cfg, create_model
        self.out = Path(cfg.out_dir)
        self.state_path = self.out / STATE_FILE
        if self.state_path.exists() and not cfg.resume:
            raise BsrError(f"{self.out} already holds a run: pass --resume to continue it or choose another --out")
        # bad --init-from / --teacher fail before the run folder is made
        self.init_source = resolve_source(cfg.init_from, cfg.scale, "--init-from") if cfg.init_from else None
        if cfg.teacher:
            resolve_source(cfg.teacher, cfg.scale, "--teacher")
        self.dist, rank_device = train_dist.setup(cfg.device)
        torch.manual_seed(cfg.seed)  # before the model is built: its init is part of the seeded run
        try:
            self.model = create_model(cfg.model, cfg.scale)
        except BsrError:
            raise
        except (KeyError, ValueError) as exc:
            raise BsrError(f"cannot create model {cfg.model!r} at x{cfg.scale}: {exc}") from exc
        self.sampler = PatchSampler.from_folder(cfg.train_dir, cfg.scale, cfg.patch_size, cfg.max_images)
        self.device = rank_device or pick_device(cfg.device)
        seed = cfg.seed if self.dist.rank == 0 else [cfg.seed, self.dist.rank]
        self.np_rng = np.random.default_rng(seed)
        console = None
        if sys.stderr.isatty() and self.dist.main:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        self.log = RunLog(self.out / "train.log", console) if self.dist.main else (lambda *a, **k: None)
        self.model = self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(ADAM_BETAS[0], cfg.beta2))
        self.info = {"step": 0, "elapsed": 0.0, "best_psnr": None, "best_step": None, "precision": None,
                     "history": []}
        self._start()
        self.teacher = load_teacher(cfg, create_model, self.device)
        if self.teacher is not None:
            self.log(f"distillation: L1 to the outputs of {cfg.teacher} (weight {cfg.distill_weight:g}) + L1 to HR")
        precision = self.info.get("precision") or choose_precision(cfg, self.model, self.sampler, self.device,
                                                                   self.log)
        self.precision = self.dist.broadcast(precision)
        self.info["precision"] = self.precision
        self.channels_last = self.precision == "bf16"
        self.info["teacher_targets"] = self._teacher_targets()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.dist.wrap(self.model, self.device)  # what forward/backward run through
        compiled, why = compile_wanted(cfg, self.dist.enabled)
        if compiled:  # the step runs the compiled graph; validation, saving and flips use self.model (eager)
            self.net = torch.compile(self.net)
        self.info["compile"] = why
        self.validator = Set5Validator.find(cfg.data_dir, cfg.scale) if self.dist.main else None
        if self.validator is None and self.dist.main:
            self.log(f"note: no Set5 under --data-dir {cfg.data_dir!r}: validation skipped")
        world = f", {self.dist.world} processes (global batch {self.dist.world * cfg.batch_size})" \
            if self.dist.enabled else ""
        self.log(
            f"device {_device_name(self.device)}, precision {self.precision}"
            f"{'+channels_last' if self.channels_last else ''}, batch {cfg.batch_size}, LR patch {cfg.patch_size}, "
            f"lr {cfg.lr:g} {cfg.schedule}, beta2 {cfg.beta2:g}, L1 on 0..{cfg.loss_range:g}, iters {cfg.iters}, "
            f"time budget {cfg.time_budget}{world}, compile {self.info['compile']}"
        )
        self.signs_then = {"step": self.info["step"], "signs": binary_signs(self.model)}

    def _start(self) -> None:
        """Resume from the state file, or start new (optionally initialised from --init-from)."""
        cfg = self.cfg
        if cfg.resume and self.state_path.exists():
            saved = read_state_info(self.state_path)
            if saved["config"]["model"] != cfg.model or saved["config"]["scale"] != cfg.scale:
                raise BsrError(f"{self.state_path} is a run of {saved['config']['model']} x{saved['config']['scale']}")
            self.info.update(load_state(self.state_path, self.model, self.optimizer, self.np_rng))
            if self.dist.rank:
                self.np_rng = np.random.default_rng([cfg.seed, self.dist.rank, self.info["step"]])
            saved_range = float(saved["config"].get("loss_range", 1.0))
            if saved_range != cfg.loss_range:
                self.log(f"note: this run trains with L1 on 0..{saved_range:g}; --loss-range {cfg.loss_range:g} ignored")
                cfg.loss_range = saved_range
            self.log(f"resumed {cfg.model} x{cfg.scale} at step {self.info['step']} "
                     f"({_fmt_time(self.info['elapsed'])} trained)")
            return
        self.log(f"new run {cfg.model} x{cfg.scale}: {len(self.sampler)} images from {cfg.train_dir}, out {self.out}")
        if self.init_source is not None:
            source = self.init_source
            copied, skipped, note = init_from_checkpoint(self.model, source, self.create_model, cfg.model)
            self.log(f"init from {source}: copied {len(copied)} tensors ({_group_names(copied)}); "
                     f"kept init for {len(skipped)} ({_group_names(skipped)}); {note}")
            if is_train_state(source) and read_state_info(source)["config"]["model"] == cfg.model:
                n = init_optimizer_from_state(self.optimizer, self.model, source)
                self.log(f"Adam moments of {n} parameters continued from {source}")

    # ---- the pieces of the loop

    def done(self) -> bool:
        cfg, info = self.cfg, self.info
        over = (cfg.iters is not None and info["step"] >= cfg.iters) or (
            cfg.time_budget is not None and info["elapsed"] >= cfg.time_budget)
        return self.dist.any(over) if cfg.time_budget is not None else over

    def save(self) -> None:
        if self.dist.main:
            self.info["config"] = asdict(self.cfg)
            # the recipe so far (with earlier stages): a later stage that starts from this state chains it
            self.info["recipe"] = recipe(self.cfg, self.info, self.device, self.precision,
                                         len(self.sampler))
            save_state(self.state_path, self.model, self.optimizer, self.info, self.np_rng)

    def flips(self) -> str:
        """'; X % of binary weights flipped since step S' (recorded in info["flips"]), or '' without binary convs."""
        now = binary_signs(self.model)
        frac = flip_fraction(self.signs_then["signs"], now)
        if frac is None:
            return ""
        self.info.setdefault("flips", []).append([self.info["step"], frac])
        text = f"; {100 * frac:.3f} % of binary weights flipped since step {self.signs_then['step']}"
        self.signs_then = {"step": self.info["step"], "signs": now}
        return text

    def validate(self) -> None:
        if not self.dist.main:
            return
        info, step = self.info, self.info["step"]
        if self.validator is None:
            text = self.flips()
            if text:
                self.log(f"step {step}{text}")
            return
        if self.cfg.fp_weight_iters:
            set_weight_binarization(self.model, True)  # a warm-up's FP weights are never what is validated
        psnr = self.validator.psnr(self.model, self.device)
        info["history"].append([step, round(psnr, 4)])
        best = info["best_psnr"] is None or psnr > info["best_psnr"]
        if best:
            info["best_psnr"], info["best_step"] = psnr, step
            _atomic_save(model_tensors(self.model), self.out / BEST_WEIGHTS_FILE, {})
        self.log(f"step {step}: Set5 PSNR {psnr:.3f} dB{' (best)' if best else ''}{self.flips()}")

    def _teacher_targets(self) -> str | None:
        """Distillation targets: "image" (whole-image teacher outputs cached in the sampler), "patch" (a teacher
        pass per step: --teacher-targets patch, or a training set too large to cache), None without a teacher."""
        cfg = self.cfg
        if self.teacher is None:
            return None
        if cfg.teacher_targets == "patch":
            return "patch"
        pixels = self.sampler.lr_pixels()
        nbytes = pixels * cfg.scale ** 2 * 3 * 2
        if pixels > TEACHER_CACHE_MAX_LR_PIXELS or nbytes > TEACHER_CACHE_MAX_BYTES:
            self.log(f"note: {pixels / 1e6:.1f} M LR pixels of training images: the teacher runs on every batch "
                     "instead of once per image")
            return "patch"
        t0 = time.perf_counter()
        self.sampler.set_targets(teacher_image_targets(self.teacher, self.sampler, self.device, self.precision))
        self.log(f"teacher targets: its outputs on the {len(self.sampler)} whole training images, computed once "
                 f"({nbytes / 2 ** 20:.0f} MB, {time.perf_counter() - t0:.0f} s)")
        return "image"

    def step(self) -> tuple[float, float]:
        """One training iteration: (loss in [0, 1] units, lr)."""
        cfg, info = self.cfg, self.info
        lr_now = lr_at(cfg, info["step"], run_progress(cfg, info["step"], info["elapsed"]))
        for group in self.optimizer.param_groups:
            group["lr"] = lr_now
        if cfg.fp_weight_iters:  # the warm-up's switch; nothing to walk for the usual run
            set_weight_binarization(self.model, info["step"] >= cfg.fp_weight_iters)
        cached = self.sampler.targets is not None
        lr_b, hr_b, *tg_b = self.sampler.sample(cfg.batch_size, self.np_rng, with_targets=cached)
        lr_t = to_tensor(lr_b, self.device, self.channels_last)
        hr_t = to_tensor(hr_b, self.device, self.channels_last)
        target = None
        if cached:
            target = to_tensor(tg_b[0], self.device, self.channels_last)
        elif self.teacher is not None:
            with torch.no_grad(), autocast_ctx(self.device, self.precision):
                target = self.teacher(lr_t).float().clamp(0, 1)
        loss = train_step(self.net, self.optimizer, lr_t, hr_t, self.device, self.precision, cfg.loss_range,
                          target, cfg.distill_weight)
        if not math.isfinite(loss):
            raise BsrError(f"loss became {loss} at step {info['step']}; try a lower --lr")
        return loss, lr_now

    def loop(self) -> None:
        cfg, info = self.cfg, self.info
        bar = _ProgressBar(self.console, cfg, info["step"] if cfg.iters is not None else info["elapsed"]) \
            if not self.done() else _ProgressBar(None, cfg, 0)
        stop = _StopRequest()
        self.model.train()
        window: list[float] = []
        t_last, step_last = time.perf_counter(), info["step"]
        try:
            while not self.done():
                t0 = time.perf_counter()
                loss, lr_now = self.step()
                info["step"] += 1
                info["elapsed"] += time.perf_counter() - t0
                info["losses"] = (info.get("losses", []) + [round(loss, 6)])[-1000:]
                window.append(loss)
                step = info["step"]
                if step % cfg.log_every == 0 or self.done():
                    now = time.perf_counter()
                    its = (step - step_last) / max(now - t_last, 1e-9)
                    t_last, step_last = now, step
                    left = [(cfg.iters - step) / max(its, 1e-9)] if cfg.iters is not None else []
                    left += [cfg.time_budget - info["elapsed"]] if cfg.time_budget is not None else []
                    self.log(f"step {step}{'/' + str(cfg.iters) if cfg.iters else ''} loss {np.mean(window):.5f} "
                             f"lr {lr_now:.3g} {its:.2f} it/s eta {_fmt_time(min(left))}", echo=self.console is None)
                    window = []
                if cfg.val_every and step % cfg.val_every == 0:
                    self.validate()
                if step % cfg.save_every == 0:
                    self.save()
                bar.update(step, info["elapsed"], f"loss {loss:.4f} lr {lr_now:.2g}")
                if self.dist.any(stop.requested):
                    self.save()
                    self.log(f"stopped at step {step}: state saved in {self.state_path}; continue with --resume")
                    raise KeyboardInterrupt
        finally:
            bar.stop()
            stop.restore()
        if cfg.fp_weight_iters:
            set_weight_binarization(self.model, True)
        if not info["history"] or info["history"][-1][0] != info["step"]:
            self.validate()
        self.save()

    def finish(self) -> dict:
        """Write final.safetensors, best.safetensors (packed) and summary.json (rank 0); returns the summary."""
        cfg, info = self.cfg, self.info
        summary = {"model": cfg.model, "scale": cfg.scale}
        if self.dist.main:
            summary = finalize(cfg, self.model, info, self.device, self.precision, len(self.sampler), self.log,
                               self.create_model)
        self.dist.barrier()
        return summary


def train(cfg: TrainConfig, create_model: Callable | None = None) -> dict:
    """Run (or resume, or just finalise) one training run; returns the summary dict (also in summary.json)."""
    if create_model is None:
        from bsr_cli.models import create_model
    run = TrainingRun(cfg, create_model)
    try:
        run.loop()
        return run.finish()
    finally:
        run.dist.close()


def finalize(cfg, model, info, device, precision, n_images, log, create_model) -> dict:
    """Write final.safetensors, best.safetensors (packed) and summary.json."""
    from bsr_cli.checkpoint import save_checkpoint

    out = Path(cfg.out_dir)
    rec = recipe(cfg, info, device, precision, n_images)
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    save_checkpoint(model, out / "final.safetensors", {"model": cfg.model, "scale": cfg.scale, "training": rec})
    best_path = out / BEST_WEIGHTS_FILE
    if best_path.exists():
        best_model = create_model(cfg.model, cfg.scale)
        best_model.load_state_dict(load_file(str(best_path)))
        best_rec = dict(rec, iterations=info["best_step"], note=f"best Set5 checkpoint of a {info['step']}-iteration run")
        save_checkpoint(best_model.eval(), out / "best.safetensors",
                        {"model": cfg.model, "scale": cfg.scale, "training": best_rec})
    summary = {
        "model": cfg.model,
        "scale": cfg.scale,
        "recipe": rec,
        "set5_history": info["history"],
        "flips": info.get("flips", []),
        "final": str(out / "final.safetensors"),
        "best": str(out / "best.safetensors") if best_path.exists() else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(
        f"done: {info['step']} iterations in {_fmt_time(info['elapsed'])}; best Set5 "
        f"{info['best_psnr'] if info['best_psnr'] is None else round(info['best_psnr'], 3)} dB at step {info['best_step']}"
    )
    log.close()
    return summary
