"""The dashboard serves plotly.js's cartesian bundle when it has one of the right version, and the
fetcher takes it from an npm registry only when the download matches the registry's integrity."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frontend import plotly_bundle as pb

PLOTLY_PATH = "/_dash-component-suites/plotly/package_data/plotly.min.js"


def fake_bundle(version: str) -> bytes:
    return f"/**\n* plotly.js (cartesian - minified) v{version}\n*/\nwindow.Plotly = {{}};\n".encode()


@pytest.fixture
def bundle_env(tmp_path, monkeypatch):
    path = tmp_path / "vendor" / pb.FILE_NAME
    monkeypatch.setenv(pb.ENV_PATH, str(path))
    pb.usable_bundle.cache_clear()
    yield path
    pb.usable_bundle.cache_clear()


def _served(prefix: str = "/") -> tuple[bytes, dict]:
    from frontend.app import create_dash

    app = create_dash(api_url="http://127.0.0.1:9", requests_pathname_prefix=prefix)
    response = app.server.test_client().get(prefix.rstrip("/") + PLOTLY_PATH)
    assert response.status_code == 200
    return response.data, dict(response.headers)


def test_the_cartesian_bundle_replaces_the_full_one(bundle_env):
    bundle_env.parent.mkdir(parents=True)
    bundle_env.write_bytes(fake_bundle(pb.plotly_js_version()))
    body, headers = _served()
    assert body == bundle_env.read_bytes() and headers["X-LayerTracer-Plotly"] == "cartesian"
    assert headers["Content-Type"].startswith("application/javascript")


def test_a_missing_or_stale_bundle_leaves_the_full_one(bundle_env):
    body, headers = _served()
    assert "X-LayerTracer-Plotly" not in headers and f"plotly.js v{pb.plotly_js_version()}" in body[:200].decode()
    bundle_env.parent.mkdir(parents=True)
    bundle_env.write_bytes(fake_bundle("0.0.1"))
    pb.usable_bundle.cache_clear()
    body, headers = _served()
    assert "X-LayerTracer-Plotly" not in headers and len(body) > 3_000_000


class _Registry:
    """A tiny npm registry on loopback: the package's metadata and its tarball."""

    def __init__(self, version: str, tarball: bytes, integrity_of: bytes) -> None:
        digest = base64.b64encode(hashlib.sha512(integrity_of).digest()).decode()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == f"/{pb.PACKAGE}/{version}":
                    body = json.dumps({"dist": {"tarball": f"{registry.url}/pkg.tgz", "integrity": f"sha512-{digest}"}}).encode()
                elif self.path == "/pkg.tgz":
                    body = tarball
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tarball(script: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in ((f"package/{pb.FILE_NAME}", script), ("package/LICENSE", b"MIT licence text")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fetch_checks_the_registry_integrity(tmp_path):
    good = _tarball(fake_bundle("9.8.7"))
    registry = _Registry("9.8.7", good, good)
    try:
        dest = tmp_path / "v" / pb.FILE_NAME
        assert pb.fetch("9.8.7", dest, registry.url) == dest
        assert dest.read_bytes() == fake_bundle("9.8.7") and pb.bundle_version(dest) == "9.8.7"
        assert (dest.parent / "LICENSE-plotly.js").read_bytes() == b"MIT licence text"
    finally:
        registry.close()
    tampered = _Registry("9.8.7", _tarball(b"/* plotly.js (cartesian) v9.8.7 */ evil()"), good)
    try:
        other = tmp_path / "w" / pb.FILE_NAME
        with pytest.raises(RuntimeError, match="does not match the registry's sha512 integrity"):
            pb.fetch("9.8.7", other, tampered.url)
        assert not other.exists()
        with pytest.raises(RuntimeError, match="could not download"):
            pb.fetch("1.2.3", other, tampered.url)
    finally:
        tampered.close()
    assert pb.main(["--version", "1.2.3", "--dest", str(tmp_path / "x.js"), "--registry", "http://127.0.0.1:9"]) == 1
