"""backend/api/routes/models.py: registering local folders (confined to the roots) and hub ids.

Through FastAPI's TestClient over real databases (a SQLite file and Postgres)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from backend import results
from backend.db.session import make_engine

from api_helpers import API, one_line, register, queued_messages


def test_register_models(client, roots, tmp_path, db_url):
    local = register(client, "models/tiny")
    assert local["source"] == str(roots / "models" / "tiny") and local["source_kind"] == "local"
    assert local["name"] == "tiny" and local["status"] == "queued" and local["job"]["attempts"] == 0
    again = client.post(f"{API}/models", json={"source": str(roots / "models" / "tiny")})
    assert again.status_code == 200 and again.json()["id"] == local["id"]
    hub = register(client, "Qwen/Qwen3-0.6B", name="qwen")
    assert (hub["source_kind"], hub["name"]) == ("hub", "qwen")
    assert client.get(f"{API}/models/{local['id']}").json()["id"] == local["id"]
    listing = client.get(f"{API}/models", params={"q": "qwen"}).json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == hub["id"]
    assert client.get(f"{API}/models", params={"limit": 1}).json()["count"] == 2
    # the inspect job exists, points at the model and was sent to the trace queue
    job = client.get(f"{API}/jobs/{local['job']['id']}").json()
    assert job["kind"] == "inspect" and job["resource"] == {"kind": "model", "id": local["id"]}
    assert len(queued_messages(tmp_path)) == 2
    # the worker stores the inspection; the API shows it
    engine = make_engine(db_url)
    with Session(engine) as s:
        info = {"architecture": "Qwen3ForCausalLM", "num_layers": 2, "block_kinds": ["attention"] * 2,
                "num_parameters": 100, "block_parameters": [40, 40]}
        results.store_model_info(s, model_id=local["id"], info=info, fingerprint="c" * 64)
    engine.dispose()
    shown = client.get(f"{API}/models/{local['id']}").json()
    assert shown["info"]["block_parameters"] == [40, 40] and shown["fingerprint"] == "c" * 64


@pytest.mark.parametrize(
    ("source", "status", "message"),
    [
        ("../outside/model", 400, "outside the allowed roots"),
        ("escape", 400, "outside the allowed roots"),
        ("/etc", 400, "outside the allowed roots"),
        ("models/../../outside/model", 400, "outside the allowed roots"),
        ("./models/missing", 400, "does not exist"),
        ("corpus.txt", 400, "is not a folder"),
        ("bad id with spaces", 422, "neither an existing folder nor a valid hub id"),
        ("org/name@", 422, "empty revision"),
        ("~nosuchuser/models", 400, "cannot expand '~'"),
        ("~/../../etc", 400, "outside the allowed roots"),
        ("./" + "x" * 300, 400, "does not exist"),
        ("", 422, "source"),
    ],
)
def test_model_paths_outside_roots_are_refused(client, source, status, message):
    response = client.post(f"{API}/models", json={"source": source})
    assert response.status_code == status
    assert message in one_line(response)

