"""Token mode: API tokens, share links (signed, per resource, read-only, revocable, expiring), the admin CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from backend import results, security
from backend.db.models import ApiToken, Share
from backend.db.session import make_engine
from backend.db.types import utcnow

from backend_factories import trace_result

API = "/api/v1"
SECRET = "a-real-secret-key-for-the-tests-0123456789"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def secured(make_client, db_url):
    """(client, headers with a valid token, engine) in token mode."""
    client = make_client(auth="token", secret_key=SECRET)
    engine = make_engine(db_url)
    with Session(engine) as s:
        token = security.create_token(s, "tests")
    yield client, {"Authorization": f"Bearer {token}"}, engine
    engine.dispose()


def _trace(client, headers, engine) -> dict:
    model = client.post(f"{API}/models", json={"source": "models/tiny"}, headers=headers).json()
    trace = client.post(f"{API}/traces", json={"model_id": model["id"], "task_sets": ["antonyms_en"]},
                        headers=headers).json()
    with Session(engine) as s:
        results.store_trace_result(s, trace_id=trace["id"], result=trace_result())
    return trace


def test_requests_need_a_token(secured):
    client, headers, _ = secured
    assert client.get(f"{API}/health").status_code == 200
    for method, path in (("get", "/traces"), ("get", "/models"), ("post", "/models"), ("get", "/task-sets"),
                         ("get", "/jobs/x"), ("post", "/shares"), ("delete", "/shares/x")):
        response = getattr(client, method)(API + path)
        assert response.status_code == 401, path
        assert "authentication required" in response.json()["detail"]
    assert client.get(f"{API}/traces", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(f"{API}/traces", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get(f"{API}/traces", headers=headers).status_code == 200
    response = client.post(f"{API}/models", json={"source": "models/tiny"}, headers=headers)
    assert response.status_code == 201


def test_revoked_token_stops_working(secured):
    client, headers, engine = secured
    with Session(engine) as s:
        assert security.revoke_token(s, "tests") is True
        assert security.revoke_token(s, "tests") is False
    assert client.get(f"{API}/traces", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(secured):
    _, headers, engine = secured
    token = headers["Authorization"].split()[1]
    with Session(engine) as s:
        row = s.query(ApiToken).one()
        assert row.token_hash == security.hash_token(token) and token not in row.token_hash


def test_share_link_grants_reading_one_resource(secured):
    client, headers, engine = secured
    trace = _trace(client, headers, engine)
    other = _trace(client, headers, engine)
    share = client.post(f"{API}/shares", json={"kind": "trace", "id": trace["id"]}, headers=headers).json()
    token = share["token"]
    assert share["url"].endswith(f"/api/v1/traces/{trace['id']}?share={token}")
    assert share["dashboard_path"] == f"/traces/{trace['id']}?share={token}"
    for path in ("", "/result", "/overview", "/tasks/task0", "/position", "/freeze-plan", "/export.csv"):
        response = client.get(f"{API}/traces/{trace['id']}{path}", params={"share": token})
        assert response.status_code == 200, path
    assert client.get(f"{API}/traces/{trace['id']}", headers={"X-Share-Token": token}).status_code == 200
    # nothing else
    for path in (f"/traces/{other['id']}", "/traces", "/models", f"/jobs/{trace['job']['id']}", "/shares",
                 f"/traces/{trace['id']}x"):
        response = client.get(API + path, params={"share": token})
        assert response.status_code == 403, path
        assert "does not grant access" in response.json()["detail"]
    # no writes, not even on its own resource
    for method, path in (("post", "/traces"), ("post", f"/jobs/{trace['job']['id']}/cancel"),
                         ("delete", f"/shares/{share['id']}"), ("post", "/shares")):
        response = client.request(method.upper(), API + path, params={"share": token}, json={})
        assert response.status_code == 403, path
        assert "read-only" in response.json()["detail"]
    # forged or tampered links
    forged = security.share_token("another-secret-key-0123456789", share["id"])
    assert client.get(f"{API}/traces/{trace['id']}", params={"share": forged}).status_code == 401
    assert client.get(f"{API}/traces/{trace['id']}", params={"share": token[:-2] + "xx"}).status_code == 401
    assert client.get(f"{API}/traces/{trace['id']}", params={"share": "garbage"}).status_code == 401


def test_revoked_and_expired_shares(secured):
    client, headers, engine = secured
    trace = _trace(client, headers, engine)
    revoked = client.post(f"{API}/shares", json={"kind": "trace", "id": trace["id"]}, headers=headers).json()
    expiring = client.post(f"{API}/shares", json={"kind": "trace", "id": trace["id"], "expires_in_seconds": 3600},
                           headers=headers).json()
    assert expiring["expires_at"] and not expiring["expired"]
    assert client.get(f"{API}/traces/{trace['id']}", params={"share": revoked["token"]}).status_code == 200
    assert client.delete(f"{API}/shares/{revoked['id']}", headers=headers).status_code == 204
    response = client.get(f"{API}/traces/{trace['id']}", params={"share": revoked["token"]})
    assert response.status_code == 403 and "revoked" in response.json()["detail"]
    assert client.get(f"{API}/traces/{trace['id']}", params={"share": expiring["token"]}).status_code == 200
    with Session(engine) as s:  # move the expiry into the past instead of waiting for it
        s.execute(update(Share).where(Share.id == expiring["id"]).values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    response = client.get(f"{API}/traces/{trace['id']}", params={"share": expiring["token"]})
    assert response.status_code == 403 and "expired" in response.json()["detail"]
    listing = client.get(f"{API}/shares", params={"resource_id": trace["id"]}, headers=headers).json()
    assert listing["count"] == 2
    assert {(s["revoked"], s["expired"]) for s in listing["data"]} == {(True, False), (False, True)}


def test_experiment_share(secured, roots):
    client, headers, _ = secured
    model = client.post(f"{API}/models", json={"source": "models/tiny"}, headers=headers).json()
    exp = client.post(f"{API}/trials", json={"model_id": model["id"], "corpus": "corpus.txt", "allocation": "full"},
                      headers=headers)
    assert exp.status_code == 201, exp.text
    exp = exp.json()
    share = client.post(f"{API}/shares", json={"kind": "experiment", "id": exp["id"]}, headers=headers).json()
    assert client.get(f"{API}/experiments/{exp['id']}", params={"share": share["token"]}).status_code == 200
    assert client.get(f"{API}/experiments/{exp['id']}/metrics", params={"share": share["token"]}).status_code == 200
    assert client.get(f"{API}/traces/{exp['id']}", params={"share": share["token"]}).status_code == 403


def test_share_signatures():
    token = security.share_token(SECRET, "0" * 32)
    assert security.share_id_from_token(SECRET, token) == "0" * 32
    assert security.share_id_from_token("other-secret-0123456789", token) is None
    assert security.share_id_from_token(SECRET, "1" * 32 + token[32:]) is None


def test_admin_cli(tmp_path):
    env = {**os.environ, "LAYERTRACER_DATA_DIR": str(tmp_path), "LAYERTRACER_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "backend.admin", *args], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=120)

    assert run("migrate").returncode == 0
    created = run("create-token", "alice")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("lt_") and len(token) > 30
    again = run("create-token", "alice")
    assert again.returncode == 2 and "exists already" in again.stderr
    engine = make_engine(f"sqlite:///{tmp_path}/a.db")
    with Session(engine) as s:
        assert security.check_token(s, token) is True
    assert run("revoke-token", "alice").returncode == 0
    with Session(engine) as s:
        assert security.check_token(s, token) is False
    engine.dispose()
    missing = run("revoke-token", "bob")
    assert missing.returncode == 2 and "no token named" in missing.stderr
