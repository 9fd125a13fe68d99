"""Registry of the SR benchmark datasets and where their HR images come from.

``resolve_dataset(name, data_dir)`` returns the sorted HR image paths of a dataset, looking in order at:

1. ``data_dir`` (the ``--data-dir`` flag) or ``$BSR_DATA_DIR``: a folder holding ``<Name>/`` subfolders of HR
   images (``../shared/datasets/benchmark`` has this layout);
2. the cache, ``$BSR_CACHE_DIR/datasets/<Name>/`` or ``platformdirs.user_cache_dir("bsr")/datasets/<Name>/``;
3. a download of the public archive into the cache (rich progress bar on stderr; ``.part`` file then rename;
   extraction into a temporary folder then rename), unless ``BSR_OFFLINE=1``.

Checksums: the archives' sha256 were not available when this registry was written, so ``sha256`` is ``None``
and a download is verified by its image count; fill in a value to have it checked.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bsr_cli.errors import BsrError
from bsr_cli.imageio import IMAGE_EXTENSIONS

_HF = "https://huggingface.co/datasets/eugenesiow/{repo}/resolve/main/data/{repo}_HR.tar.gz"


@dataclass(frozen=True)
class DatasetInfo:
    """One benchmark: canonical folder name, expected HR image count, public archive URL and its sha256."""

    name: str
    count: int
    url: str
    sha256: str | None
    aliases: tuple[str, ...] = ()
    note: str = ""


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("Set5", 5, _HF.format(repo="Set5"), None, note="Bevilacqua et al. BMVC 2012"),
        DatasetInfo("Set14", 14, _HF.format(repo="Set14"), None, note="Zeyde et al. 2010"),
        DatasetInfo(
            "B100", 100, _HF.format(repo="BSD100"), None, aliases=("BSD100",),
            note="BSDS300 test split (Martin et al. ICCV 2001)",
        ),
        DatasetInfo("Urban100", 100, _HF.format(repo="Urban100"), None, note="Huang et al. CVPR 2015"),
        DatasetInfo(
            "Manga109", 109, _HF.format(repo="Manga109"), None,
            note="Matsui et al. 2017; academic-use licence; mirror URL not verified",
        ),
        DatasetInfo(
            "DIV2K-val", 100, "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", None,
            aliases=("DIV2K", "DIV2K_valid", "DIV2K-valid"), note="Agustsson & Timofte CVPRW 2017, images 0801-0900",
        ),
    ]
}


def dataset_names() -> list[str]:
    """Canonical dataset names, in registry order."""
    return list(DATASETS)


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by name or alias, case-insensitively; unknown names list the valid ones."""
    key = name.strip().lower()
    for info in DATASETS.values():
        if key == info.name.lower() or key in (a.lower() for a in info.aliases):
            return info
    raise BsrError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")


def cache_root() -> Path:
    """``$BSR_CACHE_DIR`` or ``platformdirs.user_cache_dir("bsr")``."""
    env = os.environ.get("BSR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bsr"))


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, sorted by name); hidden files are skipped."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _find_subfolder(root: Path, info: DatasetInfo) -> Path | None:
    """``root/<Name>`` matched case-insensitively against the name and its aliases."""
    if not root.is_dir():
        return None
    wanted = {info.name.lower(), *(a.lower() for a in info.aliases)}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    return None


def _offline() -> bool:
    return os.environ.get("BSR_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def resolve_dataset(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Paths of the HR images of dataset ``name`` (see the module docstring for the search order)."""
    info = get_dataset(name)
    root = data_dir if data_dir is not None else os.environ.get("BSR_DATA_DIR") or None
    if root is not None:
        root = Path(root).expanduser()
        folder = _find_subfolder(root, info)
        if folder is None:
            raise BsrError(
                f"dataset {info.name} not found: no {info.name}/ folder in {root} "
                "(--data-dir / BSR_DATA_DIR must hold <Name>/ subfolders of HR images)"
            )
        return _nonempty(folder, info)
    cached = cache_root() / "datasets" / info.name
    if cached.is_dir():
        return _nonempty(cached, info)
    if _offline():
        raise BsrError(
            f"dataset {info.name} is not available offline (BSR_OFFLINE=1): "
            "pass --data-dir DIR or set BSR_DATA_DIR to a folder holding <Name>/ subfolders of HR images"
        )
    try:
        download_dataset(info, cached)
    except BsrError:
        raise
    except Exception as exc:  # network, archive, disk errors
        raise BsrError(
            f"cannot get dataset {info.name} ({' '.join(str(exc).split()) or type(exc).__name__}); "
            "pass --data-dir DIR or set BSR_DATA_DIR to a folder holding <Name>/ subfolders of HR images"
        ) from None
    return _nonempty(cached, info)


def _nonempty(folder: Path, info: DatasetInfo) -> list[Path]:
    images = list_images(folder)
    if not images:
        raise BsrError(f"dataset {info.name}: no images in {folder}")
    return images


def download_dataset(info: DatasetInfo, dest: Path) -> None:
    """Download ``info.url`` and install its HR images flat into ``dest`` (atomic rename of a temp folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f"{info.name}{_archive_suffix(info.url)}"
    if not archive.exists():
        _download(info.url, archive)
    if info.sha256 is not None:
        digest = _sha256(archive)
        if digest != info.sha256:
            archive.unlink()
            raise BsrError(f"dataset {info.name}: checksum mismatch for {info.url} (got {digest})")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{info.name}."))
    try:
        extracted = tmp / "x"
        _extract(archive, extracted)
        images = tmp / "images"
        images.mkdir()
        for p in sorted(extracted.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
                p.rename(images / p.name)
        count = len(list_images(images))
        if count != info.count:
            raise BsrError(f"dataset {info.name}: archive {info.url} holds {count} images, expected {info.count}")
        os.replace(images, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    archive.unlink(missing_ok=True)


def _archive_suffix(url: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if url.endswith(suffix):
            return suffix
    return ".archive"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest.part`` with a progress bar on stderr, then rename to ``dest``."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    part = dest.with_name(dest.name + ".part")
    console = Console(file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with Progress(
                TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                console=console, disable=not console.is_terminal, transient=True,
            ) as progress:
                task = progress.add_task(dest.name, total=total)
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    progress.advance(task, len(block))
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest``, refusing members that would escape it."""
    dest.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (dest / member).resolve().is_relative_to(dest.resolve()):
                    raise BsrError(f"unsafe path {member!r} in archive {archive}")
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
