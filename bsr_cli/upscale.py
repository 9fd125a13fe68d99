"""Upscaling files and folders: input discovery, output naming, per-image fidelity, the batch loop.

One image (``upscale_image``):

* RGB goes through the model (tiled, see ``bsr_cli.tiling``); grayscale is replicated to RGB, run, and the three
  output channels averaged back to one, so gray stays gray (L -> L, LA -> LA, I;16 -> 16-bit gray).
* Alpha is upscaled separately: ``bicubic`` (default; Pillow bicubic on the alpha plane alone) or ``model``
  (alpha replicated to RGB and run through the model, 2x the cost) and written back; it is never dropped.
  RGB under transparent pixels is upscaled as stored (not premultiplied), so nothing of it is lost.
* 16-bit in -> 16-bit out (the model sees value / 65535); formats that cannot hold 16 bits (JPEG, WebP, BMP)
  get 8 bits with a note. Palette and CMYK are turned into RGB(A) by ``imageio.read_image``; EXIF orientation
  is applied on reading; the ICC profile and the remaining EXIF are copied to the output.

A batch (``run_batch``): every input is planned first (output path, collisions, existing outputs), then each
image is read, upscaled and written atomically (``imageio.write_image``: temp file + rename), so an interrupted
or failed image leaves no partial file and ``--skip-existing`` can resume. One bad file never stops the batch;
each failure is recorded once with its reason.

Output location (what users of Real-ESRGAN/ncnn expect, made safe):

* ``-o FILE.ext`` with one input: exactly that file.
* ``-o DIR``: ``DIR/<stem><suffix>.<ext>``; files found in a folder keep their sub-folder under ``DIR``.
* no ``-o``: allowed only for files named one by one; each output goes next to its input. A folder or glob
  needs ``-o`` (writing into the folder being scanned would feed outputs back in on the next run).
* An output path equal to its input, or two inputs mapping to one output, is a failure for that file.
"""
from __future__ import annotations

import glob
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bsr_cli import tiling
from bsr_cli.errors import BsrError

#: extensions picked up when scanning folders (explicitly named files are always tried)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
#: output formats that keep 16 bits per channel / an alpha channel
HIGH_DEPTH_EXTS = {".png", ".tif", ".tiff"}
ALPHA_EXTS = {".png", ".webp", ".tif", ".tiff"}
EXT_CHOICES = ("auto", "png", "jpg", "webp")
ALPHA_CHOICES = ("bicubic", "model")


class InputError(Exception):
    """A per-file failure (unreadable, would overwrite, exists): recorded, the batch goes on."""


@dataclass
class Job:
    """One planned input -> output."""

    input: Path
    output: Path | None = None
    status: str = "pending"  # pending | done | skipped | failed
    reason: str = ""
    seconds: float = 0.0
    input_size: list[int] = field(default_factory=list)  # [w, h]
    output_size: list[int] = field(default_factory=list)
    mode: str = ""
    bit_depth: int = 0
    tiling: dict = field(default_factory=dict)  # tile, tile_pad, tiles, passes, converged
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["input"], d["output"] = str(self.input), str(self.output) if self.output else None
        return d


@dataclass
class Settings:
    """Everything that decides what one image becomes."""

    scale: int
    tile: int = 0
    tile_pad: int | None = None
    suffix: str | None = None
    ext: str = "auto"
    alpha: str = "bicubic"
    skip_existing: bool = False
    force: bool = False

    @property
    def suffix_text(self) -> str:
        return f"_x{self.scale}" if self.suffix is None else self.suffix


