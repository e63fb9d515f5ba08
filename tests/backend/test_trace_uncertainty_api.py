"""The API serves what the engine stored about how sure a trace is: each task's particle bootstrap and
the plan's stability, in the trace's summary, its overview and its freeze plan; with the overview's
depth views (log rank, top-k accuracy). A result written before the bootstrap reads with nulls."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from backend import jobs, results
from backend.db.session import make_engine

from backend_factories import trace_result

from api_helpers import API, register, trace_body


@pytest.fixture
def db_url(tmp_path):
    """SQLite only: these views do not depend on the database (the contract tests cover both)."""
    from backend.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'test.db'}"
    upgrade(url)
    return url


def finished_trace(client, db_url, data: dict) -> str:
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"])).json()
    engine = make_engine(db_url)
    with Session(engine) as s:
        assert jobs.claim_job(s, job_id=trace["job"]["id"], worker_id="w", lease_seconds=60) is not None
        results.store_trace_result(s, trace_id=trace["id"], result=data)
        jobs.finish_job(s, job_id=trace["job"]["id"], worker_id="w", status="succeeded")
    engine.dispose()
    return trace["id"]


def test_summary_overview_and_plan_carry_the_bootstrap(client, db_url):
    data = trace_result(num_layers=6, tasks=3, prompts=5)
    trace_id = finished_trace(client, db_url, data)
    summary = client.get(f"{API}/traces/{trace_id}").json()["summary"]
    for name, task in data["tasks"].items():
        boot = task["particle_bootstrap"]
        assert summary["particle_uncertainty"][name] == {k: boot[k] for k in ("interval", "agreement", "warning")}
    assert summary["warnings"] == [t["particle_bootstrap"]["warning"] for t in data["tasks"].values()]  # 5 prompts: all warn
    assert summary["freeze_plan"]["stability"] == data["freeze_plan"]["stability"]
    overview = client.get(f"{API}/traces/{trace_id}/overview").json()
    assert overview["tasks"]["task1"]["particle_bootstrap"] == data["tasks"]["task1"]["particle_bootstrap"]
    ranks = data["tasks"]["task2"]["target_rank"]
    assert overview["tasks"]["task2"]["topk_accuracy"]["5"] == pytest.approx([sum(r[l] < 5 for r in ranks) / 5 for l in range(6)])
    plan = client.get(f"{API}/traces/{trace_id}/freeze-plan").json()
    assert plan["stability"]["resamples"] == data["options"]["bootstrap_resamples"]
    assert 0 <= plan["stability"]["share"] <= 1


def test_a_result_from_before_the_bootstrap(client, db_url):
    trace_id = finished_trace(client, db_url, trace_result(num_layers=4, tasks=2, prompts=3, uncertainty=False))
    summary = client.get(f"{API}/traces/{trace_id}").json()["summary"]
    assert summary["particle_uncertainty"] == {"task0": None, "task1": None} and summary["warnings"] == []
    assert client.get(f"{API}/traces/{trace_id}/overview").json()["tasks"]["task0"].get("particle_bootstrap") is None
