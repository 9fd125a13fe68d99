"""Pretrained weights: the manifest, the cache, bundled files and a verified, resumable download.

The manifest (`bsr_cli/data/weights_manifest.json`, `{"checkpoints": [entry, ...]}`) is bsr's pretrained
config: one entry per checkpoint with `name` (`<model>-x<scale>`), `model`, `scale`, `file`, `sha256`,
`bytes`, `urls`, `license`, `default`, `bundled`, `binary`, `recipe` and `metrics`.

A checkpoint is resolved in this order: the cache (`<cache root>/weights/<file>`, cache root =
`$BSR_CACHE_DIR` or `platformdirs.user_cache_dir("bsr")`), the files bundled in the package
(`bsr_cli/weights/<file>`), then a download into the cache. Every file is checked against the manifest's
byte size and full sha256 before use.

Environment (read at call time):
  BSR_CACHE_DIR    cache root (weights go to `$BSR_CACHE_DIR/weights`).
  BSR_WEIGHTS_URL  mirror base URL(s), comma-separated; `<base>/<file>` is tried before the entry's urls.
  BSR_OFFLINE=1    never touch the network; a missing file fails with the exact path to put it at
                   (the one rule of `bsr_cli.files.is_offline`, shared with datasets).
The cache root, sha256, the offline rule and the downloader itself live in `bsr_cli.files`.
"""
from __future__ import annotations

import difflib
import functools
import json
import os
from pathlib import Path

from bsr_cli import files
from bsr_cli.errors import BsrError
from bsr_cli.files import cache_root, is_offline, matches, sha256_file  # noqa: F401  (re-exported, used by callers)

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST_PATH = PACKAGE_DIR / "data" / "weights_manifest.json"
BUNDLED_DIR = PACKAGE_DIR / "weights"
RELEASE_URL = "https://github.com/bsr-project/bsr/releases/download/v{version}/{file}"


# --------------------------------------------------------------------------------------------- places
def cache_dir() -> Path:
    """Where downloaded checkpoints live: `<cache root>/weights`."""
    return cache_root() / "weights"


def safe_filename(entry: dict) -> str:
    """The entry's file name, refused unless it is a plain name that stays inside the cache dir."""
    name = entry.get("file")
    bad = (
        not isinstance(name, str)
        or not name
        or name in {".", ".."}
        or "/" in name
        or "\\" in name
        or "\0" in name
        or ":" in name
        or os.path.isabs(name)
        or Path(name).name != name
    )
    if bad:
        raise BsrError(f"manifest entry {entry.get('name', '?')!r} has an unsafe file name {name!r} "
                       "(must be a plain file name, no directories)")
    return name


def cache_path(entry: dict) -> Path:
    """The path where `entry`'s file is (or would be) cached."""
    return cache_dir() / safe_filename(entry)


def bundled_path(entry: dict) -> Path:
    """The path where `entry`'s file would be bundled inside the package."""
    return BUNDLED_DIR / safe_filename(entry)


