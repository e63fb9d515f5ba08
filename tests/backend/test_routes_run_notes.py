"""Names, tags and notes on every run (PATCH with a write token), and lineage: a trial launched from a
trace's freeze plan records the trace."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from api_helpers import API, experiment_body, one_line, register, trace_body
from backend import security
from backend.db.session import make_engine

SECRET = "a-real-secret-key-for-the-tests-0123456789"


def test_a_trace_is_renamed_tagged_and_annotated(client):
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"], name="first look")).json()
    assert trace["tags"] == [] and trace["notes"] is None
    changed = client.patch(f"{API}/traces/{trace['id']}", json={"tags": ["baseline", " qwen ", "baseline"],
                                                                  "notes": "the plan trains layer 0 only"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "first look" and body["tags"] == ["baseline", "qwen"]  # once each, trimmed
    assert body["notes"] == "the plan trains layer 0 only"
    again = client.get(f"{API}/traces/{trace['id']}").json()
    assert (again["tags"], again["notes"]) == (["baseline", "qwen"], "the plan trains layer 0 only")
    listed = client.get(f"{API}/traces").json()["data"][0]
    assert listed["tags"] == ["baseline", "qwen"]
    renamed = client.patch(f"{API}/traces/{trace['id']}", json={"name": "plan evidence"}).json()
    assert renamed["name"] == "plan evidence" and renamed["tags"] == ["baseline", "qwen"]  # the others kept
    cleared = client.patch(f"{API}/traces/{trace['id']}", json={"name": None, "notes": ""}).json()
    assert cleared["name"] is None and cleared["notes"] is None


@pytest.mark.parametrize("body, message", [
    ({"tags": ["a,b"]}, "tags"), ({"tags": ["x"] * 21}, "tags"), ({"name": "n" * 201}, "name"),
    ({"colour": "red"}, "colour"), ({"tags": ["   "]}, "tags"),
])
def test_bad_updates_are_one_line_errors(client, body, message):
    trace = client.post(f"{API}/traces", json=trace_body(register(client)["id"])).json()
    response = client.patch(f"{API}/traces/{trace['id']}", json=body)
    assert response.status_code == 422 and message in one_line(response)
    assert client.patch(f"{API}/traces/{'0' * 32}", json={"name": "x"}).status_code == 404


def test_a_trial_from_a_trace_records_it_and_experiments_are_annotated(client):
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"])).json()
    body = experiment_body(model["id"], source_trace_id=trace["id"], name="plan vs deep")
    exp = client.post(f"{API}/experiments", json=body)
    assert exp.status_code == 201, exp.text
    exp = exp.json()
    assert exp["source_trace_id"] == trace["id"] and "source_trace_id" not in exp["spec"]
    listed = client.get(f"{API}/experiments").json()["data"][0]
    assert listed["source_trace_id"] == trace["id"]
    patched = client.patch(f"{API}/experiments/{exp['id']}", json={"tags": ["demo"], "notes": "n"}).json()
    assert patched["tags"] == ["demo"] and patched["notes"] == "n" and patched["name"] == "plan vs deep"
    assert client.get(f"{API}/experiments").json()["data"][0]["tags"] == ["demo"]
    missing = client.post(f"{API}/experiments", json=experiment_body(model["id"], source_trace_id="f" * 32))
    assert missing.status_code == 422 and "no trace" in one_line(missing)


def test_updates_need_a_write_token(make_client, db_url):
    client = make_client(auth="token", secret_key=SECRET)
    engine = make_engine(db_url)
    with Session(engine) as s:
        token = security.create_token(s, "tests")
    engine.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    model = client.post(f"{API}/models", json={"source": "models/tiny"}, headers=headers).json()
    trace = client.post(f"{API}/traces", json=trace_body(model["id"]), headers=headers).json()
    assert client.patch(f"{API}/traces/{trace['id']}", json={"name": "x"}).status_code == 401
    share = client.post(f"{API}/shares", json={"kind": "trace", "id": trace["id"]}, headers=headers).json()
    refused = client.patch(f"{API}/traces/{trace['id']}", json={"name": "x"}, headers={"X-Share-Token": share["token"]})
    assert refused.status_code == 403 and "read-only" in one_line(refused)
    assert client.patch(f"{API}/traces/{trace['id']}", json={"name": "x"}, headers=headers).json()["name"] == "x"
