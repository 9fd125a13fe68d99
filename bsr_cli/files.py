"""Files bsr reads, writes and fetches: image extensions, image listing, atomic writes, sha256, the cache, the
offline rule, and the one downloader used for both weights and datasets.

Only the standard library is imported at module level (rich and platformdirs on first use), so this module
is cheap to import and has no bsr dependency besides ``bsr_cli.errors``.

Rules kept in one place:

* ``BSR_OFFLINE``: offline unless unset, empty, ``0``, ``false``, ``no`` or ``off`` (any other value, e.g.
  ``1``/``yes``/``true``, means offline). Offline, no socket is opened; a missing file fails with its path.
* ``BSR_CACHE_DIR``: the cache root, else ``platformdirs.user_cache_dir("bsr")``.
* ``download``: never without a pinned sha256; ``<dest>.part`` resumed with an HTTP Range request; size and
  sha256 checked before ``os.replace`` into place; an exclusive lock (``<dest>.lock``) so two processes
  fetching one file end with one verified file (the second waits, then finds it done).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bsr_cli.errors import DownloadError, os_reason

try:  # POSIX advisory locks; elsewhere an exclusively created lock file stands in
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: extensions bsr reads as images (folder scans, datasets, training folders) and can write
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

_CHUNK = 1 << 16
_TIMEOUT_S = 30
LOCK_WAIT_S = 600.0


# --------------------------------------------------------------------------------------------- images
def is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name ends in one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, sorted by name); hidden files are skipped."""
    return sorted(p for p in Path(folder).iterdir()
                  if not p.name.startswith(".") and is_image_name(p) and p.is_file())


# --------------------------------------------------------------------------------------------- writing
def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place (no partial file, ever).

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def matches(path: str | os.PathLike, sha256: str, size: int | None = None) -> bool:
    """True when ``path`` is a file of ``size`` bytes (if given) whose sha256 is ``sha256``."""
    path = Path(path)
    if not path.is_file():
        return False
    if size is not None and path.stat().st_size != int(size):
        return False
    return sha256_file(path) == str(sha256).lower()


# --------------------------------------------------------------------------------------------- places
def cache_root() -> Path:
    """``$BSR_CACHE_DIR`` if set, else the platform's user cache dir for bsr (e.g. ~/.cache/bsr)."""
    env = os.environ.get("BSR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bsr"))


def is_offline() -> bool:
    """The one ``BSR_OFFLINE`` rule: offline unless unset/empty/0/false/no/off (read at call time)."""
    return os.environ.get("BSR_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


# --------------------------------------------------------------------------------------------- lock
class FileLock:
    """An exclusive lock on ``<path>.lock`` across processes, waited for up to ``timeout`` seconds.

    POSIX: ``flock`` on the lock file; the holder deletes the file before unlocking, and a waiter that wins
    the lock on a deleted file retries, so two waiters never both think they hold it.
    """

    def __init__(self, path: Path, label: str, timeout: float = LOCK_WAIT_S):
        self.path = Path(str(path) + ".lock")
        self.label = label
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> "FileLock":
        deadline = time.monotonic() + self.timeout
        while True:
            if self._try_once():
                return self
            if time.monotonic() > deadline:
                raise DownloadError(f"another bsr process has been fetching {self.label} for over "
                                    f"{self.timeout:.0f} s: wait for it, or delete {self.path} if none is running")
            time.sleep(0.05)

    def _try_once(self) -> bool:
        if fcntl is None:  # pragma: no cover - Windows
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR)
                return True
            except FileExistsError:
                return False
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed this file after we opened it: lock the new one
            os.close(fd)
            return False
        self.fd = fd
        return True

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


