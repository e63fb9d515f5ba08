"""POST /traces with ``options.lens = "tuned"``: queued only when the service's cache holds the model's
translator file; otherwise a 409 in one line that says how to get one (SQLite)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend import jobs, results
from layertracer.spec.jobs import parse_job_spec

from api_helpers import API, one_line, queued_messages, register, trace_body

FINGERPRINT = "sha256:0123456789abcdef"


def _tuned(model_id: str) -> dict:
    body = trace_body(model_id)
    body["options"] = {**body["options"], "lens": "tuned"}
    return body


def _fingerprinted(client, fingerprint: str = FINGERPRINT) -> dict:
    model = register(client)
    with Session(client.app.state.engine) as session:
        results.store_model_info(session, model_id=model["id"], info={"num_layers": 4}, fingerprint=fingerprint)
    return model


def test_a_tuned_trace_needs_the_models_file_in_the_cache(client, db_url, tmp_path):
    if "postgres" in db_url:
        return  # the rule is the route's, not the database's
    model = _fingerprinted(client)
    before = queued_messages(tmp_path)
    response = client.post(f"{API}/traces", json=_tuned(model["id"]))
    assert response.status_code == 409
    line = one_line(response)
    cache = tmp_path / "data" / "tuned-lens"
    assert "no tuned lens for model" in line and FINGERPRINT in line
    assert "train one on the service's machine with `layertracer train-lens --model " in line
    assert f"--corpus CORPUS --out {cache / 'sha256-0123456789abcdef.safetensors'}`" in line
    assert queued_messages(tmp_path) == before  # nothing queued

    cache.mkdir(parents=True)
    (cache / "sha256-0123456789abcdef.safetensors").write_bytes(b"translators")  # the worker checks the content
    response = client.post(f"{API}/traces", json=_tuned(model["id"]))
    assert response.status_code == 201, response.text
    with Session(client.app.state.engine) as session:  # the job spec is what the worker reads
        spec = parse_job_spec("trace", jobs.get_job(session, response.json()["job"]["id"]).spec)
    assert spec.options["lens"] == "tuned"
    # The logit lens needs no file; a lens the spec does not name is the schema's 422.
    assert client.post(f"{API}/traces", json=trace_body(model["id"])).status_code == 201
    bad = trace_body(model["id"])
    bad["options"] = {**bad["options"], "lens": "tuned-ish"}
    assert client.post(f"{API}/traces", json=bad).status_code == 422


def test_a_model_without_a_fingerprint_or_with_a_strange_one(client, db_url):
    if "postgres" in db_url:
        return
    model = register(client)
    response = client.post(f"{API}/traces", json=_tuned(model["id"]))
    assert response.status_code == 409 and "has no fingerprint yet" in one_line(response)
    _fingerprinted(client, "../../etc/passwd")  # the same model, a fingerprint no loader writes
    response = client.post(f"{API}/traces", json=_tuned(model["id"]))
    assert response.status_code == 409 and "not a model fingerprint" in one_line(response)
