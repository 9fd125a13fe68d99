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

import errno
import glob
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bsr_cli import tiling
from bsr_cli.errors import BsrError, os_reason
from bsr_cli.files import IMAGE_EXTENSIONS, is_image_name

#: extensions picked up when scanning folders (explicitly named files are always tried)
IMAGE_EXTS = set(IMAGE_EXTENSIONS)
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
    latency_ms: float | None = None  # the model (all tiles, passes, alpha) for this image; no decode/encode
    megapixels_per_s: float | None = None  # output megapixels per second of latency_ms
    model_passes: int = 0  # forward passes over the image: 1, or 2 with --alpha model
    reference: str | None = None  # HR image matched by stem (--reference)
    psnr: float | None = None  # vs the reference, bsr eval's protocol (Y, crop = scale)
    ssim: float | None = None
    cost: dict = field(default_factory=dict)  # Eq. 7 ops/flops/bops/params of one pass at this input size
    compare: dict = field(default_factory=dict)  # --compare: sheet path, panels, crop [y, x, side]

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
    compare: Path | None = None  # --compare DIR: a bicubic | bsr | reference sheet per image

    @property
    def suffix_text(self) -> str:
        return f"_x{self.scale}" if self.suffix is None else self.suffix


# --------------------------------------------------------------------------- discovery and planning


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def collect_inputs(specs: Iterable[str], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], list[Job], list[str]]:
    """Expand files, folders and globs into (file, base folder) pairs.

    Returns (pairs, failed jobs, notes). Failed jobs: inputs that do not exist, folders that cannot be
    listed, image-named entries that cannot be opened (a looping or dangling symbolic link, no permission).
    Notes: skipped non-image files, and non-image entries or folder links that were not followed. Nothing
    here raises for one bad entry, so the good images are still processed. The base folder is the scanned
    folder for files found inside one (so sub-folders can be mirrored), else the file's own folder.
    ``exclude`` (the output folder) is never scanned; an output folder equal to a scanned folder is a usage
    error (outputs would overwrite or mix with the inputs).
    """
    pairs: list[tuple[Path, Path]] = []
    failed: list[Job] = []
    notes: list[str] = []
    seen: set[str] = set()
    excl = os.path.realpath(exclude) if exclude else None

    def add(path: Path, base: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            pairs.append((path, base))

    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            if excl and os.path.realpath(p) == excl:
                raise BsrError(f"-o {exclude} is the input folder {p} itself: give another output folder "
                               "(outputs must not overwrite or mix with the inputs)")
            inside_out = excl and os.path.realpath(p).startswith(excl.rstrip(os.sep) + os.sep)
            for f, problem, fatal in _walk(p, recursive, None if inside_out else excl):
                if problem and (fatal or is_image_name(f)):
                    failed.append(Job(f, status="failed", reason=problem))
                elif problem:
                    notes.append(f"skipped {f}: {problem}")
                elif is_image_name(f):
                    add(f, p)
                elif not f.name.startswith("."):
                    notes.append(f"skipped {f}: not a scanned image type ({f.suffix or 'no extension'})")
        elif p.exists():
            add(p, p.parent)
        elif os.path.islink(p):
            failed.append(Job(p, status="failed", reason=_link_problem(p)))
        elif _is_glob(spec):
            matches = sorted(glob.glob(spec, recursive=recursive))
            found = [Path(m) for m in matches if Path(m).is_file()]
            if not found:
                failed.append(Job(Path(spec), status="failed", reason="no file matches this pattern"))
            for f in found:
                add(f, f.parent)
        else:
            failed.append(Job(p, status="failed", reason="no such file or folder"))
    return pairs, failed, notes


def _link_problem(path: Path) -> str:
    """Why a symbolic link cannot be opened, in words."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that loops (it points to itself); fix or remove the link"
        if exc.errno == errno.ENOENT:
            return f"a symbolic link to something missing ({os.readlink(path)}); fix or remove the link"
        return f"cannot open this link: {os_reason(exc)}"
    return "cannot open this link"


def _walk(root: Path, recursive: bool, exclude: str | None) -> list[tuple[Path, str | None, bool]]:
    """Every non-folder entry under ``root`` as (path, problem or None, problem fails the batch), sorted.

    Symbolic links to folders are followed once: a folder already scanned (a link loop) is noted and not
    entered again. An unlistable folder is a failure (its images would be lost); an entry that cannot even
    be stat'ed (a looping or dangling link) is reported and the walk goes on.
    """
    out: list[tuple[Path, str | None, bool]] = []
    try:
        st = os.stat(root)
    except OSError as exc:
        return [(root, f"cannot list this folder: {os_reason(exc)}", True)]
    visited = {(st.st_dev, st.st_ino)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            out.append((folder, f"cannot list this folder: {os_reason(exc)}; check its permissions", True))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # follow links; a looping link raises
            except OSError:
                out.append((path, _link_problem(path), False))
                continue
            if is_dir:
                real = os.path.realpath(path)
                if not recursive or (exclude and (real == exclude or real.startswith(exclude.rstrip(os.sep) + os.sep))):
                    continue
                try:
                    sub = os.stat(path)
                except OSError as exc:
                    out.append((path, f"cannot list this folder: {os_reason(exc)}", True))
                    continue
                if (sub.st_dev, sub.st_ino) in visited:
                    out.append((path, "a link to a folder already scanned (a link loop), not followed again", False))
                    continue
                visited.add((sub.st_dev, sub.st_ino))
                stack.append(path)
            elif is_file:
                out.append((path, None, False))
            elif entry.is_symlink():
                out.append((path, _link_problem(path), False))
            else:
                out.append((path, "not a regular file (a device, pipe or socket)", False))
    return sorted(out, key=lambda item: item[0].parts)


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
                  report: dict | None = None, global_means: bool | None = None,
                  layout: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Upscale colour (or gray) pixels and the alpha plane; dtypes and channel counts are kept.

    Gray is replicated to RGB and the clipped output channels averaged back before rounding (as ``bsr eval``).
    ``report`` receives the tiling facts (tiles, passes, converged) of the colour pass. ``layout`` (from
    ``bsr_cli.streaming.plan``): LR part once, HR part in bands, instead of tiling the whole net.
    """
    rgb, gray = _to_rgb(pixels)

    def run(arr, to_gray, rep=None, prog=None):
        if layout is not None:
            from bsr_cli import streaming

            return streaming.upscale_array(model, arr, scale, layout, progress=prog, report=rep, to_gray=to_gray)
        return tiling.upscale_array(model, arr, scale, tile, tile_pad, progress=prog, to_gray=to_gray, report=rep,
                                    global_means=global_means)

    out = run(rgb, gray, report, progress)
    out_alpha = None
    if alpha is not None:
        plane = alpha.reshape(alpha.shape[0], alpha.shape[1])
        if alpha_mode == "model":
            a3 = np.repeat(plane[:, :, None], 3, axis=2)
            out_alpha = run(a3, True)[..., 0]
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
            raise InputError("cannot read image: the decoder failed on this file; re-save it with another "
                             "program") from exc
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
        t_model = time.perf_counter()
        layout = tiling_for.stream(h, w) if hasattr(tiling_for, "stream") else None
        out, out_alpha = upscale_image(model, pixels, alpha, settings.scale, tile, pad, settings.alpha, progress,
                                       report, getattr(tiling_for, "global_means", None), layout)
        secs = time.perf_counter() - t_model
        job.latency_ms = round(1e3 * secs, 3)
        job.megapixels_per_s = round(out.shape[0] * out.shape[1] / 1e6 / max(secs, 1e-9), 4)
        job.model_passes = 2 if alpha is not None and settings.alpha == "model" else 1
        job.tiling = {**layout, **report} if layout else {"tile": tile, "tile_pad": pad, **report}
        if job.reference:
            score_reference(job, out, settings.scale)
        if settings.compare is not None:
            write_comparison(job, pixels, out, settings)
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
    except OSError as exc:  # creating the output folder, writing the file
        job.status, job.reason = "failed", (f"cannot write {job.output}: {os_reason(exc)}; check that the "
                                            "output folder can be created and written")
    except BsrError as exc:
        job.status, job.reason = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the batch
        detail = " ".join(str(exc).split())[:120] or "no details"
        job.status, job.reason = "failed", f"internal error while upscaling this file ({detail}); please report it"
    finally:
        job.seconds = round(time.perf_counter() - t0, 3)


def match_references(reference: Path, jobs: list[Job]) -> list[str]:
    """Set ``job.reference`` for ``--reference FILE|DIR``: a FILE serves a single input; in a DIR the HR image
    with the input's stem (``baby.png`` for ``baby.png`` / ``baby.jpg``). Returns notes for inputs left unmatched."""
    from bsr_cli.files import list_images

    pending = [j for j in jobs if j.status == "pending"]
    if reference.is_file():
        if len(pending) > 1:
            raise BsrError(f"--reference {reference} is one file but {len(pending)} inputs were given: pass a folder")
        for j in pending:
            j.reference = str(reference)
        return []
    if not reference.is_dir():
        raise BsrError(f"--reference {reference} does not exist")
    by_stem: dict[str, Path] = {}
    for path in list_images(reference):
        by_stem.setdefault(path.stem, path)
    notes = []
    for j in pending:
        ref = by_stem.get(j.input.stem)
        if ref is None:
            notes.append(f"no reference for {j.input.name} in {reference} (matched by file stem)")
        else:
            j.reference = str(ref)
    return notes


def model_cost(net, height: int, width: int, cache: dict | None = None) -> dict:
    """Eq. 7 (EBSR) cost of one forward pass of ``net`` (the fp32 torch twin) at LR ``height`` x ``width``:
    OPs = FLOPs + BOPs/64, Params = Params_fp + Params_bi/32 (``bsr_cli.profiling.profile_model``)."""
    key = (height, width)
    if cache is not None and key in cache:
        return cache[key]
    from bsr_cli.profiling import profile_model

    with tiling.one_thread():
        r = profile_model(net, (height, width))
    cost = {k: r[k] for k in ("ops", "flops", "bops", "params", "params_fp", "params_bi")}
    if cache is not None:
        cache[key] = cost
    return cost


def score_reference(job: Job, out: np.ndarray, scale: int) -> None:
    """PSNR/SSIM of the upscaled pixels against ``job.reference`` with ``bsr eval``'s code (``evaluate.load_hr``,
    ``protocol.modcrop``, ``evaluate.score_sr``: Y channel, crop = scale). 16-bit output is compared as
    round(value / 257), as eval reads 16-bit HR. A reference that cannot be used becomes a note."""
    from bsr_cli import evaluate, protocol

    sr = out if out.dtype == np.uint8 else np.round(out.astype(np.float64) / 257.0).astype(np.uint8)
    sr = sr[..., 0] if sr.shape[2] == 1 else sr
    try:
        hr = protocol.modcrop(evaluate.load_hr(Path(job.reference)), scale)
        if sr.ndim != hr.ndim:  # gray vs colour: compare both as RGB (Y of replicated gray = gray's Y)
            sr, hr = (np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in (sr, hr))
        job.psnr, job.ssim = (round(float(v), 4) for v in evaluate.score_sr(sr, hr, scale))
    except BsrError as exc:
        job.notes.append(f"reference {job.reference} not scored: {exc}")


def write_comparison(job: Job, pixels: np.ndarray, out: np.ndarray, settings: Settings) -> None:
    """``--compare DIR``: write ``DIR/<stem>_compare.png`` (``bsr_cli.compare.sheet``); ``job.compare`` records it."""
    from bsr_cli import compare, evaluate, imageio, protocol

    hr = None
    if job.reference:
        try:
            hr = protocol.modcrop(evaluate.load_hr(Path(job.reference)), settings.scale)
        except BsrError:
            hr = None
    img, layout = compare.sheet(pixels, out, settings.scale, hr)
    path = settings.compare / f"{job.input.stem}_compare.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.write_image(path, img)
    job.compare = {"path": str(path), **layout}


def load_engine(model_name: str | None, scale: int, checkpoint: Path | None, backend: str,
                threads: int | None, float_precision: str = "fp32"):
    """Load a model for ``bsr upscale`` (``bsr_cli.backends.load``): the manifest default for ``scale`` unless
    ``model_name`` is given, on ``backend`` (``auto``: bitpack for binary-activation models, see backends).

    ``checkpoint``: a packed safetensors file, or an ``.onnx`` file from ``bsr export``.
    Returns a ``backends.Loaded`` (name, scale, backend, reason, threads, model, torch_model, checkpoint, sha256).
    """
    from bsr_cli import backends

    engine = backends.load(model_name, scale, checkpoint, backend, threads, float_precision=float_precision)
    if engine.scale != scale:
        raise BsrError(f"{engine.name} is a x{engine.scale} model, not x{scale}")
    return engine


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
    if tile == 0 and tile_pad is None:  # automatic: stream the HR part when the whole image does not fit
        from bsr_cli import streaming

        if streaming.supported(model):
            parts = streaming.probe_parts(probe_source)

            def stream(h: int, w: int) -> dict | None:
                if tiling.auto_tile(probe, scale, h, w, tiling.default_tile_pad(probe)) == (h, w):
                    return None  # one whole-image pass fits
                return streaming.plan(*parts, scale, h, w)

            tiling_for.stream = stream
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


def totals(jobs: list[Job]) -> dict:
    """The run in total over the images done: latency, output megapixels, Eq. 7 OPs (x passes), mean PSNR/SSIM
    over the images that had a reference."""
    done = [j for j in jobs if j.status == "done" and j.latency_ms is not None]
    ms = sum(j.latency_ms for j in done)
    mpx = sum(j.output_size[0] * j.output_size[1] for j in done) / 1e6
    scored = [j for j in done if j.psnr is not None]
    return {
        "images": len(done),
        "latency_ms": round(ms, 3),
        "megapixels": round(mpx, 4),
        "megapixels_per_s": round(mpx / (ms / 1e3), 4) if ms > 0 else None,
        "ops": sum(j.cost.get("ops", 0) * j.model_passes for j in done),
        "scored": len(scored),
        "psnr_mean": round(float(np.mean([j.psnr for j in scored])), 4) if scored else None,
        "ssim_mean": round(float(np.mean([j.ssim for j in scored])), 4) if scored else None,
    }


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
