"""bsr's exception types, its exit codes, and plain-words reasons for operating-system errors.

The CLI (``bsr_cli.cli.main``) turns a ``BsrError`` into one line on stderr and ``exit_code``; nothing else a
user does should produce a traceback. Exit codes (also in the README, "Exit codes"):

  0  everything done (or skipped on purpose)
  1  some inputs failed (each listed once with its reason); the others were processed
  2  usage error: bad flag, unknown name, missing input, nothing to do
  3  network or download failure: unreachable, HTTP error, checksum mismatch, or offline with a file missing
"""
from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_INPUTS_FAILED = 1
EXIT_USAGE = 2
EXIT_DOWNLOAD = 3


class BsrError(Exception):
    """A user-facing failure: bad input, missing data, unknown name. Message is one line, no traceback."""

    exit_code = EXIT_USAGE


class DownloadError(BsrError):
    """A file could not be fetched or verified (network, HTTP, checksum, offline): exit code 3."""

    exit_code = EXIT_DOWNLOAD


_REASONS = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "something already exists at that path",
    errno.ELOOP: "a symbolic link that loops (points to itself, directly or through other links)",
    errno.ENOSPC: "the disk is full",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EIO: "an input/output error on the device",
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by the server",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def os_reason(exc: BaseException) -> str:
    """A short lower-case phrase for an ``OSError`` (no class name, no ``[Errno N]``)."""
    code = getattr(exc, "errno", None)
    if code in _REASONS:
        return _REASONS[code]
    text = getattr(exc, "strerror", None) or ""
    text = " ".join(str(text).split())
    return text[:1].lower() + text[1:] if text else "a system error"
