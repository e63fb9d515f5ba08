"""backend/api/routes/traces.py: submitting traces and reading every view of their results.

Through FastAPI's TestClient over real databases (a SQLite file and Postgres)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend import jobs, results
from backend.db.models import TracePart
from backend.db.session import make_engine

from backend_factories import trace_result

from layertracer.spec.jobs import parse_job_spec

from api_helpers import API, one_line, register, queued_messages, trace_body


def _independent_overview_task(task: dict, L: int) -> dict:
    """What the overview must hold for one task, computed here from the per-prompt arrays."""
    def means(matrix):
        return [sum(row[l] for row in matrix) / len(matrix) for l in range(L)]

    top1 = []
    for l in range(L):
        counts = {}
        for row in task["top_tokens"]:
            counts[row[l][0]] = counts.get(row[l][0], 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        top1.append([[tok, n] for tok, n in ranked])
    return {"num_prompts": len(task["prompts"]), "mean_target_prob": task["mean_target_prob"],
            "mean_target_rank": means(task["target_rank"]), "mean_entropy": means(task["entropy"]), "top1_tokens": top1}


def test_create_trace_and_read_every_view(client, db_url, tmp_path):
    model = register(client)
    response = client.post(f"{API}/traces", json=trace_body(model["id"], name="first"))
    assert response.status_code == 201, response.text
    trace = response.json()
    assert trace["status"] == "queued" and trace["summary"] is None and trace["model"]["id"] == model["id"]
    assert trace["provenance"]["seeds"] == [3] and trace["provenance"]["model_source"] == model["source"]
    assert trace["spec"]["perturbations"] == ["skip", "mask:keep=0.5,draws=3"]
    job = client.get(f"{API}/jobs/{trace['job']['id']}").json()
    assert job["kind"] == "trace" and job["queue"] == "trace"
    assert job["resource"] == {"kind": "trace", "id": trace["id"]}
    # the job spec is what the worker reads
    engine = make_engine(db_url)
    with Session(engine) as s:
        spec = jobs.get_job(s, trace["job"]["id"]).spec
        assert spec["tasks"] == ["antonyms_en"] and spec["limit"] == 5 and spec["model_id"] == model["id"]
        assert spec["options"]["seed"] == 3 and "limit" not in spec["options"]
        assert parse_job_spec("trace", spec).model_dump() == spec  # the worker's parser takes it whole
    assert client.get(f"{API}/traces/{trace['id']}/result").status_code == 409
    assert "no result yet" in one_line(client.get(f"{API}/traces/{trace['id']}/overview"))
    assert "no result yet" in one_line(client.get(f"{API}/traces/{trace['id']}/export.csv"))
    # the worker runs it
    data = trace_result(num_layers=6, tasks=3, prompts=5)
    with Session(engine) as s:
        job_id = trace["job"]["id"]
        assert jobs.claim_job(s, job_id=job_id, worker_id="w", lease_seconds=60) is not None
        jobs.heartbeat(s, job_id=job_id, worker_id="w",
                       progress={"stage": "lens", "done": 1, "total": 2, "percent": 50.0, "eta_seconds": 3.0})
        running = client.get(f"{API}/traces/{trace['id']}").json()
        assert running["status"] == "running" and running["job"]["progress"]["percent"] == 50.0
        results.store_trace_result(s, trace_id=trace["id"], result=data)
        jobs.finish_job(s, job_id=job_id, worker_id="w", status="succeeded")
    engine.dispose()
    done = client.get(f"{API}/traces/{trace['id']}").json()
    assert done["status"] == "succeeded" and done["finished_at"]
    assert done["summary"]["num_layers"] == 6 and done["summary"]["tasks"] == ["task0", "task1", "task2"]
    assert done["summary"]["particles"] == {"task0": None, "task1": 2, "task2": 3}
    assert done["summary"]["freeze_plan"]["train_ranges"] == "0-2"
    assert done["provenance"]["model_fingerprint"] == "f" * 64 and done["provenance"]["seeds"] == [7]
    assert done["provenance"]["code_version"] == "0.1.0"

    full = client.get(f"{API}/traces/{trace['id']}/result")
    assert full.headers["content-type"] == "application/json"
    assert full.json() == data

    overview = client.get(f"{API}/traces/{trace['id']}/overview").json()
    assert list(overview["tasks"]) == ["task0", "task1", "task2"]
    assert overview["tasks"]["task1"]["mean_target_prob"] == pytest.approx(data["tasks"]["task1"]["mean_target_prob"])
    assert "entropy" not in overview["tasks"]["task2"] and "js" not in overview["sensitivities"]["skip"]
    task1 = client.get(f"{API}/traces/{trace['id']}/tasks/task1").json()
    assert task1 == data["tasks"]["task1"]  # every per-prompt array, as the engine wrote it
    assert client.get(f"{API}/traces/{trace['id']}/tasks/nope").status_code == 404
    for gone in ("/heatmap", "/tasks/task1/prompts", "/sensitivity"):  # read by nothing: removed
        assert client.get(f"{API}/traces/{trace['id']}{gone}").status_code == 404

    assert client.get(f"{API}/traces/{trace['id']}/position").json()["task"] == "task0"
    assert client.get(f"{API}/traces/{trace['id']}/freeze-plan").json()["boundary"] == 3

    exported = client.get(f"{API}/traces/{trace['id']}/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 18 and rows[0]["task"] == "task0" and rows[0]["layer"] == "0"
    particle_rows = [(r["task"], r["layer"]) for r in rows if r["is_particle"] == "1"]
    assert particle_rows == [("task1", "2"), ("task2", "3")]
    assert float(rows[7]["mean_prob"]) == pytest.approx(data["tasks"]["task1"]["mean_target_prob"][1])
    # Means over the prompts, computed here from the result's [P][L] arrays.
    entropy = data["tasks"]["task2"]["entropy"]
    assert [float(r["mean_entropy"]) for r in rows[12:18]] == pytest.approx([sum(p[l] for p in entropy) / 5 for l in range(6)])
    ranks = data["tasks"]["task0"]["target_rank"]
    assert [float(r["mean_rank"]) for r in rows[0:6]] == pytest.approx([sum(p[l] for p in ranks) / 5 for l in range(6)])
    assert list(rows[0])[-1] == "mean_js_skip"
    assert [float(r["mean_js_skip"]) for r in rows[6:12]] == pytest.approx(data["sensitivities"]["skip"]["mean_js"])
    assert [r["normalized_depth"] for r in rows[:6]] == [f"{(l + 1) / 6:.6g}" for l in range(6)]
    assert json.loads(client.get(f"{API}/traces/{trace['id']}/export.json").content) == data

    listing = client.get(f"{API}/traces", params={"status": "succeeded"}).json()
    assert listing["count"] == 1 and listing["data"][0]["vulnerable_layer"] == data["vulnerable_layer"]
    assert client.get(f"{API}/traces", params={"status": "queued"}).json()["count"] == 0
    assert client.get(f"{API}/traces", params={"q": "first"}).json()["count"] == 1


def test_trace_idempotency_key(client, tmp_path):
    model = register(client)
    before = len(queued_messages(tmp_path))
    key = "k" * 200  # the longest key the API takes
    first = client.post(f"{API}/traces", json=trace_body(model["id"]), headers={"Idempotency-Key": key})
    second = client.post(f"{API}/traces", json=trace_body(model["id"]), headers={"Idempotency-Key": key})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert client.get(f"{API}/traces").json()["count"] == 1
    assert len(queued_messages(tmp_path)) == before + 1
    too_long = client.post(f"{API}/traces", json=trace_body(model["id"]), headers={"Idempotency-Key": "k" * 201})
    assert too_long.status_code == 422 and "idempotency-key" in one_line(too_long).lower()


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"model_id": "nope"}, 404, "unknown model"),
        ({"task_sets": ["no_such_set"]}, 404, "unknown task set"),
        ({"task_sets": []}, 422, "task_sets"),
        ({"task_sets": ["antonyms_en", "antonyms_en"]}, 422, "listed twice"),
        ({"perturbations": ["explode"]}, 422, "unknown perturbation 'explode'"),
        ({"perturbations": ["mask:keep=1.5"]}, 422, "mask keep ratio must be in [0, 1]"),
        ({"perturbations": ["noise:scale=-1"]}, 422, "noise scale must be in [0, 100]"),
        ({"perturbations": ["noise:scale=abc"]}, 422, "not a number"),
        ({"perturbations": ["skip:keep=0.5"]}, 422, "bad option"),
        ({"perturbations": ["mask:draws=0"]}, 422, "draws must be"),
        ({"options": {"batch_size": 0}}, 422, "options.batch_size"),
        ({"options": {"top_k": 100000}}, 422, "options.top_k"),
        ({"options": {"particle_delta": 2}}, 422, "options.particle_delta"),
        ({"options": {"plan_boundary": "max"}}, 422, "options.plan_boundary"),
        ({"options": {"limit": -1}}, 422, "options.limit"),
        ({"options": {"position_task": "nope"}}, 422, "position_task"),
        ({"options": {"typo": 1}}, 422, "options.typo"),
        ({"extra": 1}, 422, "extra"),
    ],
)
def test_bad_trace_requests(client, change, status, message):
    model = register(client)
    body = trace_body(model["id"])
    body.update(change)
    response = client.post(f"{API}/traces", json=body)
    assert response.status_code == status, response.text
    assert message in one_line(response)


def test_result_etag_and_replacement(client, db_url):
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"])).json()
    engine = make_engine(db_url)
    first = trace_result(num_layers=3, tasks=1, prompts=2, seed=1)
    with Session(engine) as s:
        results.store_trace_result(s, trace_id=trace["id"], result=first)
    response = client.get(f"{API}/traces/{trace['id']}/result")
    etag = response.headers["etag"]
    assert response.json() == first
    cached = client.get(f"{API}/traces/{trace['id']}/result", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    # a re-run stores a different result: the cache must not serve the old one
    second = trace_result(num_layers=3, tasks=1, prompts=2, seed=2)
    with Session(engine) as s:
        results.store_trace_result(s, trace_id=trace["id"], result=second)
    engine.dispose()
    fresh = client.get(f"{API}/traces/{trace['id']}/result", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json() == second and fresh.headers["etag"] != etag


def test_concurrent_submissions_through_the_api(client):
    """Threads posting at once: one model per source, one trace per Idempotency-Key, none lost."""
    import threading

    from fastapi.testclient import TestClient

    app = client.app
    barrier = threading.Barrier(8)
    models, traces, errors = [], [], []

    def register_same() -> None:
        try:
            with TestClient(app, base_url="http://127.0.0.1:8000") as c:
                barrier.wait(timeout=30)
                r = c.post(f"{API}/models", json={"source": "models/tiny"})
                assert r.status_code in (200, 201), r.text
                models.append(r.json()["id"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=register_same) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(models) == 8 and len(set(models)) == 1

    def submit(key: str) -> None:
        try:
            with TestClient(app, base_url="http://127.0.0.1:8000") as c:
                barrier.wait(timeout=30)
                r = c.post(f"{API}/traces", json=trace_body(models[0]), headers={"Idempotency-Key": key})
                assert r.status_code in (200, 201), r.text
                traces.append((key, r.json()["id"]))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(k,)) for k in ["same"] * 4 + ["a", "b", "c", "d"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len({tid for key, tid in traces if key == "same"}) == 1
    assert len({tid for _, tid in traces}) == 5
    assert client.get(f"{API}/traces").json()["count"] == 5
    assert client.get(f"{API}/jobs", params={"kind": "trace"}).json()["count"] == 5


def test_overview_and_one_task(client, db_url):
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"])).json()
    assert client.get(f"{API}/traces/{trace['id']}/overview").status_code == 409
    assert client.get(f"{API}/traces/{trace['id']}/tasks/task0").status_code == 409
    data = trace_result(num_layers=5, tasks=3, prompts=7, top_k=4, seed=4)
    # distinct top-1 tokens: prompt i has "a" at even layers, "b<i%2>" at odd ones
    for task in data["tasks"].values():
        for i, row in enumerate(task["top_tokens"]):
            for l, tokens in enumerate(row):
                tokens[0] = "a" if l % 2 == 0 else f"b{i % 2}"
    engine = make_engine(db_url)
    with Session(engine) as s:
        results.store_trace_result(s, trace_id=trace["id"], result=data)

    response = client.get(f"{API}/traces/{trace['id']}/overview")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    overview = response.json()
    assert "prompt_index" not in overview
    assert all("js" not in s for s in overview["sensitivities"].values()) and "js" not in overview["sensitivity"]
    assert overview["sensitivities"]["skip"]["mean_js"] == data["sensitivities"]["skip"]["mean_js"]
    for key in ("num_layers", "block_kinds", "model", "options", "similarity", "position_view", "freeze_plan",
                "vulnerable_layer", "timings"):
        assert overview[key] == data[key], key
    for name, task in data["tasks"].items():
        got = overview["tasks"][name]
        assert not set(got) & {"prompts", "target_prob", "target_rank", "entropy", "top_tokens", "top_probs"}
        expected = _independent_overview_task(task, 5)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value) if key.startswith("mean") else got[key] == value, (name, key)
        assert got["task_particle"] == task["task_particle"] and got["final_accuracy"] == task["final_accuracy"]
    assert overview["tasks"]["task0"]["top1_tokens"][1] == [["b0", 4], ["b1", 3]]
    assert len(response.content) < len(client.get(f"{API}/traces/{trace['id']}/result").content) / 2

    one = client.get(f"{API}/traces/{trace['id']}/tasks/task1")
    assert one.status_code == 200 and one.json() == data["tasks"]["task1"]
    assert client.get(f"{API}/traces/{trace['id']}/tasks/task1", headers={"If-None-Match": one.headers["etag"]}).status_code == 304
    assert "has no task 'nope'" in one_line(client.get(f"{API}/traces/{trace['id']}/tasks/nope"))
    assert client.get(f"{API}/traces/unknown/overview").status_code == 404

    # a trace stored before trace_parts existed gets its parts on first request
    with Session(engine) as s:
        s.execute(delete(TracePart).where(TracePart.trace_id == trace["id"]))
        s.commit()
    assert client.get(f"{API}/traces/{trace['id']}/tasks/task2").json() == data["tasks"]["task2"]
    assert client.get(f"{API}/traces/{trace['id']}/overview").json() == overview
    # a re-run stores a different result: neither part may be served from the old one
    second = trace_result(num_layers=5, tasks=3, prompts=7, top_k=4, seed=5)
    with Session(engine) as s:
        results.store_trace_result(s, trace_id=trace["id"], result=second)
        assert s.execute(select(func.count()).select_from(TracePart).where(TracePart.trace_id == trace["id"])).scalar_one() == 4
    engine.dispose()
    assert client.get(f"{API}/traces/{trace['id']}/tasks/task1").json() == second["tasks"]["task1"]
    assert client.get(f"{API}/traces/{trace['id']}/overview").json()["tasks"]["task1"]["mean_target_rank"] == \
        pytest.approx(_independent_overview_task(second["tasks"]["task1"], 5)["mean_target_rank"])