# --------------------------------------------------------------------------- discovery and planning


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def collect_inputs(specs: Iterable[str], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], list[Job], list[str]]:
    """Expand files, folders and globs into (file, base folder) pairs.

    Returns (pairs, failed jobs for inputs that do not exist, notes about skipped non-image files).
    The base folder is the scanned folder for files found inside one (so sub-folders can be mirrored), else
    the file's own folder. ``exclude`` (the output folder) is never scanned.
    """
    pairs: list[tuple[Path, Path]] = []
    failed: list[Job] = []
    notes: list[str] = []
    seen: set[Path] = set()
    excl = exclude.resolve() if exclude else None

    def add(path: Path, base: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            pairs.append((path, base))

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            walker = sorted(p.rglob("*") if recursive else p.iterdir())
            for f in walker:
                if excl and (f.resolve() == excl or excl in f.resolve().parents):
                    continue
                if f.is_dir():
                    continue
                if f.suffix.lower() in IMAGE_EXTS:
                    add(f, p)
                elif not f.name.startswith("."):
                    notes.append(f"skipped {f}: not an image file ({f.suffix or 'no extension'})")
        elif p.exists():
            add(p, p.parent)
        elif _is_glob(spec):
            matches = sorted(glob.glob(spec, recursive=recursive))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                failed.append(Job(Path(spec), status="failed", reason="no file matches this pattern"))
            for f in files:
                add(f, f.parent)
        else:
            failed.append(Job(p, status="failed", reason="no such file or folder"))
    return pairs, failed, notes


def output_ext(input_path: Path, requested: str, has_alpha: bool = False) -> str:
    """The output extension (with dot) for ``--ext``: ``auto`` keeps the input's format (BMP/TIFF included).

    An image with alpha asked to become JPEG is written as PNG instead (JPEG has no alpha); ``plan`` notes it.
    """
    ext = input_path.suffix.lower() if requested == "auto" else "." + requested.lower().lstrip(".")
    if ext == ".jpeg":
        ext = ".jpg"
    if ext not in IMAGE_EXTS:
        ext = ".png"
    if has_alpha and ext not in ALPHA_EXTS:
        ext = ".png"
    return ext


def plan_outputs(pairs: list[tuple[Path, Path]], out: Path | None, settings: Settings,
                 named_one_by_one: bool) -> list[Job]:
    """Decide every output path and fail the inputs that would overwrite an input or collide."""
    single_file_out = out is not None and out.suffix.lower() in IMAGE_EXTS and not out.is_dir()
    if single_file_out and len(pairs) > 1:
        raise BsrError(f"-o {out} is a file name but {len(pairs)} inputs were given: pass a folder to -o")
    if out is None and not named_one_by_one:
        raise BsrError("give -o OUT_DIR when upscaling a folder or a glob (outputs would land among the inputs)")
    inputs = {p.resolve() for p, _ in pairs}
    taken: dict[Path, Path] = {}
    jobs = []
    for path, base in pairs:
        job = Job(path)
        jobs.append(job)
        if single_file_out:
            target = out
        else:
            name = f"{path.stem}{settings.suffix_text}{output_ext(path, settings.ext)}"
            if out is None:
                target = path.parent / name
            else:
                try:
                    rel = path.parent.resolve().relative_to(base.resolve())
                except ValueError:
                    rel = Path()
                target = out / rel / name
        job.output = target
        key = target.resolve()
        if key in inputs:
            job.status, job.reason = "failed", f"output {target} is an input file; refusing to overwrite it"
        elif key in taken:
            job.status, job.reason = "failed", f"output {target} collides with the output of {taken[key]}"
        else:
            taken[key] = path
    return jobs


# --------------------------------------------------------------------------- one image


def _to_rgb(pixels: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W), (H, W, 1) or (H, W, 3) -> (H, W, 3) and whether the input was gray."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2), True
    return pixels, False


def resize_alpha_bicubic(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic (Pillow) upscaling of one alpha plane, uint8 or uint16 kept."""
    from PIL import Image

    h, w = alpha.shape[:2]
    size = (w * scale, h * scale)
    plane = alpha.reshape(h, w)
    if plane.dtype == np.uint8:
        return np.asarray(Image.fromarray(plane, mode="L").resize(size, Image.BICUBIC))
    img = Image.fromarray(plane.astype(np.float32), mode="F").resize(size, Image.BICUBIC)
    top = float(np.iinfo(plane.dtype).max) if np.issubdtype(plane.dtype, np.integer) else 1.0
    out = np.clip(np.asarray(img), 0, top)
    return np.round(out).astype(plane.dtype) if np.issubdtype(plane.dtype, np.integer) else out


def upscale_image(model: Callable, pixels: np.ndarray, alpha: np.ndarray | None, scale: int, tile: int,
                  tile_pad: int, alpha_mode: str = "bicubic",
                  progress: Callable[[int, int], None] | None = None,
                  report: dict | None = None, global_means: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale colour (or gray) pixels and the alpha plane; dtypes and channel counts are kept.

    Gray is replicated to RGB and the clipped output channels averaged back before rounding (as ``bsr eval``).
    ``report`` receives the tiling facts (tiles, passes, converged) of the colour pass.
    """
    rgb, gray = _to_rgb(pixels)
    out = tiling.upscale_array(model, rgb, scale, tile, tile_pad, progress=progress, to_gray=gray, report=report,
                               global_means=global_means)
    out_alpha = None
    if alpha is not None:
        plane = alpha.reshape(alpha.shape[0], alpha.shape[1])
        if alpha_mode == "model":
            a3 = np.repeat(plane[:, :, None], 3, axis=2)
            out_alpha = tiling.upscale_array(model, a3, scale, tile, tile_pad, to_gray=True,
                                             global_means=global_means)[..., 0]
        else:
            out_alpha = resize_alpha_bicubic(plane, scale)
    return out, out_alpha


def to_8bit(x: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by rounding value * 255 / 65535."""
    return np.round(x.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def process(job: Job, model: Callable, settings: Settings, tiling_for: Callable[[int, int], tuple[int, int]],
            progress: Callable[[int, int], None] | None = None) -> None:
    """Read, upscale and atomically write one job; sets ``job.status`` (raises nothing for per-file errors)."""
    from bsr_cli import imageio

    t0 = time.perf_counter()
    try:
        if job.output.exists() and not settings.force:
            if settings.skip_existing:
                job.status, job.reason = "skipped", "output exists"
                return
            raise InputError(f"output {job.output} exists (--force overwrites it, --skip-existing skips it)")
        try:
            img = imageio.read_image(job.input)
        except BsrError as exc:  # "cannot read image <path>: why" -> the path is already the row's input
            raise InputError(str(exc).replace(f"image {job.input}:", "image:")) from exc
        except Exception as exc:  # noqa: BLE001 - a broken file must not stop the batch
            raise InputError(f"cannot read image: {type(exc).__name__}: {exc}") from exc
        pixels, alpha = img.pixels, img.alpha
        h, w = pixels.shape[:2]
        job.input_size, job.mode, job.bit_depth = [w, h], str(img.mode), int(img.bit_depth)
        out_path = job.output
        if alpha is not None and out_path.suffix.lower() not in ALPHA_EXTS:
            out_path = out_path.with_suffix(".png")
            job.notes.append(f"{job.output.suffix} cannot hold alpha: writing {out_path.name}")
            job.output = out_path
            if out_path.exists() and not settings.force:
                if settings.skip_existing:
                    job.status, job.reason = "skipped", "output exists"
                    return
                raise InputError(f"output {out_path} exists (--force overwrites it, --skip-existing skips it)")
        tile, pad = tiling_for(h, w)
        report: dict = {}
        out, out_alpha = upscale_image(model, pixels, alpha, settings.scale, tile, pad, settings.alpha, progress,
                                       report, getattr(tiling_for, "global_means", None))
        job.tiling = {"tile": tile, "tile_pad": pad, **report}
        if not report.get("converged", True):
            job.notes.append(f"global means did not settle in {report.get('passes')} tiled passes: "
                             "output approximates the untiled one (a larger --tile helps)")
        bit_depth = int(img.bit_depth)
        if bit_depth > 8 and out_path.suffix.lower() not in HIGH_DEPTH_EXTS:
            out = to_8bit(out)
            out_alpha = to_8bit(out_alpha) if out_alpha is not None else None
            job.notes.append(f"{out_path.suffix} holds 8 bits per channel: 16-bit input written as 8-bit")
            bit_depth = 8
        out_path.parent.mkdir(parents=True, exist_ok=True)
        imageio.write_image(out_path, out, alpha=out_alpha, bit_depth=bit_depth,
                            icc_profile=img.icc_profile, exif=img.exif)
        job.output_size = [out.shape[1], out.shape[0]]
        job.status = "done"
    except InputError as exc:
        job.status, job.reason = "failed", str(exc)
    except MemoryError:
        job.status, job.reason = "failed", "out of memory: try a smaller --tile"
    except OSError as exc:
        job.status, job.reason = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        job.seconds = round(time.perf_counter() - t0, 3)


@dataclass
class Engine:
    """A loaded model: ``model`` is called on tiles; ``torch_model`` (same architecture) is probed for tiling."""

    name: str
    scale: int
    backend: str
    threads: int
    model: Callable
    torch_model: Callable
    checkpoint: str | None = None
    sha256: str | None = None


def load_engine(model_name: str | None, scale: int, checkpoint: Path | None, backend: str,
                threads: int | None) -> Engine:
    """Load a model for ``bsr upscale``: the manifest default for ``scale`` unless ``model_name`` is given.

    ``checkpoint``: a packed safetensors file, or an ``.onnx`` file from ``bsr export`` (``--backend onnx``).
    Torch (and onnxruntime, through ``torch.get_num_threads()``) use ``threads`` CPU threads.
    """
    import torch

    from bsr_cli import weights
    from bsr_cli.models import create_model

    threads = int(threads) if threads else default_threads()
    if threads < 1:
        raise BsrError("--threads must be at least 1")
    torch.set_num_threads(threads)
    if backend not in ("torch", "onnx", "bitpack"):
        raise BsrError(f"--backend must be torch, onnx or bitpack, got {backend!r}")
    if backend == "onnx":
        import bsr_cli.export_onnx  # noqa: F401  (registers the onnx backend)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BsrError(f"checkpoint {checkpoint} does not exist")
    sha = weights.sha256_file(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx":
        if backend != "onnx":
            raise BsrError(f"{checkpoint} is an ONNX file: add --backend onnx")
        from bsr_cli.export_onnx import OnnxModel

        model = OnnxModel(checkpoint, threads=threads)
        name = model_name or model.metadata.get("model")
        if not name or int(model.metadata.get("scale", scale)) != scale:
            raise BsrError(f"{checkpoint} is a x{model.metadata.get('scale')} model, not x{scale}"
                           if name else f"{checkpoint} does not record its model: pass --model")
        return Engine(name, scale, backend, threads, model, create_model(name, scale).eval(), str(checkpoint), sha)
    name = model_name
    if name is None and checkpoint is None:
        name = weights.default_model(scale)
        if name is None:
            raise BsrError(f"no pretrained weights at x{scale} yet: pass --model NAME --checkpoint FILE")
    model = weights.load_model(name, scale, checkpoint=checkpoint, backend=backend)
    if isinstance(model, torch.nn.Module):
        model.eval()
        probe_net = model
    else:
        probe_net = create_model(getattr(model, "model_name", None) or name, scale).eval()
    if name is None:
        from bsr_cli.checkpoint import read_metadata

        name = read_metadata(Path(checkpoint)).get("model")
    if sha is None:
        try:
            sha = weights.find_entry(name, scale).get("sha256")
        except BsrError:
            sha = None
    return Engine(name, scale, backend, threads, model, probe_net, str(checkpoint) if checkpoint else None, sha)


def make_tiling(model: Callable, probe_source: Callable, scale: int, tile: int,
                tile_pad: int | None) -> tuple[Callable[[int, int], tuple[int, int]], tiling.ModelProbe]:
    """A function (h, w) -> (tile, tile_pad) for this model; the probe runs once on ``probe_source``
    (the torch model, also for onnx/bitpack backends whose graphs cannot be traced)."""
    probe = tiling.probe_model(probe_source)

    def tiling_for(h: int, w: int) -> tuple[int, int]:
        t, p, _ = tiling.resolve_tiling(model, scale, h, w, tile, tile_pad, probe=probe)
        return t, p

    import torch

    # whole-image means can be injected only into a torch module (not an onnxruntime session)
    tiling_for.global_means = probe.has_global_means and isinstance(model, torch.nn.Module)
    return tiling_for, probe


def run_batch(jobs: list[Job], model: Callable, settings: Settings, tiling_for,
              on_start: Callable[[Job], None] | None = None,
              on_tile: Callable[[int, int], None] | None = None,
              on_done: Callable[[Job], None] | None = None) -> list[Job]:
    """Process every pending job in order; the callbacks drive progress display."""
    for job in jobs:
        if job.status != "pending":
            if on_done:
                on_done(job)
            continue
        if on_start:
            on_start(job)
        process(job, model, settings, tiling_for, on_tile)
        if on_done:
            on_done(job)
    return jobs


def summary(jobs: list[Job]) -> dict[str, int]:
    """Counts per status."""
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    return counts


def default_threads() -> int:
    """Threads used when ``--threads`` is not given: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