# --------------------------------------------------------------------------------------------- manifest
def load_manifest(path: str | Path | None = None) -> dict:
    """The parsed manifest `{"checkpoints": [...]}` (default: the packaged one)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"checkpoints": []}
    except json.JSONDecodeError as exc:
        raise BsrError(f"weights manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), list):
        raise BsrError(f"weights manifest {path} must be an object with a 'checkpoints' list")
    return data


def entries() -> list[dict]:
    """All manifest entries."""
    return load_manifest()["checkpoints"]


def find_entry(name_or_model: str, scale: int | None = None) -> dict:
    """The manifest entry for an entry name (`ebsr-light-x4`) or a model name plus scale (`ebsr-light`, 4).

    Unknown names fail with the closest known names.
    """
    all_entries = entries()
    for e in all_entries:
        if e.get("name") == name_or_model:
            if scale is not None and int(e["scale"]) != int(scale):
                raise BsrError(f"{name_or_model} is a x{e['scale']} checkpoint, not x{scale}")
            return e
    matches = [e for e in all_entries if e.get("model") == name_or_model]
    if matches:
        if scale is not None:
            matches = [e for e in matches if int(e["scale"]) == int(scale)]
            if not matches:
                have = ", ".join(f"x{e['scale']}" for e in all_entries if e.get("model") == name_or_model)
                raise BsrError(f"no x{scale} weights for {name_or_model} (available: {have}); "
                               "pass --checkpoint to use your own")
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(e["name"] for e in matches)
        raise BsrError(f"{name_or_model} has weights at several scales ({names}); give a scale or an entry name")
    known = sorted({e.get("name", "") for e in all_entries} | {e.get("model", "") for e in all_entries})
    close = difflib.get_close_matches(name_or_model, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `bsr models` for the list"
    raise BsrError(f"no pretrained weights named {name_or_model!r}{hint}")


def _set5_psnr(entry: dict) -> float:
    try:
        return float(entry["metrics"]["Set5"]["psnr"])
    except (KeyError, TypeError, ValueError):
        return float("-inf")


FLOAT_SHARE_MAX = 0.10  # a default keeps at most 10 % of its FP twin's FLOPs in float (README "Default model")


@functools.lru_cache(maxsize=None)
def measured_float_share(model: str, scale: int) -> float:
    from bsr_cli.models import create_model
    from bsr_cli.profiling import profile_model

    twin = profile_model(create_model("srresnet-fp", scale))["flops"]
    return profile_model(create_model(model, scale))["flops"] / twin


def float_share(entry: dict) -> float:
    """FLOPs the model still runs in float / FLOPs of its FP twin `srresnet-fp` (Eq. 7 counting, LR 128x128, the
    entry's scale): the part a 1-bit kernel cannot speed up. Stored in the manifest (`float_flops_share`) by
    scripts/add_to_manifest.py; measured when missing. e2fif 0.015, ebsr-light 0.026, bbcu-l 0.68 (its HR
    upsampler and conv), ma2019-bwn 1.0 (FP activations)."""
    if "float_flops_share" in entry:
        return float(entry["float_flops_share"])
    return measured_float_share(entry["model"], int(entry["scale"]))


def default_model(scale: int) -> str | None:
    """The model used at `scale` when none is given, by one rule on measured quality and cost: the best Set5 PSNR
    among the binary entries whose float share (`float_share`) is at most FLOAT_SHARE_MAX, i.e. that are fast on
    the 1-bit backend; if none qualifies, the best binary entry; None when the manifest has nothing at `scale`."""
    chosen = choose_default([e for e in entries() if int(e.get("scale", 0)) == int(scale)])
    return chosen["model"] if chosen else None


def choose_default(at_scale: list[dict]) -> dict | None:
    """`default_model`'s rule applied to the manifest entries of one scale (scripts/add_to_manifest.py writes
    its result as the entries' `default` flags)."""
    binary = [e for e in at_scale if e.get("binary", True)]
    if not binary:
        return None
    fast = [e for e in binary if float_share(e) <= FLOAT_SHARE_MAX]
    return max(fast or binary, key=_set5_psnr)


def pretrained_summary() -> dict[str, list[dict]]:
    """model -> its checkpoints, for `bsr models`: [{name, scale, default, bundled, metrics: {Set5, Urban100, ...}}]
    sorted by scale; `default` is True for the model `default_model(scale)` picks."""
    out: dict[str, list[dict]] = {}
    defaults: dict[int, str | None] = {}
    for e in entries():
        scale = int(e["scale"])
        if scale not in defaults:
            defaults[scale] = default_model(scale)
        out.setdefault(e["model"], []).append({
            "name": e["name"], "scale": scale, "default": defaults[scale] == e["model"],
            "bundled": bool(e.get("bundled")), "metrics": e.get("metrics") or {},
        })
    for rows in out.values():
        rows.sort(key=lambda r: r["scale"])
    return out


# --------------------------------------------------------------------------------------------- verify
def verify(path: str | Path, entry: dict) -> bool:
    """True when `path` exists and matches the entry's byte size and sha256."""
    return bool(entry.get("sha256")) and matches(path, entry["sha256"], entry.get("bytes"))


def locate(entry: dict) -> tuple[str, Path | None]:
    """Where a verified copy of the entry's file already is: ("cache"|"bundled", path) or ("missing", None)."""
    for where, path in (("cache", cache_path(entry)), ("bundled", bundled_path(entry))):
        if verify(path, entry):
            return where, path
    return "missing", None


# --------------------------------------------------------------------------------------------- download
def candidate_urls(entry: dict) -> list[str]:
    """Mirror URLs from `BSR_WEIGHTS_URL` (base + file name) followed by the entry's own urls."""
    file = safe_filename(entry)
    bases = [b.strip() for b in os.environ.get("BSR_WEIGHTS_URL", "").split(",") if b.strip()]
    urls = [f"{b.rstrip('/')}/{file}" for b in bases] + list(entry.get("urls") or [])
    seen, out = set(), []
    for u in urls:
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out


def download(entry: dict, progress: bool = True) -> Path:
    """Download the entry's file into the cache with ``bsr_cli.files.download`` (resume, size + sha256 check,
    atomic rename, lock); returns the cached path. Tries `BSR_WEIGHTS_URL` mirrors, then the entry's urls.
    Offline, no socket is opened and the error names the path to put the file at (exit code 3)."""
    target = cache_path(entry)
    expected = int(entry["bytes"]) if entry.get("bytes") is not None else None
    return files.download(candidate_urls(entry), target, entry.get("sha256"), expected,
                          label=entry.get("name", target.name), progress=progress)


def resolve_checkpoint(name: str | dict, scale: int | None = None, progress: bool = True) -> Path:
    """Path of a verified checkpoint for an entry (or entry/model name): cache, then bundled, then download."""
    entry = name if isinstance(name, dict) else find_entry(name, scale)
    where, path = locate(entry)
    if path is not None:
        return path
    return download(entry, progress=progress)


# --------------------------------------------------------------------------------------------- models
def load_model(name: str | None, scale: int | None = None, checkpoint: str | Path | None = None,
               backend: str = "torch"):
    """A pretrained model in eval mode: ``bsr_cli.backends.load_model`` (the backend table, the ``auto`` rule
    and checkpoint resolution live there). Kept here for existing callers (scripts/, benchmarks/)."""
    from bsr_cli.backends import load_model as _load_model  # backends imports this module, not the reverse

    return _load_model(name, scale, checkpoint, backend)
