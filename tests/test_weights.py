"""Manifest, cache and download, against a loopback HTTP server on 127.0.0.1 (Range-capable)."""
from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading

import pytest

from bsr_cli import weights
from bsr_cli.errors import BsrError

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802
        self.log.append((self.path, self.headers.get("Range")))
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    _Handler.files = {"/rel/m-x4.safetensors": PAYLOAD}
    _Handler.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


def _entry(urls, payload=PAYLOAD, **kw):
    e = {"name": "m-x4", "model": "m", "scale": 4, "file": "m-x4.safetensors",
         "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), "urls": urls,
         "license": "MIT", "default": False, "bundled": False, "binary": True, "float_flops_share": 0.02}
    e.update(kw)
    return e


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Isolated cache, bundled dir and manifest; no mirror, online."""
    monkeypatch.setenv("BSR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BSR_OFFLINE", raising=False)
    monkeypatch.delenv("BSR_WEIGHTS_URL", raising=False)
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(weights, "BUNDLED_DIR", bundled)
    manifest = tmp_path / "manifest.json"
    monkeypatch.setattr(weights, "MANIFEST_PATH", manifest)

    def write(*entries):
        manifest.write_text(json.dumps({"checkpoints": list(entries)}))

    return tmp_path, write


def _cache_files(tmp_path):
    d = tmp_path / "cache" / "weights"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_download_verifies_and_lands_in_cache(env, server):
    tmp_path, _ = env
    base, handler = server
    path = weights.download(_entry([f"{base}/rel/m-x4.safetensors"]), progress=False)
    assert path == tmp_path / "cache" / "weights" / "m-x4.safetensors"
    assert path.read_bytes() == PAYLOAD
    assert _cache_files(tmp_path) == ["m-x4.safetensors"]  # no .part left
    assert handler.log == [("/rel/m-x4.safetensors", None)]
    weights.download(_entry([f"{base}/rel/m-x4.safetensors"]), progress=False)  # verified copy: no request
    assert len(handler.log) == 1


def test_checksum_mismatch_is_refused_and_cleaned(env, server):
    tmp_path, _ = env
    base, handler = server
    handler.files["/rel/m-x4.safetensors"] = bytes(reversed(PAYLOAD))  # same size, other bytes
    with pytest.raises(BsrError, match="checksum mismatch") as err:
        weights.download(_entry([f"{base}/rel/m-x4.safetensors"]), progress=False)
    assert "\n" not in str(err.value)
    assert _cache_files(tmp_path) == []


def test_interrupted_download_resumes_with_range(env, server):
    tmp_path, _ = env
    base, handler = server
    part = tmp_path / "cache" / "weights" / "m-x4.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:40000])
    path = weights.download(_entry([f"{base}/rel/m-x4.safetensors"]), progress=False)
    assert handler.log == [("/rel/m-x4.safetensors", "bytes=40000-")]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_short_read_keeps_part_for_resume(env, server):
    tmp_path, _ = env
    base, handler = server
    handler.files["/rel/m-x4.safetensors"] = PAYLOAD[:30000]  # connection "cut" after 30000 bytes
    with pytest.raises(BsrError, match="incomplete"):
        weights.download(_entry([f"{base}/rel/m-x4.safetensors"]), progress=False)
    assert _cache_files(tmp_path) == ["m-x4.safetensors.part"]
    handler.files["/rel/m-x4.safetensors"] = PAYLOAD
    assert weights.download(_entry([f"{base}/rel/m-x4.safetensors"]), progress=False).read_bytes() == PAYLOAD
    assert handler.log[-1][1] == "bytes=30000-"


def test_404_is_one_line_error(env, server):
    base, _ = server
    with pytest.raises(BsrError, match="HTTP 404") as err:
        weights.download(_entry([f"{base}/missing.safetensors"]), progress=False)
    assert "\n" not in str(err.value)


def test_unreachable_is_one_line_error(env):
    tmp_path, _ = env
    url = f"http://127.0.0.1:{_closed_port()}/m-x4.safetensors"
    with pytest.raises(BsrError, match="could not download m-x4") as err:
        weights.download(_entry([url]), progress=False)
    assert "\n" not in str(err.value) and url in str(err.value)
    assert _cache_files(tmp_path) == []


def test_mirror_is_tried_first(env, server, monkeypatch):
    base, handler = server
    monkeypatch.setenv("BSR_WEIGHTS_URL", f"{base}/rel/")
    dead = f"http://127.0.0.1:{_closed_port()}/m-x4.safetensors"
    assert weights.candidate_urls(_entry([dead]))[0] == f"{base}/rel/m-x4.safetensors"
    assert weights.download(_entry([dead]), progress=False).read_bytes() == PAYLOAD
    assert [p for p, _ in handler.log] == ["/rel/m-x4.safetensors"]


def test_offline_never_opens_a_socket(env, monkeypatch):
    tmp_path, write = env
    write(_entry(["http://127.0.0.1:9/m-x4.safetensors"]))
    monkeypatch.setenv("BSR_OFFLINE", "1")
    opened = []

    def no_network(*a, **k):
        opened.append(a)
        raise AssertionError("socket opened in offline mode")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    expected = tmp_path / "cache" / "weights" / "m-x4.safetensors"
    with pytest.raises(BsrError) as err:
        weights.resolve_checkpoint("m", 4)
    msg = str(err.value)
    assert "BSR_OFFLINE" in msg and str(expected) in msg and "\n" not in msg
    assert opened == []
    # a file put where the message says is then used, still without network
    expected.parent.mkdir(parents=True)
    expected.write_bytes(PAYLOAD)
    assert weights.resolve_checkpoint("m-x4") == expected and opened == []


@pytest.mark.parametrize("bad", ["../evil.safetensors", "/etc/evil.safetensors", "sub/evil.safetensors",
                                 "..", "", "c:evil.safetensors", "a\\b.safetensors"])
def test_file_names_escaping_the_cache_are_rejected(env, bad):
    with pytest.raises(BsrError, match="unsafe file name"):
        weights.download(_entry(["http://127.0.0.1:9/x"], file=bad), progress=False)
    with pytest.raises(BsrError, match="unsafe file name"):
        weights.cache_path(_entry([], file=bad))


def test_resolution_order_cache_then_bundled(env, server):
    tmp_path, write = env
    base, handler = server
    write(_entry([f"{base}/rel/m-x4.safetensors"], bundled=True))
    bundled = weights.BUNDLED_DIR / "m-x4.safetensors"
    bundled.write_bytes(PAYLOAD)
    assert weights.resolve_checkpoint("m-x4") == bundled and handler.log == []
    cached = tmp_path / "cache" / "weights" / "m-x4.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    assert weights.resolve_checkpoint("m-x4") == cached
    cached.write_bytes(b"x" * len(PAYLOAD))  # a corrupt cache copy is skipped, not trusted
    assert weights.resolve_checkpoint("m-x4") == bundled and handler.log == []


def test_find_entry_and_default(env):
    _, write = env
    write(_entry([], name="a-x4", model="a", metrics={"Set5": {"psnr": 30.1, "ssim": 0.85}}),
          _entry([], name="b-x4", model="b", metrics={"Set5": {"psnr": 30.5, "ssim": 0.86}}),
          _entry([], name="fp-x4", model="fp", binary=False, metrics={"Set5": {"psnr": 31.0, "ssim": 0.88}}),
          _entry([], name="a-x2", model="a", scale=2))
    assert weights.default_model(4) == "b"  # best binary Set5, the FP model is never the default
    assert weights.default_model(2) == "a" and weights.default_model(3) is None
    assert weights.find_entry("a", 2)["name"] == "a-x2" and weights.find_entry("b")["name"] == "b-x4"
    with pytest.raises(BsrError, match="several scales"):
        weights.find_entry("a")
    with pytest.raises(BsrError, match="no x3 weights for a"):
        weights.find_entry("a", 3)
    with pytest.raises(BsrError, match="did you mean a-x4"):
        weights.find_entry("a-x5")
    # the rule weighs cost too: b is better but keeps 68 % of its FP twin's FLOPs in float (bbcu-l), so a is the
    # default; a stale "default" flag in the manifest does not override the rule
    write(_entry([], name="a-x4", model="a", metrics={"Set5": {"psnr": 30.1}}),
          _entry([], name="b-x4", model="b", metrics={"Set5": {"psnr": 30.5}}, float_flops_share=0.684, default=True))
    assert weights.default_model(4) == "a"
    summary = weights.pretrained_summary()
    assert [(r["name"], r["default"]) for r in summary["a"]] == [("a-x4", True)]
    assert summary["b"][0]["metrics"]["Set5"]["psnr"] == 30.5 and not summary["b"][0]["default"]


def test_load_model_backend_seam(env, monkeypatch):
    tmp_path, write = env
    write(_entry([], bundled=True))
    (weights.BUNDLED_DIR / "m-x4.safetensors").write_bytes(PAYLOAD)
    with pytest.raises(BsrError, match="backend tpu not available"):
        weights.load_model("m", 4, backend="tpu")
    from bsr_cli import backends

    calls = []
    monkeypatch.setitem(backends.BACKENDS, "fake", lambda model, scale, path: calls.append((model, scale, path)))
    weights.load_model("m-x4", None, backend="fake")
    weights.load_model(None, 4, backend="fake")  # default model at x4
    assert calls == [("m", 4, weights.BUNDLED_DIR / "m-x4.safetensors")] * 2


def test_load_model_torch_with_checkpoint_path(tmp_path):
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("bsr_cli.models")
    from bsr_cli.checkpoint import save_checkpoint

    name = "ebsr-light" if "ebsr-light" in models.list_models() else models.list_models()[0]
    torch.manual_seed(0)
    net = models.create_model(name, 2).eval()
    path = save_checkpoint(net, tmp_path / "c.safetensors", {"model": name, "scale": 2})
    loaded = weights.load_model(name, 2, checkpoint=path)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert not loaded.training and torch.equal(loaded(x), net(x))
    with pytest.raises(BsrError, match="x2 checkpoint"):
        weights.load_model(name, 4, checkpoint=path)


def test_cli_download(env, server, capsys):
    from bsr_cli.cli import main

    tmp_path, write = env
    base, _ = server
    write(_entry([f"{base}/rel/m-x4.safetensors"]))
    assert main(["download", "m-x4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "m-x4" and rows[0]["status"] == "downloaded"
    assert rows[0]["path"] == str(tmp_path / "cache" / "weights" / "m-x4.safetensors")
    assert main(["download", "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "cache"
    assert main(["download", "mx4"]) == 2
    assert "did you mean m-x4" in capsys.readouterr().err


def test_bsr_models_joins_the_manifest(env):
    pytest.importorskip("bsr_cli.models")
    rows_mod = pytest.importorskip("bsr_cli.commands.models")
    _, write = env
    write(_entry([], name="ebsr-light-x4", model="ebsr-light", metrics={"Set5": {"psnr": 30.5, "ssim": 0.86}}),
          _entry([], name="bbcu-l-x4", model="bbcu-l", metrics={"Set5": {"psnr": 30.2, "ssim": 0.85}}))
    rows = {r["name"]: r for r in rows_mod.model_rows()}
    assert [(w["name"], w["default"]) for w in rows["ebsr-light"]["weights"]] == [("ebsr-light-x4", True)]
    assert [(w["name"], w["default"]) for w in rows["bbcu-l"]["weights"]] == [("bbcu-l-x4", False)]
    assert rows["e2fif"]["weights"] == []
    assert rows_mod._weights_cell(rows["ebsr-light"]["weights"]) == "x4: 30.50 / ? dB (default)"
