"""Registry of the SR benchmark datasets and where their HR images come from.

``resolve_dataset(name, data_dir)`` returns the sorted HR image paths of a dataset, looking in order at:

1. ``data_dir`` (the ``--data-dir`` flag) or ``$BSR_DATA_DIR``: a folder holding ``<Name>/`` subfolders of HR
   images (``../shared/datasets/benchmark`` has this layout);
2. the cache, ``$BSR_CACHE_DIR/datasets/<Name>/`` or ``platformdirs.user_cache_dir("bsr")/datasets/<Name>/``;
3. a download of the public archive into the cache with ``bsr_cli.files.download`` (the downloader weights use:
   resume, size + sha256 check, atomic rename, lock), extracted into a temporary folder then renamed, unless
   offline (``bsr_cli.files.is_offline``).

Checksums: nothing is downloaded unverified. An entry needs a pinned ``sha256`` (and ``bytes``) of its
archive; the sources publish none that bsr could check when this registry was written, so every ``sha256``
is ``None`` and such a dataset is refused with a one-line reason (exit code 3) that says where to put the
images by hand. Pin a value measured on a trusted copy to enable the download; the image count is checked too.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bsr_cli import files
from bsr_cli.errors import BsrError, DownloadError
from bsr_cli.files import cache_root, is_image_name, list_images  # noqa: F401  (re-exported for callers)

_HF = "https://huggingface.co/datasets/eugenesiow/{repo}/resolve/main/data/{repo}_HR.tar.gz"


@dataclass(frozen=True)
class DatasetInfo:
    """One benchmark: canonical folder name, expected HR image count, public archive URL, its pinned sha256
    (None: not pinned, so never downloaded) and byte size."""

    name: str
    count: int
    url: str
    sha256: str | None
    aliases: tuple[str, ...] = ()
    note: str = ""
    bytes: int | None = None


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


def _find_subfolder(root: Path, info: DatasetInfo) -> Path | None:
    """``root/<Name>`` matched case-insensitively against the name and its aliases."""
    if not root.is_dir():
        return None
    wanted = {info.name.lower(), *(a.lower() for a in info.aliases)}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            return child
    return None


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
    hint = (f"put its HR images in {cached}, or pass --data-dir DIR (or set BSR_DATA_DIR) "
            "to a folder holding <Name>/ subfolders of HR images")
    if files.is_offline():
        raise DownloadError(f"dataset {info.name} is not available offline (BSR_OFFLINE is set): {hint}")
    if not info.sha256:
        raise DownloadError(f"dataset {info.name} has no pinned sha256, so bsr will not download {info.url} "
                            f"unverified: {hint}")
    download_dataset(info, cached)
    return _nonempty(cached, info)


def _nonempty(folder: Path, info: DatasetInfo) -> list[Path]:
    images = list_images(folder)
    if not images:
        raise BsrError(f"dataset {info.name}: no images in {folder}")
    return images


def download_dataset(info: DatasetInfo, dest: Path) -> None:
    """Download ``info.url`` (verified against ``info.sha256``) and install its HR images flat into ``dest``
    (extraction into a temporary folder, then one rename). Refused without a pinned sha256."""
    archive = dest.parent / f"{info.name}{_archive_suffix(info.url)}"
    files.download([info.url], archive, info.sha256, info.bytes, label=f"dataset {info.name}")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{info.name}."))
    try:
        extracted = tmp / "x"
        try:
            _extract(archive, extracted)
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise BsrError(f"dataset {info.name}: cannot extract {archive} ({' '.join(str(exc).split())}); "
                           "delete it and run again") from None
        images = tmp / "images"
        images.mkdir()
        for p in sorted(extracted.rglob("*")):
            if p.is_file() and is_image_name(p) and not p.name.startswith("."):
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
