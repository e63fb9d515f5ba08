"""Secure by default: no public address without auth, a Host allowlist and loopback peers in local
mode, and trust_remote_code only where the server's own setting and an admin token allow it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from backend import security
from backend.db.session import make_engine
from backend.exposure import host_name, is_loopback_host
from backend.settings import Settings

API = "/api/v1"
SECRET = "a-real-secret-key-for-the-tests-0123456789"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("::ffff:127.0.0.1", True), ("app.localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("192.168.1.2", False),
    ("example.org", False), ("localhost.example.org", False),
])
def test_what_counts_as_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("header, name", [
    ("127.0.0.1:8000", "127.0.0.1"), ("LOCALHOST", "localhost"), ("[::1]:8000", "::1"), ("[::1]", "::1"),
    ("Attacker.Example:80", "attacker.example"), ("", ""),
])
def test_host_header_names(header, name):
    assert host_name(header) == name


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "myserver.example.org"])
def test_settings_refuse_a_public_address_without_auth(host):
    with pytest.raises(ValidationError, match="refusing to serve .* without authentication"):
        Settings(host=host)
    assert Settings(host=host, auth="token", secret_key=SECRET).local_only is False
    exposed = Settings(host=host, insecure_expose_without_auth=True)
    assert exposed.auth == "none" and exposed.local_only is False


def test_default_host_allowlist_follows_the_mode():
    assert set(Settings().allowed_hosts) == {"localhost", "127.0.0.1", "::1"}
    assert "127.0.0.2" in Settings(host="127.0.0.2").allowed_hosts
    assert Settings(auth="token", secret_key=SECRET).allowed_hosts == ["*"]
    assert Settings(allowed_hosts="lab.example.org,*.lab.internal").allowed_hosts == ["lab.example.org", "*.lab.internal"]


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200),
    ("attacker.example", 400), ("attacker.example:8000", 400), ("127.0.0.1.attacker.example", 400),
])
def test_local_mode_answers_loopback_host_names_only(client, host, status):
    """A DNS-rebinding page reaches 127.0.0.1 with its own name in the Host header: refused."""
    response = client.get(f"{API}/models", headers={"Host": host})
    assert response.status_code == status, response.text
    if status == 400:
        assert "is not allowed here" in response.json()["detail"]


def test_an_allowlist_with_wildcards(make_client):
    client = make_client(allowed_hosts=["127.0.0.1", "*.lab.internal"])
    assert client.get(f"{API}/models", headers={"Host": "gpu1.lab.internal"}).status_code == 200
    assert client.get(f"{API}/models", headers={"Host": "lab.internal.evil"}).status_code == 400


def test_token_mode_takes_any_host_and_still_needs_a_token(make_client):
    client = make_client(auth="token", secret_key=SECRET)
    assert client.get(f"{API}/models", headers={"Host": "layertracer.example.org"}).status_code == 401


async def _get_from(app, peer: str, path: str = f"{API}/health") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        return await http.get(path)


@pytest.mark.parametrize("peer, status", [("127.0.0.1", 200), ("::1", 200), ("10.0.0.7", 403), ("192.168.1.20", 403)])
def test_local_mode_refuses_peers_on_other_machines(client, peer, status):
    """Bound to 0.0.0.0 by hand (uvicorn --host 0.0.0.0) in local mode: other machines get 403."""
    import asyncio

    response = asyncio.run(_get_from(client.app, peer))
    assert response.status_code == status
    if status == 403:
        assert "answers this machine only" in response.json()["detail"]


def test_the_explicit_override_serves_other_peers(make_client):
    import asyncio

    client = make_client(insecure_expose_without_auth=True)
    assert asyncio.run(_get_from(client.app, "10.0.0.7")).status_code == 200


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAYERTRACER_")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "layertracer", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=environment, stdin=subprocess.DEVNULL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["api --host", "LAYERTRACER_HOST api", "up --host"])
def test_the_cli_refuses_to_expose_the_service_without_auth(tmp_path, how):
    port = str(_free_port())
    env = {"LAYERTRACER_DATA_DIR": str(tmp_path / "data")}
    if how == "api --host":
        proc = _cli("api", "--host", "0.0.0.0", "--port", port, **env)
    elif how == "LAYERTRACER_HOST api":
        proc = _cli("api", "--port", port, LAYERTRACER_HOST="0.0.0.0", **env)
    else:
        proc = _cli("up", "--host", "0.0.0.0", "--port", port, "--no-worker", **env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve 0.0.0.0 without authentication")
    assert "LAYERTRACER_AUTH=token" in lines[0]


def test_a_placeholder_secret_is_named_not_a_migration_failure(tmp_path):
    proc = _cli("up", "--port", str(_free_port()), "--no-worker", LAYERTRACER_DATA_DIR=str(tmp_path / "d"),
                LAYERTRACER_AUTH="token")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: LAYERTRACER_AUTH=token needs a real LAYERTRACER_SECRET_KEY "
                                   "(at least 16 characters, not the placeholder)")


# -- trust_remote_code ---------------------------------------------------------------------------------
REMOTE = {"source": "models/tiny", "trust_remote_code": True}


def test_remote_code_is_refused_unless_the_server_allows_it(client):
    response = client.post(f"{API}/models", json=REMOTE)
    assert response.status_code == 403
    assert "LAYERTRACER_ALLOW_REMOTE_CODE setting is off" in response.json()["detail"]
    assert client.get(f"{API}/models").json()["count"] == 0


def test_local_mode_with_the_setting_lets_the_machines_user_ask(make_client):
    client = make_client(allow_remote_code=True)
    response = client.post(f"{API}/models", json=REMOTE)
    assert response.status_code == 201 and response.json()["trust_remote_code"] is True


def test_token_mode_needs_an_admin_token_for_remote_code(make_client, db_url):
    client = make_client(auth="token", secret_key=SECRET, allow_remote_code=True)
    engine = make_engine(db_url)
    with Session(engine) as s:
        user = security.create_token(s, "user")
        admin = security.create_token(s, "admin", admin=True)
    engine.dispose()
    refused = client.post(f"{API}/models", json=REMOTE, headers={"Authorization": f"Bearer {user}"})
    assert refused.status_code == 403 and "only an admin token" in refused.json()["detail"]
    accepted = client.post(f"{API}/models", json=REMOTE, headers={"Authorization": f"Bearer {admin}"})
    assert accepted.status_code == 201 and accepted.json()["trust_remote_code"] is True, accepted.text
    listed = client.get(f"{API}/models", headers={"Authorization": f"Bearer {user}"}).json()
    assert listed["count"] == 1  # the user's refused request left nothing behind
