"""`bsr download`: fetch pretrained checkpoints from the manifest into the cache (verified, resumable)."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from bsr_cli import weights
from bsr_cli.errors import BsrError, DownloadError


def command(
    names: Optional[List[str]] = typer.Argument(None, help="Checkpoints (ebsr-light-x4) or models (ebsr-light)."),
    all_: bool = typer.Option(False, "--all", help="Every checkpoint in the manifest."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Scale, when a model name has several."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list on stdout."),
) -> None:
    """Download pretrained weights into the cache ($BSR_CACHE_DIR or the user cache dir) and verify sha256.

    Files already cached or bundled with bsr and matching their checksum are not downloaded again.
    Mirrors: BSR_WEIGHTS_URL=<base url>; BSR_OFFLINE=1 never touches the network.
    Exit code 3 when any download fails (each failure on its own line), 2 for an unknown name.
    """
    if all_:
        chosen = weights.entries()
    elif names:
        chosen = [weights.find_entry(n, scale) for n in names]
    else:
        known = ", ".join(e["name"] for e in weights.entries()) or "none"
        raise BsrError(f"name a checkpoint or pass --all (available: {known})")
    rows, failed = [], []
    for entry in chosen:
        status, path = weights.locate(entry)
        if path is None:
            try:
                path = weights.download(entry, progress=not as_json)
                status = "downloaded"
            except BsrError as exc:
                failed.append(entry["name"])
                print(f"bsr: {exc}", file=sys.stderr)
                status = "failed"
        rows.append({"name": entry["name"], "model": entry["model"], "scale": entry["scale"], "status": status,
                     "path": str(path if path is not None else weights.cache_path(entry)),
                     "bytes": entry.get("bytes"), "sha256": entry.get("sha256")})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=0)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['status']:<10}  {r['path']}")
    if failed:
        raise DownloadError(f"{len(failed)} of {len(rows)} downloads failed: {', '.join(failed)}")