# --------------------------------------------------------------------------------------------- download
class _Progress:
    """A rich progress bar on stderr (only on a terminal, only when asked for)."""

    def __init__(self, enabled: bool, label: str, total: int | None):
        self.bar = None
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def update(self, completed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Corrupt(OSError):
    """The server's data cannot be the expected file (too long, wrong range): the partial file is dropped."""


def _fetch(url: str, part: Path, expected: int | None, progress: _Progress, restarted: bool = False) -> None:
    """Download ``url`` into ``part``, resuming from its current size with an HTTP Range request."""
    if not url.lower().startswith(("http://", "https://")):
        raise _Corrupt("only http(s) URLs are supported")
    start = part.stat().st_size if part.exists() else 0
    if expected is not None and start > expected:
        part.unlink()
        start = 0
    if expected is not None and start == expected:
        return  # complete already; the caller verifies it
    from bsr_cli import __version__

    headers = {"User-Agent": f"bsr/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start and not restarted:  # our partial file does not fit: start over
            part.unlink()
            return _fetch(url, part, expected, progress, restarted=True)
        raise
    with resp:
        status = resp.status or 200
        if start and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise _Corrupt(f"the server answered the resume request with a wrong range {content_range!r}")
            mode = "ab"
        else:
            start, mode = 0, "wb"  # server ignored Range (200): take the whole file
        done = start
        progress.update(done)
        with open(part, mode) as f:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                if expected is not None and done > expected:
                    raise _Corrupt(f"the server sent more than the expected {expected} bytes")
                f.write(chunk)
                progress.update(done)


def _why(exc: BaseException) -> str:
    """A one-line reason for a failed fetch, in bsr's words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, OSError):
            if "Name or service" in str(reason) or "nodename" in str(reason) or "getaddrinfo" in str(reason):
                return "host name not found"
            return os_reason(reason)
        return " ".join(str(reason).split()) or "unreachable"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, _Corrupt):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError):
        return os_reason(exc)
    return "the connection failed"


def download(urls: list[str], dest: str | os.PathLike, sha256: str | None, size: int | None = None,
             label: str | None = None, progress: bool = True) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that yields a file with this ``sha256`` (and ``size``).

    Already verified at ``dest``: returned without a request. Refused (``DownloadError``, exit 3) without a
    pinned sha256, when offline (the message names the path to put the file at), or when every URL fails
    (each URL's reason in one line). A partial ``.part`` is kept for the next run to resume; a file that
    cannot be right (checksum mismatch, too long) is deleted.
    """
    dest = Path(dest)
    label = label or dest.name
    if not sha256:
        raise DownloadError(f"refusing to download {label}: no pinned sha256 to verify it against; "
                            f"put the file at {dest} yourself")
    if matches(dest, sha256, size):
        return dest
    if is_offline():
        raise DownloadError(f"{label} is not available offline (BSR_OFFLINE is set): put {dest.name} "
                            f"(sha256 {sha256}) at {dest}")
    if not urls:
        raise DownloadError(f"no download URL for {label}: put {dest.name} (sha256 {sha256}) at {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the cache folder {dest.parent} for {label}: {os_reason(exc)}; "
                            "set BSR_CACHE_DIR to a writable folder") from None
    with FileLock(dest, label):
        if matches(dest, sha256, size):  # another process finished it while we waited
            return dest
        return _download_locked(urls, dest, sha256, size, label, progress)


def _download_locked(urls: list[str], dest: Path, sha256: str, size: int | None, label: str,
                     progress: bool) -> Path:
    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        bar = _Progress(progress, label, size)
        try:
            _fetch(url, part, size, bar)
        except _Corrupt as exc:
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {_why(exc)}, partial file deleted")
            continue
        except (urllib.error.URLError, OSError) as exc:  # HTTP errors, timeouts, resets, refused connections
            failures.append(f"{url}: {_why(exc)}")
            continue
        finally:
            bar.close()
        got_bytes = part.stat().st_size if part.exists() else 0
        if matches(part, sha256, size):
            os.replace(part, dest)
            return dest
        if size is not None and got_bytes < size:  # cut short: keep the .part to resume next time
            failures.append(f"{url}: incomplete ({got_bytes} of {size} bytes; run again to resume)")
            continue
        got = sha256_file(part) if part.exists() else "nothing"
        part.unlink(missing_ok=True)
        failures.append(f"{url}: checksum mismatch (expected sha256 {sha256}, {size} bytes; "
                        f"got {got}, {got_bytes} bytes), file deleted")
    raise DownloadError(f"could not download {label}: " + "; ".join(failures))
