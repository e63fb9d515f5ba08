"""Jobs end to end through the API, the broker, real worker processes and the database, in embedded
mode (SQLite + filesystem broker) and served mode (Postgres + Redis)."""

from __future__ import annotations

import pytest

from harness import HUB_COMMIT, HUB_REPO, wait_for

QUICK = {"limit": 2, "similarity": False, "position_view": False}


def test_trace_end_to_end(service, model_root):
    model = service.register_model(model_root / "tiny")
    info = model["info"]
    assert info["num_layers"] == 4 and info["architecture"] == "Qwen3ForCausalLM"
    assert len(info["block_parameters"]) == 4 and info["fingerprint"] == model["fingerprint"]

    trace = service.post("/traces", {"model_id": model["id"], "task_sets": ["antonyms_en", "plural_en"],
                                     "perturbations": ["skip"], "options": QUICK})
    job = service.wait_job(trace["job"]["id"])
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["error"] is None
    assert job["progress"]["percent"] == 100.0
    result = service.client.get(f"/traces/{trace['id']}/result").json()
    assert list(result["tasks"]) == ["antonyms_en", "plural_en"] and result["num_layers"] == 4
    assert result["model"]["fingerprint"] == model["fingerprint"]
    assert all(len(row) == 4 for row in result["tasks"]["plural_en"]["target_prob"])
    overview = service.client.get(f"/traces/{trace['id']}/overview")
    assert overview.status_code == 200 and list(overview.json()["tasks"]) == ["antonyms_en", "plural_en"]
    log = service.client.get(f"/jobs/{job['id']}/log").json()
    assert any("attempt 1 started" in line for line in log["lines"])
    runs = service.runs(job["id"])
    assert [r["event"] for r in runs] == ["start", "end"] and runs[-1]["status"] == "succeeded"


def test_trace_of_a_hub_id_end_to_end(service):
    """A model named as the hub names it (org/name@tag), read by the worker from the Hugging Face
    cache offline; the result records the commit the tag resolved to."""
    model = service.post("/models", {"source": f"{HUB_REPO}@v1"})
    assert model["source_kind"] == "hub" and model["source"] == f"{HUB_REPO}@v1"
    assert service.wait_job(model["job"]["id"], timeout=120)["status"] == "succeeded"
    trace = service.post("/traces", {"model_id": model["id"], "task_sets": ["antonyms_en"], "options": QUICK})
    job = service.wait_job(trace["job"]["id"])
    assert job["status"] == "succeeded", job
    result = service.client.get(f"/traces/{trace['id']}/result").json()
    assert result["model"]["commit"] == HUB_COMMIT and result["model"]["revision"] == "v1"
    assert result["model"]["source"] == f"{HUB_REPO}@v1"
    absent = service.post("/models", {"source": "acme/absent"})
    failed = service.wait_job(absent["job"]["id"], timeout=120)
    assert failed["status"] == "failed" and "is not in the Hugging Face cache" in failed["error"]


def _long_trace(service, model_id: str) -> dict:
    """A trace that runs for many seconds on the tiny model (every task, several stochastic scans)."""
    return service.post("/traces", {
        "model_id": model_id, "task_sets": ["all"],
        "perturbations": ["skip", "mask:keep=0.5,draws=4", "noise:scale=1,draws=4"],
        "options": {"limit": 40, "batch_size": 1, "similarity": False, "position_view": False},
    })


def test_cancel_a_running_trace(service, model_root):
    model = service.register_model(model_root / "tiny")
    trace = _long_trace(service, model["id"])
    job_id = trace["job"]["id"]
    wait_for(lambda: (service.job(job_id).get("progress") or {}).get("percent", 0) > 0, 60,
             "the trace to report progress")
    response = service.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    job = service.wait_job(job_id, timeout=30)
    assert job["status"] == "cancelled" and 0 < job["progress"]["percent"] < 100
    assert service.client.get(f"/traces/{trace['id']}/result").status_code == 409
    assert service.runs(job_id)[-1]["status"] == "cancelled"
    # The worker lives on and takes the next job.
    quick = service.post("/traces", {"model_id": model["id"], "task_sets": ["antonyms_en"], "options": QUICK})
    assert service.wait_job(quick["job"]["id"])["status"] == "succeeded"


def test_cancel_a_queued_job_never_runs_it(service, model_root):
    model = service.register_model(model_root / "tiny")
    blocker = _long_trace(service, model["id"])
    queued = service.post("/traces", {"model_id": model["id"], "task_sets": ["antonyms_en"], "options": QUICK})
    wait_for(lambda: service.job(blocker["job"]["id"])["status"] == "running", 60, "the first trace to run")
    assert service.client.post(f"/jobs/{queued['job']['id']}/cancel").json()["status"] == "cancelled"
    service.client.post(f"/jobs/{blocker['job']['id']}/cancel")
    assert service.wait_job(blocker["job"]["id"], timeout=30)["status"] == "cancelled"
    # The cancelled job's message is delivered after the blocker, and dropped: no run at all.
    follow = service.post("/traces", {"model_id": model["id"], "task_sets": ["plural_en"], "options": QUICK})
    assert service.wait_job(follow["job"]["id"])["status"] == "succeeded"
    job = service.job(queued["job"]["id"])
    assert job["status"] == "cancelled" and job["attempts"] == 0 and service.runs(job["id"]) == []
