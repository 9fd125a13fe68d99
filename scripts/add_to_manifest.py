#!/usr/bin/env python
"""Add (or update) a packed checkpoint in bsr's weights manifest.

    python scripts/add_to_manifest.py CKPT [--bundle] [--license MIT]
                                      [--data-dir ../shared/datasets/benchmark] [--metrics-json FILE | --no-eval]

Reads the checkpoint's metadata (model, scale, training recipe), computes its sha256 and byte size, names the
entry `<model>-x<scale>` with file `<model>-x<scale>.safetensors`, copies the file into `bsr_cli/weights/`
when `--bundle` is given, measures PSNR/SSIM on Set5/Set14/B100/Urban100 at the checkpoint's scale with
`bsr_cli.evaluate.evaluate` (or takes them from a `bsr eval --json` document given by `--metrics-json`), and
writes the entry into `bsr_cli/data/weights_manifest.json` (replacing an entry of the same name).
The entries' `default` flags are rewritten by the rule of `bsr_cli.weights.default_model` (best Set5 among binary
entries whose float share of the FP twin's FLOPs is <= 10 %), and each entry stores that `float_flops_share`.
Non-bundled files must be uploaded to the release URL printed at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import sys
from pathlib import Path

from bsr_cli import __version__, weights
from bsr_cli.checkpoint import read_metadata
from bsr_cli.errors import BsrError

DATASETS = ("Set5", "Set14", "B100", "Urban100")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "benchmark"


def _metric_pair(result) -> dict:
    """{psnr, ssim} rounded to 4 decimals from a dict or an object with psnr/ssim."""
    get = result.get if isinstance(result, dict) else lambda k: getattr(result, k)
    return {"psnr": round(float(get("psnr")), 4), "ssim": round(float(get("ssim")), 4)}


def pick_backend(model: str, scale: int, ckpt: Path, backend: str) -> str:
    """`auto`: bitpack when the model has convs the XNOR-popcount kernel runs and the kernel is built (the same
    outputs as torch up to float rounding, several times faster), else torch."""
    if backend != "auto":
        return backend
    try:
        from bsr_cli.bitpack import bitpack_available
        from bsr_cli.bitpack.backend import convert_model, count_bitpack_convs

        if not bitpack_available()[0]:
            return "torch"
        return "bitpack" if count_bitpack_convs(convert_model(weights.load_model(model, scale, checkpoint=ckpt))) else "torch"
    except (ImportError, BsrError):
        return "torch"


def measure(ckpt: Path, model: str, scale: int, data_dir: Path, datasets=DATASETS, backend: str = "torch") -> dict:
    """PSNR/SSIM per dataset with `bsr_cli.evaluate.evaluate` (the `bsr eval` protocol) on this checkpoint."""
    try:
        from bsr_cli.evaluate import evaluate, model_sr  # another engineer's module: imported only when measuring
    except ImportError as exc:
        raise BsrError(f"cannot evaluate ({exc}): pass --metrics-json (a `bsr eval --json` output) or --no-eval")

    sr_fn = model_sr(weights.load_model(model, scale, checkpoint=ckpt, backend=backend), scale)
    metrics = {}
    for ds in datasets:
        res = evaluate(model, ds, scale, data_dir=str(data_dir), sr_fn=sr_fn)
        if res.get("failures") or res.get("psnr") is None:
            raise BsrError(f"{ds}: {len(res.get('failures', []))} image(s) failed; fix the data before shipping")
        metrics[ds] = _metric_pair(res)
        print(f"  {ds}: {metrics[ds]['psnr']:.2f} dB / {metrics[ds]['ssim']:.4f} "
              f"({res['images']} images, {res['seconds']:.0f} s)", file=sys.stderr)
    return metrics


def metrics_from_json(path: Path, model: str, scale: int) -> dict:
    """Metrics from a `bsr eval --json` document: {"results": [{model, scale, dataset, psnr, ssim}, ...]}."""
    doc = json.loads(Path(path).read_text())
    rows = [r for r in doc.get("results", []) if int(r.get("scale", scale)) == scale
            and r.get("model") in (model, f"{model}-x{scale}", None)]
    if not rows:
        raise BsrError(f"{path} has no results for {model} x{scale}")
    return {r["dataset"]: _metric_pair(r) for r in rows}


def build_entry(ckpt: Path, meta: dict, license_: str, bundled: bool, metrics: dict | None,
                old: dict | None) -> dict:
    model, scale = meta["model"], int(meta["scale"])
    name = f"{model}-x{scale}"
    file = f"{name}.safetensors"
    return {
        "name": name,
        "model": model,
        "scale": scale,
        "file": file,
        "sha256": weights.sha256_file(ckpt),
        "bytes": ckpt.stat().st_size,
        "urls": [weights.RELEASE_URL.format(version=__version__, file=file)],
        "license": license_,
        "default": False,  # set by the rule in _write_entry
        "bundled": bundled,
        "binary": bool(meta.get("packed")),
        "float_flops_share": round(weights.measured_float_share(model, scale), 4),
        "format_version": meta.get("format_version"),
        "recipe": meta.get("training") or meta.get("recipe") or {},
        "metrics": metrics if metrics is not None else (old or {}).get("metrics", {}),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", type=Path, help="packed checkpoint (.safetensors) written by bsr train")
    ap.add_argument("--bundle", action="store_true", help="copy it into bsr_cli/weights/ (shipped in the wheel)")
    ap.add_argument("--license", default="MIT")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--metrics-json", type=Path, help="take metrics from a `bsr eval --json` output")
    ap.add_argument("--no-eval", action="store_true", help="keep the entry's existing metrics")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "bitpack"],
                    help="inference backend for the measurement (auto: bitpack for models with binary-activation convs)")
    ap.add_argument("--manifest", type=Path, default=weights.MANIFEST_PATH)
    args = ap.parse_args(argv)
    try:
        meta = read_metadata(args.ckpt)
        if "model" not in meta or "scale" not in meta:
            raise BsrError(f"{args.ckpt} has no model/scale metadata")
        model, scale = meta["model"], int(meta["scale"])
        manifest = weights.load_manifest(args.manifest)
        name = f"{model}-x{scale}"
        old = next((e for e in manifest["checkpoints"] if e.get("name") == name), None)
        metrics_backend = (old or {}).get("metrics_backend", "torch") if args.no_eval else "torch"
        if args.metrics_json:
            metrics = metrics_from_json(args.metrics_json, model, scale)
        elif args.no_eval:
            metrics = None
        else:
            backend = pick_backend(model, scale, args.ckpt, args.backend)
            print(f"evaluating {name} on {', '.join(args.datasets)} with backend {backend} ...", file=sys.stderr)
            metrics = measure(args.ckpt, model, scale, args.data_dir, args.datasets, backend)
            metrics_backend = backend
        entry = build_entry(args.ckpt, meta, args.license, args.bundle, metrics, old)
        entry["metrics_backend"] = metrics_backend
        if args.bundle:
            dest = weights.BUNDLED_DIR / entry["file"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            if args.ckpt.resolve() != dest.resolve():
                shutil.copyfile(args.ckpt, dest)
        with _locked(args.manifest):  # re-read: another run may have added an entry while this one was measured
            _write_entry(args.manifest, entry, name, scale)
    except BsrError as exc:
        print(f"add_to_manifest: error: {exc}", file=sys.stderr)
        return 2
    where = f"bundled as {weights.BUNDLED_DIR / entry['file']}" if args.bundle else \
        f"upload {args.ckpt} as {entry['urls'][0]}"
    print(f"{name}: sha256 {entry['sha256']}, {entry['bytes']} bytes; {where}")
    return 0


@contextlib.contextmanager
def _locked(manifest: Path):
    """An exclusive lock (fcntl) beside the manifest for its read-modify-write."""
    with open(manifest.resolve().with_name(".manifest.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_entry(manifest_path: Path, entry: dict, name: str, scale: int) -> None:
    """Replace (or add) the entry `name` in the manifest file, atomically; re-flag the default of its scale."""
    manifest = weights.load_manifest(manifest_path)
    entries = [e for e in manifest["checkpoints"] if e.get("name") != name]
    entries.append(entry)
    at_scale = [e for e in entries if int(e.get("scale", 0)) == scale]
    chosen = weights.choose_default(at_scale)
    for e in at_scale:
        e["default"] = e is chosen
    entries.sort(key=lambda e: (int(e.get("scale", 0)), e.get("name", "")))
    manifest["checkpoints"] = entries
    target = manifest_path.resolve()
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(target)


if __name__ == "__main__":
    sys.exit(main())
