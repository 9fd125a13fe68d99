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
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bsr_cli.errors import BsrError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
STATE_FILE = "state.safetensors"
BEST_WEIGHTS_FILE = "best.weights.safetensors"
ADAM_BETAS = (0.9, 0.99)
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
    schedule: str = "cosine"  # cosine | step
    warmup: int = 50  # linear warm-up iterations
    val_every: int = 500
    data_dir: str | None = None  # benchmark root holding Set5/
    save_every: int = 200
    log_every: int = 50
    precision: str = "auto"  # auto | fp32 | bf16
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
        if self.schedule not in ("cosine", "step"):
            raise BsrError(f"unknown --schedule {self.schedule!r} (cosine, step)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise BsrError(f"unknown --precision {self.precision!r} (auto, fp32, bf16)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BsrError(f"unknown --device {self.device!r} (auto, cpu, cuda)")


# --------------------------------------------------------------------------------------------- data


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted); BsrError when the folder is missing or has none."""
    path = Path(folder)
    if not path.is_dir():
        raise BsrError(f"training folder not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise BsrError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in training folder {path}")
    return files


def load_rgb_uint8(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (gray is replicated, alpha dropped), via ``bsr_cli.imageio``."""
    from bsr_cli.imageio import read_image

    img = read_image(path).pixels
    if img.dtype != np.uint8:
        raise BsrError(f"{path}: training expects 8-bit images, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def make_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 of one image: HR modcropped, LR = the protocol's MATLAB bicubic rounded to uint8."""
    from bsr_cli.protocol import bicubic_downscale_uint8, modcrop

    hr = np.ascontiguousarray(modcrop(hr, scale))
    return bicubic_downscale_uint8(hr, scale), hr


def dihedral(img: np.ndarray, t: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of an (H, W, C) array: bit0 h-flip, bit1 v-flip, bit2 transpose."""
    if t & 1:
        img = img[:, ::-1]
    if t & 2:
        img = img[::-1]
    if t & 4:
        img = img.transpose(1, 0, 2)
    return img


class PatchSampler:
    """In-memory (LR, HR) uint8 pairs and a sampler of random aligned, augmented patch pairs."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, patch_size: int):
        self.scale = scale
        self.patch_size = patch_size
        self.pairs = [(lr, hr) for lr, hr in pairs if min(lr.shape[:2]) >= patch_size]
        if not self.pairs:
            raise BsrError(f"no training image is large enough for LR patches of {patch_size} px at x{scale}")

    @classmethod
    def from_folder(cls, folder: str | Path, scale: int, patch_size: int, max_images: int | None = None):
        """Decode every image of ``folder`` once and make its LR once."""
        files = list_images(folder)[:max_images]
        pairs = []
        for path in files:
            try:
                pairs.append(make_pair(load_rgb_uint8(path), scale))
            except BsrError:
                raise
            except Exception as exc:  # unreadable file: say which one
                raise BsrError(f"cannot read training image {path}: {exc}") from exc
        return cls(pairs, scale, patch_size)

    def __len__(self) -> int:
        return len(self.pairs)

    def crop(self, index: int, y: int, x: int, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The LR patch at LR (y, x) and its HR patch at (scale*y, scale*x), both with transform ``t``."""
        lr, hr = self.pairs[index]
        p, s = self.patch_size, self.scale
        lp = lr[y : y + p, x : x + p]
        hp = hr[s * y : s * (y + p), s * x : s * (x + p)]
        return dihedral(lp, t), dihedral(hp, t)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A batch: LR uint8 (N, p, p, 3) and HR uint8 (N, s*p, s*p, 3)."""
        lrs, hrs = [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self.pairs)))
            h, w = self.pairs[i][0].shape[:2]
            y = int(rng.integers(h - self.patch_size + 1))
            x = int(rng.integers(w - self.patch_size + 1))
            lp, hp = self.crop(i, y, x, int(rng.integers(8)))
            lrs.append(lp)
            hrs.append(hp)
        return np.stack(lrs), np.stack(hrs)


def to_tensor(batch: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1] on ``device`` (channels_last strides if asked)."""
    t = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


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


def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AMX-BF16 or AVX512-BF16 (oneDNN then runs bf16 convs natively)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


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


def train_step(model, optimizer, lr_t, hr_t, device, precision, loss_range: float = 255.0) -> float:
    """One L1 step; returns the loss in [0, 1] units. Under bf16 the forward runs in autocast, the loss in fp32."""
    with autocast_ctx(device, precision):
        sr = model(lr_t)
    loss = pixel_l1(sr, hr_t, loss_range)
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
    """PSNR (Y, crop = scale) of a model on Set5 with the protocol chain; LR made once at construction."""

    def __init__(self, folder: Path, scale: int):
        from bsr_cli.protocol import bicubic_downscale_uint8, modcrop

        self.scale = scale
        self.items = []
        for path in list_images(folder):
            hr = modcrop(load_rgb_uint8(path), scale)
            self.items.append((bicubic_downscale_uint8(hr, scale), hr))

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
        from bsr_cli.protocol import calculate_psnr, quantize_uint8

        was_training = model.training
        model.eval()
        scores = []
        for lr, hr in self.items:
            x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255.0).to(device)
            sr = model(x)[0].float().clamp(0, 1).cpu()
            sr_u8 = quantize_uint8(sr).transpose(1, 2, 0)
            scores.append(calculate_psnr(sr_u8, hr, crop_border=self.scale))
        model.train(was_training)
        return float(np.mean(scores))


# --------------------------------------------------------------------------------------------- flips


def binary_signs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Sign bits (W < 0) of every binary conv's latent weight, keyed by module name."""
    from bsr_cli.checkpoint import binary_convs

    return {name: (conv.weight.detach() < 0).cpu().clone() for name, conv in binary_convs(model).items()}


def flip_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float | None:
    """Fraction of binary weights whose sign differs between two `binary_signs` snapshots (None: no binary
    weights). A stage whose flip fraction stays 0 trains only its FP parts (issue #12's frozen ±1 latents)."""
    keys = [k for k in before if k in after]
    total = sum(before[k].numel() for k in keys)
    if not total:
        return None
    return sum(int((before[k] != after[k]).sum()) for k in keys) / total


# --------------------------------------------------------------------------------------------- state


def _atomic_save(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as plain contiguous fp32-or-native tensors (shared storage broken)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def save_state(path: Path, model, optimizer, info: dict, np_rng: np.random.Generator) -> None:
    """Write the resume state to one safetensors file (atomic replace): weights, Adam moments, RNG, JSON info."""
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, val in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(val).detach().cpu().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(info)
    meta["param_groups"] = opt["param_groups"]
    meta["numpy_rng"] = np_rng.bit_generator.state
    _atomic_save(tensors, path, {"bsr_train_state": json.dumps(meta)})


def read_state_info(path: Path) -> dict:
    """The JSON part of a resume state file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "bsr_train_state" not in meta:
        raise BsrError(f"{path} is not a bsr training state")
    return json.loads(meta["bsr_train_state"])


def load_state(path: Path, model, optimizer, np_rng: np.random.Generator) -> dict:
    """Restore model, optimizer, RNG from ``save_state``'s file; returns its info dict."""
    info = read_state_info(path)
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": opt_state, "param_groups": info.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    np_rng.bit_generator.state = info.pop("numpy_rng")
    return info


def init_from_checkpoint(model: torch.nn.Module, path: str | Path, create_model: Callable, name: str) -> tuple[list, list]:
    """Copy every parameter/buffer of ``path`` whose name and shape match ``model`` (e.g. x4 head/body -> x2).

    ``path`` is a packed checkpoint (``bsr_cli.checkpoint``; its model is rebuilt at the checkpoint's scale and
    loaded with ``load_into``) or a training state (``state.safetensors``). Returns (copied, skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise BsrError(f"--init-from: file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    note = "latents copied as trained (training state)"
    if "bsr_train_state" in meta:
        src = {k[6:]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}
    else:
        from bsr_cli.checkpoint import load_into, read_metadata

        meta = read_metadata(path)
        src_model = create_model(meta.get("model", name), int(meta.get("scale", 4)))
        restored = load_into(src_model, path, latents="trainable").get("latents_restored", {})
        src = src_model.state_dict()
        note = "no binary latents"
        if restored.get("layers"):
            note = (f"packed file stores signs only: latents of {restored['layers']} binary convs restored at "
                    f"init magnitude (mean |W| {restored['mean_abs']:.4f}), signs kept")
    dst = model.state_dict()
    copied, skipped = [], []
    for key, val in dst.items():
        if key in src and tuple(src[key].shape) == tuple(val.shape):
            dst[key] = src[key].to(val.dtype)
            copied.append(key)
        else:
            skipped.append(key)
    model.load_state_dict(dst)
    return copied, skipped, note


def _group_names(keys: list[str]) -> str:
    """A short summary of parameter names by top-level part: 'head 2, body 96, ...'."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    return ", ".join(f"{part} {n}" for part, n in counts.items()) or "none"


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
        "device": _device_name(device),
        "precision": precision + ("+channels_last" if precision == "bf16" else ""),
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
        "init_from": Path(cfg.init_from).name if cfg.init_from else None,
        **_continued(cfg, info),
        "seed": cfg.seed,
        "best_set5_psnr": info.get("best_psnr"),
        "best_step": info.get("best_step"),
    }


def _continued(cfg: TrainConfig, info: dict) -> dict:
    """When a run continues the SAME model and scale from a checkpoint (`--init-from`), the recipe keeps the
    earlier stage and the totals, so a manifest entry states the whole budget: {"previous_stage", "total_iterations",
    "total_hours"}. Empty for a fresh run or an x4 -> x2 initialisation of body weights."""
    if not cfg.init_from:
        return {}
    from bsr_cli.checkpoint import read_metadata

    try:
        meta = read_metadata(cfg.init_from)
    except Exception:  # not a bsr checkpoint: nothing to chain
        return {}
    prev = meta.get("training") or meta.get("recipe")
    if not isinstance(prev, dict) or meta.get("model") != cfg.model or int(meta.get("scale", 0)) != cfg.scale:
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


def _pack(model, path: Path, cfg: TrainConfig, rec: dict, log) -> bool:
    """Write a packed checkpoint with the recipe metadata; False (with a note) if the packer is unavailable."""
    try:
        from bsr_cli.checkpoint import save_checkpoint
    except ImportError as exc:
        log(f"packed checkpoint {path.name} not written ({exc}); run again with --resume to write it")
        return False
    save_checkpoint(model, path, {"model": cfg.model, "scale": cfg.scale, "training": rec})
    return True


def train(cfg: TrainConfig, create_model: Callable | None = None) -> dict:
    """Run (or resume, or just finalise) one training run; returns the summary dict (also in summary.json)."""
    cfg.check()
    if create_model is None:
        from bsr_cli.models import create_model
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    state_path = out / STATE_FILE
    if state_path.exists() and not cfg.resume:
        raise BsrError(f"{out} already holds a run: pass --resume to continue it or choose another --out")
    torch.manual_seed(cfg.seed)  # before the model is built: its init is part of the seeded run
    try:
        model = create_model(cfg.model, cfg.scale)
    except BsrError:
        raise
    except (KeyError, ValueError) as exc:
        raise BsrError(f"cannot create model {cfg.model!r} at x{cfg.scale}: {exc}") from exc
    sampler = PatchSampler.from_folder(cfg.train_dir, cfg.scale, cfg.patch_size, cfg.max_images)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    np_rng = np.random.default_rng(cfg.seed)

    interactive = sys.stderr.isatty()
    console = None
    if interactive:
        from rich.console import Console

        console = Console(stderr=True)
    log = RunLog(out / "train.log", console)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(ADAM_BETAS[0], cfg.beta2))

    info = {"step": 0, "elapsed": 0.0, "best_psnr": None, "best_step": None, "precision": None, "history": []}
    if cfg.resume and state_path.exists():
        saved = read_state_info(state_path)
        if saved["config"]["model"] != cfg.model or saved["config"]["scale"] != cfg.scale:
            raise BsrError(f"{state_path} is a run of {saved['config']['model']} x{saved['config']['scale']}")
        info.update(load_state(state_path, model, optimizer, np_rng))
        saved_range = float(saved["config"].get("loss_range", 1.0))
        if saved_range != cfg.loss_range:
            log(f"note: this run trains with L1 on 0..{saved_range:g}; --loss-range {cfg.loss_range:g} ignored")
            cfg.loss_range = saved_range
        log(f"resumed {cfg.model} x{cfg.scale} at step {info['step']} ({_fmt_time(info['elapsed'])} trained)")
    else:
        log(f"new run {cfg.model} x{cfg.scale}: {len(sampler)} images from {cfg.train_dir}, out {out}")
        if cfg.init_from:
            copied, skipped, note = init_from_checkpoint(model, cfg.init_from, create_model, cfg.model)
            log(f"init from {cfg.init_from}: copied {len(copied)} tensors ({_group_names(copied)}); "
                f"kept init for {len(skipped)} ({_group_names(skipped)}); {note}")

    precision = info.get("precision") or choose_precision(cfg, model, sampler, device, log)
    info["precision"] = precision
    channels_last = precision == "bf16"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    validator = Set5Validator.find(cfg.data_dir, cfg.scale)
    if validator is None:
        log(f"note: no Set5 under --data-dir {cfg.data_dir!r}: validation skipped")
    log(
        f"device {_device_name(device)}, precision {precision}{'+channels_last' if channels_last else ''}, "
        f"batch {cfg.batch_size}, LR patch {cfg.patch_size}, lr {cfg.lr:g} {cfg.schedule}, "
        f"iters {cfg.iters}, time budget {cfg.time_budget}"
    )

    def done() -> bool:
        return (cfg.iters is not None and info["step"] >= cfg.iters) or (
            cfg.time_budget is not None and info["elapsed"] >= cfg.time_budget
        )

    def save() -> None:
        info["config"] = asdict(cfg)
        save_state(state_path, model, optimizer, info, np_rng)

    signs_then = {"step": info["step"], "signs": binary_signs(model)}

    def flips() -> str:
        now = binary_signs(model)
        frac = flip_fraction(signs_then["signs"], now)
        if frac is None:
            return ""
        info.setdefault("flips", []).append([info["step"], frac])
        text = f"; {100 * frac:.3f} % of binary weights flipped since step {signs_then['step']}"
        signs_then.update(step=info["step"], signs=now)
        return text

    def validate() -> None:
        if validator is None:
            flip_text = flips()
            if flip_text:
                log(f"step {info['step']}{flip_text}")
            return
        psnr = validator.psnr(model, device)
        info["history"].append([info["step"], round(psnr, 4)])
        best = info["best_psnr"] is None or psnr > info["best_psnr"]
        if best:
            info["best_psnr"], info["best_step"] = psnr, info["step"]
            _atomic_save(model_tensors(model), out / BEST_WEIGHTS_FILE, {})
        log(f"step {info['step']}: Set5 PSNR {psnr:.3f} dB{' (best)' if best else ''}{flips()}")

    progress = None
    if interactive and not done():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        total = cfg.iters if cfg.iters is not None else cfg.time_budget
        progress.start()
        task = progress.add_task(f"{cfg.model} x{cfg.scale}", total=total, completed=0, stats="")
    model.train()
    loss_window: list[float] = []
    t_last, step_last = time.perf_counter(), info["step"]
    try:
        while not done():
            t0 = time.perf_counter()
            lr_now = lr_at(cfg, info["step"], run_progress(cfg, info["step"], info["elapsed"]))
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            lr_b, hr_b = sampler.sample(cfg.batch_size, np_rng)
            loss = train_step(
                model, optimizer, to_tensor(lr_b, device, channels_last), to_tensor(hr_b, device, channels_last),
                device, precision, cfg.loss_range,
            )
            if not math.isfinite(loss):
                raise BsrError(f"loss became {loss} at step {info['step']}; try a lower --lr")
            info["step"] += 1
            info["elapsed"] += time.perf_counter() - t0
            info.setdefault("losses", []).append(round(loss, 6))
            info["losses"] = info["losses"][-1000:]
            loss_window.append(loss)
            step = info["step"]
            if step % cfg.log_every == 0 or done():
                now = time.perf_counter()
                its = (step - step_last) / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                remaining = []
                if cfg.iters is not None:
                    remaining.append((cfg.iters - step) / max(its, 1e-9))
                if cfg.time_budget is not None:
                    remaining.append(cfg.time_budget - info["elapsed"])
                log(
                    f"step {step}{'/' + str(cfg.iters) if cfg.iters else ''} loss {np.mean(loss_window):.5f} "
                    f"lr {lr_now:.3g} {its:.2f} it/s eta {_fmt_time(min(remaining))}",
                    echo=not interactive,
                )
                loss_window = []
            if cfg.val_every and step % cfg.val_every == 0:
                validate()
            if step % cfg.save_every == 0:
                save()
            if progress is not None:
                done_units = step if cfg.iters is not None else info["elapsed"]
                progress.update(task, completed=done_units, stats=f"loss {loss:.4f} lr {lr_now:.2g}")
    finally:
        if progress is not None:
            progress.stop()
    if not info["history"] or info["history"][-1][0] != info["step"]:
        validate()
    save()
    return finalize(cfg, model, info, device, precision, len(sampler), log, create_model)


