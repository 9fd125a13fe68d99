"""Issue 14: nothing a user feeds bsr crashes a batch, leaks internals, or goes unverified.

One test per defect (symlink loops in the walker, TIFF EXIF, 1x1 warning, animated files, raw error text,
-o equal to the input folder, unverified datasets, the offline rule, the download exit code), a seeded fuzz
test of the image reader, and two processes downloading one file from a loopback server.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bsr_cli import datasets, files, imageio, upscale, weights
from bsr_cli.cli import main
from bsr_cli.errors import BsrError, DownloadError

SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "benchmark" / "Set5"
MODEL = "e2fif"
RNG = np.random.default_rng(14)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(e2fif_checkpoint) -> Path:
    """A random-init e2fif x4 packed checkpoint (conftest)."""
    return e2fif_checkpoint


def run(args, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def up(checkpoint, *rest) -> list:
    return ["upscale", *rest, "--model", MODEL, "--checkpoint", checkpoint, "--threads", "1"]


def _png(path: Path, h: int = 6, w: int = 6) -> np.ndarray:
    arr = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _no_internals(text: str) -> None:
    """A user-facing reason: one line, no exception class name, no errno text."""
    assert "\n" not in text.strip()
    for leak in ("Error:", "Errno", "Exception", "Traceback", "RuntimeError", "OSError"):
        assert leak not in text, text


# --------------------------------------------------------------------------- 1. symlink loops in the walker


def test_walker_reports_link_loops_per_entry_and_keeps_the_good_images(tmp_path, checkpoint, capsys):
    tree, out = tmp_path / "tree", tmp_path / "out"
    (tree / "sub").mkdir(parents=True)
    _png(tree / "a.png")
    _png(tree / "sub" / "c.png")
    os.symlink("self", tree / "self")            # points to itself, no image name: a note
    os.symlink("loop.png", tree / "loop.png")    # points to itself, image name: a failed entry
    os.symlink("..", tree / "sub" / "up")        # folder loop: noted, not entered twice
    pairs, failed, notes = upscale.collect_inputs([str(tree)], recursive=True)
    assert [p.relative_to(tree).as_posix() for p, _ in pairs] == ["a.png", "sub/c.png"]
    assert [(j.input.name, "loops" in j.reason) for j in failed] == [("loop.png", True)]
    assert any("self" in n and "loops" in n for n in notes)
    assert any(n.startswith(f"skipped {tree / 'sub' / 'up'}") and "already scanned" in n for n in notes)

    rc, doc, err = run(up(checkpoint, tree, "-r", "-o", out, "--json"), capsys)
    assert rc == 1
    doc = json.loads(doc)
    assert doc["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a_x4.png", "sub/c_x4.png"]
    assert Image.open(out / "a_x4.png").size == (24, 24)
    assert "Traceback" not in err and "RuntimeError" not in err


def test_unlistable_folder_is_one_failed_entry(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    _png(tree / "a.png")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    pairs, failed, _ = upscale.collect_inputs([str(tree)], recursive=True)
    assert [p.name for p, _ in pairs] == ["a.png"]
    assert [(j.input.name, j.reason) for j in failed] == [
        ("locked", "cannot list this folder: permission denied; check its permissions")]


# --------------------------------------------------------------------------- 2. TIFF metadata


def test_tiff_with_auto_ext_upscales_and_keeps_only_portable_exif(tmp_path, checkpoint, capsys):
    src = tmp_path / "scan.tif"
    exif = Image.Exif()
    exif[0x013B] = "Ann Artist"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    Image.fromarray(RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(src, exif=exif.tobytes())
    carried = Image.Exif()
    carried.load(imageio.read_image(src).exif)
    assert not {256, 257, 258, 259, 262, 273, 277, 278, 279} & set(carried)  # no structural TIFF tags
    rc, _, err = run(up(checkpoint, src, "-o", tmp_path / "out"), capsys)
    assert rc == 0, err
    with Image.open(tmp_path / "out" / "scan_x4.tif") as im:
        assert im.size == (28, 20)
        e = im.getexif()
        assert e[0x013B] == "Ann Artist" and e.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"


# --------------------------------------------------------------------------- 3. no Python warning


def test_1x1_read_only_tile_does_not_warn():
    """In a fresh interpreter (torch warns once per process) with warnings as errors."""
    code = ("import warnings, numpy as np, torch; warnings.simplefilter('error');"
            "from bsr_cli import tiling;"
            "a = np.asarray(np.full((1, 1, 3), 51, np.uint8)); a.setflags(write=False);"
            "y = tiling.run_tile(lambda x: torch.nn.functional.interpolate(x, scale_factor=2), a, 2);"
            "print(y.shape, round(float(y.max()), 4))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["(2,", "2,", "3)", "0.2"]


def test_cli_silences_python_warnings(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "warnoptions", [])

    def noisy():
        warnings.warn("internal detail", UserWarning)
        return []

    monkeypatch.setattr(weights, "entries", noisy)
    rc, out, err = run(["download", "--all", "--json"], capsys)
    assert rc == 0 and json.loads(out) == []
    assert "Warning" not in err and "internal detail" not in err


def test_1x1_image_through_cli_has_clean_stderr(tmp_path, checkpoint, capsys):
    _png(tmp_path / "dot.png", 1, 1)
    rc, _, err = run(up(checkpoint, tmp_path / "dot.png"), capsys)
    assert rc == 0 and "Warning" not in err and "tiling.py" not in err
    assert Image.open(tmp_path / "dot_x4.png").size == (4, 4)


# --------------------------------------------------------------------------- 4. animated files


@pytest.mark.parametrize("fmt,ext", [("GIF", ".gif"), ("PNG", ".png")])
def test_animated_image_is_refused_not_truncated(tmp_path, fmt, ext):
    frames = [Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(3)]
    path = tmp_path / f"anim{ext}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)
    with pytest.raises(BsrError) as err:
        imageio.read_image(path)
    msg = str(err.value)
    assert f"animated {fmt} (3 frames)" in msg and "still image" in msg
    _no_internals(msg)
    still = tmp_path / "still.gif"
    frames[2].save(still)
    assert imageio.read_image(still).pixels[0, 0].tolist() == [120, 0, 0]  # a single frame still reads


# --------------------------------------------------------------------------- also seen


def test_write_failure_is_a_bsr_sentence(tmp_path, checkpoint, capsys):
    tree, out = tmp_path / "tree", tmp_path / "out"
    (tree / "sub").mkdir(parents=True)
    _png(tree / "sub" / "c.png")
    out.mkdir()
    (out / "sub").write_text("a file where the output folder should be")
    rc, doc, _ = run(up(checkpoint, tree, "-r", "-o", out, "--json"), capsys)
    assert rc == 1
    (row,) = json.loads(doc)["files"]
    assert row["reason"].startswith(f"cannot write {out / 'sub' / 'c_x4.png'}: ")
    _no_internals(row["reason"])


def test_folder_as_its_own_output_is_a_usage_error(tmp_path, checkpoint, capsys):
    _png(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    rc, _, err = run(up(checkpoint, tmp_path, "-o", tmp_path, "--suffix", ""), capsys)
    assert rc == 2
    assert f"-o {tmp_path} is the input folder" in err and "no image files found" not in err
    assert (tmp_path / "a.png").read_bytes() == before


def test_offline_is_one_rule_for_weights_and_datasets(tmp_path, monkeypatch):
    for value, offline in [("1", True), ("yes", True), ("true", True), ("on", True), ("y", True),
                           ("", False), ("0", False), ("false", False), ("No", False), ("off", False)]:
        monkeypatch.setenv("BSR_OFFLINE", value)
        assert files.is_offline() is offline, value
    assert weights.is_offline is files.is_offline
    monkeypatch.setenv("BSR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BSR_DATA_DIR", raising=False)
    monkeypatch.setenv("BSR_OFFLINE", "yes")  # was "online" for weights before: one rule now
    with pytest.raises(DownloadError, match="BSR_OFFLINE") as err:
        datasets.resolve_dataset("Set14")
    assert err.value.exit_code == 3 and "\n" not in str(err.value)


def test_datasets_are_never_downloaded_unverified(tmp_path, monkeypatch):
    monkeypatch.setenv("BSR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BSR_DATA_DIR", raising=False)
    monkeypatch.delenv("BSR_OFFLINE", raising=False)

    def no_network(*a, **k):
        raise AssertionError("socket opened for an unpinned dataset")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert all(info.sha256 is None for info in datasets.DATASETS.values())  # nothing pinned yet: all refused
    for name in datasets.dataset_names():
        with pytest.raises(DownloadError, match="no pinned sha256") as err:
            datasets.resolve_dataset(name)
        assert err.value.exit_code == 3 and "\n" not in str(err.value)
        assert str(tmp_path / "datasets" / name) in str(err.value)


def _tar_gz(images: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, arr in images.items():
            png = io.BytesIO()
            Image.fromarray(arr).save(png, format="PNG")
            info = tarfile.TarInfo(f"Tiny_HR/{name}")
            info.size = len(png.getvalue())
            tf.addfile(info, io.BytesIO(png.getvalue()))
    return buf.getvalue()


def test_pinned_dataset_downloads_verified_and_mismatch_is_refused(tmp_path, monkeypatch, loopback):
    base, handler = loopback
    imgs = {f"{i}.png": RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8) for i in range(3)}
    archive = _tar_gz(imgs)
    handler.files = {"/Tiny_HR.tar.gz": archive}
    monkeypatch.setenv("BSR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("BSR_DATA_DIR", raising=False)
    monkeypatch.delenv("BSR_OFFLINE", raising=False)
    good = datasets.DatasetInfo("Tiny", 3, f"{base}/Tiny_HR.tar.gz", hashlib.sha256(archive).hexdigest(),
                                bytes=len(archive))
    monkeypatch.setitem(datasets.DATASETS, "Tiny", good)
    paths = datasets.resolve_dataset("tiny")
    assert [p.name for p in paths] == ["0.png", "1.png", "2.png"]
    assert np.array_equal(np.asarray(Image.open(paths[1])), imgs["1.png"])
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["Tiny"]  # archive, .part, .lock gone

    bad = datasets.DatasetInfo("Bad", 3, f"{base}/Tiny_HR.tar.gz", "0" * 64, bytes=len(archive))
    monkeypatch.setitem(datasets.DATASETS, "Bad", bad)
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        datasets.resolve_dataset("Bad")
    assert err.value.exit_code == 3 and not (tmp_path / "datasets" / "Bad").exists()


def test_download_failure_exits_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BSR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BSR_OFFLINE", raising=False)
    monkeypatch.delenv("BSR_WEIGHTS_URL", raising=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    entry = {"name": "m-x4", "model": "m", "scale": 4, "file": "m-x4.safetensors", "sha256": "0" * 64,
             "bytes": 10, "urls": [f"http://127.0.0.1:{port}/m-x4.safetensors"]}
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.setattr(weights, "entries", lambda: [entry])
    rc, _, err = run(["download", "m-x4"], capsys)
    assert rc == 3
    assert f"127.0.0.1:{port}/m-x4.safetensors: connection refused" in err
    lines = err.strip().splitlines()  # one line per failed entry, then the summary line
    assert lines == [lines[0], "bsr: error: 1 of 1 downloads failed: m-x4"]
    _no_internals(lines[0])


# --------------------------------------------------------------------------- fuzz the reader


def _fuzz_corpus(tmp_path: Path) -> dict[str, bytes]:
    corpus = {p.name: p.read_bytes() for p in sorted(SET5.glob("*.png"))}
    bird = np.asarray(Image.open(SET5 / "bird.png").convert("RGB"))
    jpg = io.BytesIO()
    Image.fromarray(bird).save(jpg, format="JPEG", quality=90, exif=Image.Exif().tobytes())
    corpus["bird.jpg"] = jpg.getvalue()
    imageio.write_image(tmp_path / "crop16.png", bird[:20, :24].astype(np.uint16) * 257, bit_depth=16)
    corpus["crop16.png"] = (tmp_path / "crop16.png").read_bytes()  # bsr's own 16-bit decoder
    tif = io.BytesIO()
    Image.fromarray(bird[:40, :40]).save(tif, format="TIFF")
    corpus["crop.tif"] = tif.getvalue()
    return corpus


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared/datasets absent")
def test_fuzzed_images_give_one_line_error_or_a_valid_image(tmp_path):
    rng = np.random.default_rng(20240614)
    corpus = _fuzz_corpus(tmp_path)
    outcomes = {"error": 0, "image": 0}
    target = tmp_path / "fuzz.bin"
    for name, data in corpus.items():
        clean = imageio.read_image(_write(target, data))
        for trial in range(24):
            buf = bytearray(data)
            if trial % 2 == 0:  # truncate anywhere, header included
                buf = buf[: int(rng.integers(0, len(buf)))]
            else:  # flip 1..8 bytes, half of them in the first 256 bytes (headers, chunk lengths, IFDs)
                for _ in range(int(rng.integers(1, 9))):
                    hi = 256 if rng.random() < 0.5 else len(buf)
                    i = int(rng.integers(0, min(hi, len(buf))))
                    buf[i] ^= int(rng.integers(1, 256))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    img = imageio.read_image(_write(target, bytes(buf)))
                except BsrError as exc:
                    msg = str(exc)
                    assert msg.startswith(f"cannot read image {target}: "), msg
                    _no_internals(msg)
                    outcomes["error"] += 1
                else:
                    h, w, c = img.pixels.shape
                    assert img.pixels.dtype in (np.uint8, np.uint16) and c in (1, 3) and h > 0 and w > 0
                    assert img.alpha is None or img.alpha.shape == (h, w)
                    if len(buf) == len(data) and bytes(buf) == data:
                        assert np.array_equal(img.pixels, clean.pixels)
                    outcomes["image"] += 1
            assert caught == [], (name, trial, [str(w.message) for w in caught])
    assert outcomes["error"] > 50 and sum(outcomes.values()) == 24 * len(corpus)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- concurrent downloads


class _Slow(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` in 64 KiB pieces with a short pause, so two clients overlap; logs every GET."""

    files: dict[str, bytes] = {}
    log: list[str] = []

    def do_GET(self):  # noqa: N802
        self.log.append(self.path)
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for i in range(0, len(data), 1 << 16):
            self.wfile.write(data[i:i + (1 << 16)])
            time.sleep(0.05)

    def log_message(self, *args):
        pass


@pytest.fixture()
def loopback():
    """A threaded HTTP server on 127.0.0.1 only; shut down after the test."""
    _Slow.files, _Slow.log = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Slow
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_two_processes_fetching_one_file_end_with_one_verified_file(tmp_path, loopback):
    base, handler = loopback
    payload = np.random.default_rng(3).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()  # 1 MiB, ~0.8 s
    handler.files = {"/w.bin": payload}
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "w.bin"
    code = ("import sys; from bsr_cli import files;"
            "p = files.download([sys.argv[1]], sys.argv[2], sys.argv[3], int(sys.argv[4]), progress=False);"
            "print(p)")
    env = {**os.environ, "BSR_OFFLINE": "0"}
    args = [sys.executable, "-c", code, f"{base}/w.bin", str(dest), sha, str(len(payload))]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert [out.strip() for out, _ in results] == [str(dest), str(dest)]
    assert os.listdir(dest.parent) == ["w.bin"]  # no .part, no .lock, no second copy
    assert files.sha256_file(dest) == sha
    assert handler.log == ["/w.bin"]  # the second process waited for the lock and found the file verified
