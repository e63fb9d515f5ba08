"""backend/api/routes/jobs.py: status, log, cancel and retry.

Through FastAPI's TestClient over real databases (a SQLite file and Postgres)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend import jobs
from backend.db.session import make_engine

from api_helpers import API, register, trace_body


def test_jobs_cancel_retry_and_log(client, db_url):
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"])).json()
    job_id = trace["job"]["id"]
    assert client.post(f"{API}/jobs/{job_id}/retry").status_code == 409
    engine = make_engine(db_url)
    with Session(engine) as s:
        jobs.claim_job(s, job_id=job_id, worker_id="w", lease_seconds=60)
        jobs.heartbeat(s, job_id=job_id, worker_id="w", log="loading\n", progress={"stage": "load", "percent": 1.0})
        jobs.heartbeat(s, job_id=job_id, worker_id="w", log="tracing\n")
        cancelled = client.post(f"{API}/jobs/{job_id}/cancel").json()
        assert cancelled["status"] == "running" and cancelled["cancel_requested"] is True
        assert jobs.heartbeat(s, job_id=job_id, worker_id="w") is True
        jobs.finish_job(s, job_id=job_id, worker_id="w", status="cancelled")
    engine.dispose()
    log = client.get(f"{API}/jobs/{job_id}/log", params={"tail": 1}).json()
    assert log["lines"] == ["tracing"]
    assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "cancelled"
    retried = client.post(f"{API}/jobs/{job_id}/retry").json()
    assert (retried["status"], retried["attempts"], retried["cancel_requested"]) == ("queued", 0, False)
    assert client.get(f"{API}/jobs", params={"kind": "trace"}).json()["count"] == 1
    # cancel of a queued job is immediate
    other = client.post(f"{API}/traces", json=trace_body(model["id"])).json()
    assert client.post(f"{API}/jobs/{other['job']['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"{API}/traces/{other['id']}").json()["status"] == "cancelled"