def finalize(cfg, model, info, device, precision, n_images, log, create_model) -> dict:
    """Write final.safetensors, best.safetensors (packed) and summary.json."""
    out = Path(cfg.out_dir)
    rec = recipe(cfg, info, device, precision, n_images)
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    packed = _pack(model, out / "final.safetensors", cfg, rec, log)
    best_path = out / BEST_WEIGHTS_FILE
    if packed and best_path.exists():
        best_model = create_model(cfg.model, cfg.scale)
        best_model.load_state_dict(load_file(str(best_path)))
        best_rec = dict(rec, iterations=info["best_step"], note=f"best Set5 checkpoint of a {info['step']}-iteration run")
        _pack(best_model.eval(), out / "best.safetensors", cfg, best_rec, log)
    summary = {
        "model": cfg.model,
        "scale": cfg.scale,
        "recipe": rec,
        "set5_history": info["history"],
        "final": str(out / "final.safetensors") if packed else None,
        "best": str(out / "best.safetensors") if packed and best_path.exists() else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(
        f"done: {info['step']} iterations in {_fmt_time(info['elapsed'])}; best Set5 "
        f"{info['best_psnr'] if info['best_psnr'] is None else round(info['best_psnr'], 3)} dB at step {info['best_step']}"
    )
    log.close()
    return summary
