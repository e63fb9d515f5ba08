"""The REST API through FastAPI's TestClient over real databases (SQLite file and Postgres)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend import jobs, results, tasksets
from backend.db.models import TracePart
from backend.db.session import make_engine

from backend_factories import trace_result

API = "/api/v1"


def one_line(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def register(client, source="models/tiny", **extra):
    response = client.post(f"{API}/models", json={"source": source, **extra})
    assert response.status_code in (200, 201), response.text
    return response.json()


def queued_messages(tmp_path) -> list[str]:
    folder = tmp_path / "data" / "broker" / "queue"
    return sorted(p.name for p in folder.glob("*.msg")) if folder.exists() else []


def test_health_and_docs(client):
    assert client.get(f"{API}/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/traces/{trace_id}/overview", "/api/v1/trials", "/api/v1/jobs/{job_id}/retry",
                 "/api/v1/shares/{share_id}", "/api/v1/task-sets"):
        assert path in paths


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


def _trace_body(model_id, **extra):
    body = {"model_id": model_id, "task_sets": ["antonyms_en"], "perturbations": ["skip", "mask:keep=0.5,draws=3"],
            "options": {"limit": 5, "batch_size": 4, "seed": 3}}
    body.update(extra)
    return body


def test_create_trace_and_read_every_view(client, db_url, tmp_path):
    model = register(client)
    response = client.post(f"{API}/traces", json=_trace_body(model["id"], name="first"))
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
    first = client.post(f"{API}/traces", json=_trace_body(model["id"]), headers={"Idempotency-Key": key})
    second = client.post(f"{API}/traces", json=_trace_body(model["id"]), headers={"Idempotency-Key": key})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert client.get(f"{API}/traces").json()["count"] == 1
    assert len(queued_messages(tmp_path)) == before + 1
    too_long = client.post(f"{API}/traces", json=_trace_body(model["id"]), headers={"Idempotency-Key": "k" * 201})
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
    body = _trace_body(model["id"])
    body.update(change)
    response = client.post(f"{API}/traces", json=body)
    assert response.status_code == status, response.text
    assert message in one_line(response)


def test_unknown_ids_are_404(client):
    for path in ("/traces/x", "/traces/x/result", "/traces/x/overview", "/traces/x/tasks/t",
                 "/traces/x/position", "/traces/x/freeze-plan", "/traces/x/export.csv", "/experiments/x", "/experiments/x/metrics",
                 "/jobs/x", "/jobs/x/log", "/models/x", "/task-sets/x"):
        response = client.get(API + path)
        assert response.status_code == 404, path
        assert "unknown" in one_line(response)
    for path in ("/jobs/x/cancel", "/jobs/x/retry"):
        assert client.post(API + path).status_code == 404
    assert client.delete(f"{API}/shares/x").status_code == 404
    assert client.post(f"{API}/shares", json={"kind": "trace", "id": "x"}).status_code == 404


def test_task_sets(client, db_url):
    listing = client.get(f"{API}/task-sets").json()
    assert listing["count"] == len(tasksets.BUILTIN_TASK_NAMES)
    assert all(r["builtin"] and not r["registered"] for r in listing["data"])
    engine = make_engine(db_url)
    with Session(engine) as s:
        tasksets.upsert_builtin_task_sets(s, [{"name": "antonyms_en", "language": "en", "num_items": 73}])
    engine.dispose()
    content = b'{"prompt": "one", "target": " two"}\n{"prompt": "three", "target": " four", "task": "sub"}\n'
    response = client.post(f"{API}/task-sets", files={"file": ("mine.jsonl", content)}, data={"name": "mine"})
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert uploaded["tasks"] == ["mine", "sub"] and uploaded["num_items"] == 2 and len(uploaded["items"]) == 2
    listing = client.get(f"{API}/task-sets").json()
    by_name = {r["name"]: r for r in listing["data"]}
    assert by_name["antonyms_en"]["registered"] and by_name["antonyms_en"]["num_items"] == 73
    assert not by_name["mine"]["builtin"] and listing["count"] == len(tasksets.BUILTIN_TASK_NAMES) + 1
    assert client.get(f"{API}/task-sets/mine").json()["id"] == uploaded["id"]
    assert client.get(f"{API}/task-sets/{uploaded['id']}").json()["items"][1]["task"] == "sub"
    assert client.get(f"{API}/task-sets/plural_en").json()["registered"] is False
    csv_content = b"prompt,target\nHello,world\n"
    assert client.post(f"{API}/task-sets", files={"file": ("c.csv", csv_content)}, data={"name": "c"}).status_code == 201
    dup = client.post(f"{API}/task-sets", files={"file": ("c.csv", csv_content)}, data={"name": "c"})
    assert dup.status_code == 409 and "already exists" in one_line(dup)
    # a trace over the uploaded set: the worker gets its name
    model = register(client)
    trace = client.post(f"{API}/traces", json=_trace_body(model["id"], task_sets=["mine", "antonyms_en"],
                                                         options={"position_task": "sub"}))
    assert trace.status_code == 201, trace.text


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("bad.jsonl", b'{"prompt": "a", "target": "b"}\n{"prompt": "a"}\n', "line 2"),
        ("bad.jsonl", b"[1, 2]\n", "line 1: expected an object"),
        ("bad.csv", b"prompt,answer\na,b\n", "line 1: the CSV header needs column(s) target"),
        ("bad.txt", b"hello", ".jsonl or .csv"),
        ("empty.jsonl", b"", "no items"),
        ("deep.jsonl", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "target": "x"}\n',
         "line 1: not valid JSON (nested too deeply)"),
    ],
)
def test_malformed_uploads(client, filename, content, message):
    response = client.post(f"{API}/task-sets", files={"file": (filename, content)}, data={"name": "x"})
    assert response.status_code == 422
    assert message in one_line(response)


def test_upload_name_and_size_limits(make_client):
    client = make_client(max_upload_bytes=1000)
    big = b'{"prompt": "a", "target": "b"}\n' * 100
    response = client.post(f"{API}/task-sets", files={"file": ("big.jsonl", big)}, data={"name": "big"})
    assert response.status_code == 413 and "larger than 1000 bytes" in one_line(response)
    huge = b"x" * 200_000
    response = client.post(f"{API}/task-sets", files={"file": ("huge.jsonl", huge)}, data={"name": "huge"})
    assert response.status_code == 413
    bad_name = client.post(f"{API}/task-sets", files={"file": ("a.jsonl", b'{"prompt":"a","target":"b"}')},
                           data={"name": "../etc"})
    assert bad_name.status_code == 422 and "name must be" in one_line(bad_name)


def _experiment_body(model_id, **extra):
    body = {"model_id": model_id, "corpus": "corpus.txt", "allocations": ["train-shallow", "0-1,3"],
            "seeds": [1, 2], "benchmarks": ["cmmlu:bench/cmmlu"], "steps": 10}
    body.update(extra)
    return body


def test_experiments_and_trials(client, db_url, roots):
    model = register(client)
    response = client.post(f"{API}/experiments", json=_experiment_body(model["id"], name="exp"))
    assert response.status_code == 201, response.text
    exp = response.json()
    assert exp["kind"] == "experiment" and exp["status"] == "queued" and exp["result"] is None
    assert exp["spec"]["corpus"] == str(roots / "corpus.txt")
    assert exp["spec"]["benchmarks"] == [f"cmmlu:{roots / 'bench' / 'cmmlu'}"]
    assert exp["spec"]["allocations"] == ["train-shallow", "0-1,3"]
    trial_body = _experiment_body(model["id"], allocation="from-trace:trace.json",
                                  labels={"from-trace:trace.json": "freeze plan"})
    del trial_body["allocations"]
    trial = client.post(f"{API}/trials", json=trial_body)
    assert trial.status_code == 201, trial.text
    trial = trial.json()
    assert trial["kind"] == "trial" and trial["spec"]["allocations"] == [f"from-trace:{roots / 'trace.json'}"]
    assert trial["spec"]["labels"] == {f"from-trace:{roots / 'trace.json'}": "freeze plan"}
    job = client.get(f"{API}/jobs/{trial['job']['id']}").json()
    assert (job["kind"], job["queue"]) == ("experiment", "train")
    engine = make_engine(db_url)
    with Session(engine) as s:
        spec = jobs.get_job(s, exp["job"]["id"]).spec
        # the ExperimentSpec fields plus model_id/kind/name (the worker resolves the model)
        assert spec["model_id"] == model["id"] and spec["kind"] == "experiment" and spec["steps"] == 10
        assert {"block_size", "holdout", "trace_perturbations", "eval_mode"} <= set(spec)
        results.append_train_metrics(s, experiment_id=exp["id"], trial="train-shallow-seed1",
                                     rows=[{"step": 1, "loss": 2.0, "lr": 1e-4, "tokens_per_s": 10.0, "grad_norm": 0.5}])
        results.store_experiment_result(s, experiment_id=exp["id"], result={
            "table": [{"allocation": "train-shallow", "mean": 0.5}], "statistics": {"x": 1},
            "trials": [{"slug": "train-shallow-seed1", "drift": [0.1], "retrace": {"vulnerable_layer": 1}}]},
            code_version="0.1.0")
    engine.dispose()
    shown = client.get(f"{API}/experiments/{exp['id']}").json()
    assert shown["result"]["statistics"] == {"x": 1} and shown["summary"]["table"][0]["mean"] == 0.5
    assert shown["provenance"]["seeds"] == [1, 2]
    metrics = client.get(f"{API}/experiments/{exp['id']}/metrics").json()
    assert metrics == {"trials": {"train-shallow-seed1": [
        {"step": 1, "loss": 2.0, "lr": 1e-4, "tokens_per_s": 10.0, "grad_norm": 0.5, "eval_loss": None}]}}
    listing = client.get(f"{API}/experiments").json()
    assert listing["count"] == 2 and {e["kind"] for e in listing["data"]} == {"trial", "experiment"}


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"corpus": "../outside"}, 400, "outside the allowed roots"),
        ({"corpus": "/etc/passwd"}, 400, "outside the allowed roots"),
        ({"corpus": "missing.txt"}, 400, "does not exist"),
        ({"benchmarks": ["cmmlu:escape"]}, 400, "outside the allowed roots"),
        ({"benchmarks": ["mmlu:bench"]}, 422, "bad benchmark"),
        ({"allocations": ["7-3"]}, 422, "runs backwards"),
        ({"allocations": ["shallow"]}, 422, "bad allocation"),
        ({"allocations": ["full", "full"]}, 422, "listed twice"),
        ({"allocations": ["from-trace"]}, 422, "needs trace_tasks"),
        ({"allocations": ["from-trace:../x.json"]}, 400, "outside the allowed roots"),
        ({"seeds": [1, 1]}, 422, "seed is listed twice"),
        ({"labels": {"full": "x"}}, 422, "labels name allocation(s) not run: full"),
        ({"seeds": []}, 422, "seeds"),
        ({"steps": 0}, 422, "steps"),
        ({"holdout": 0.5}, 422, "holdout"),
        ({"lr": 0}, 422, "lr"),
        ({"device": "tpu"}, 422, "bad device"),
        ({"trace_tasks": "mine"}, 422, "not a built-in task"),
        ({"model_id": "nope"}, 404, "unknown model"),
    ],
)
def test_bad_experiment_requests(client, change, status, message):
    model = register(client)
    body = _experiment_body(model["id"])
    body.update(change)
    response = client.post(f"{API}/experiments", json=body)
    assert response.status_code == status, response.text
    assert message in one_line(response)


def test_jobs_cancel_retry_and_log(client, db_url):
    model = register(client)
    trace = client.post(f"{API}/traces", json=_trace_body(model["id"])).json()
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
    other = client.post(f"{API}/traces", json=_trace_body(model["id"])).json()
    assert client.post(f"{API}/jobs/{other['job']['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"{API}/traces/{other['id']}").json()["status"] == "cancelled"


def test_paging_validation(client):
    for params in ({"limit": 0}, {"limit": 10_000}, {"offset": -1}, {"status": "bogus"}):
        response = client.get(f"{API}/traces", params=params)
        assert response.status_code == 422 and one_line(response)
    # the dashboard sends empty filters
    assert client.get(f"{API}/traces", params={"status": "", "q": "", "limit": 50, "offset": 0}).status_code == 200


def test_cors_closed_by_default(client, make_client):
    response = client.get(f"{API}/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    open_client = make_client(cors_origins=["https://team.example"])
    ok = open_client.get(f"{API}/health", headers={"Origin": "https://team.example"})
    assert ok.headers["access-control-allow-origin"] == "https://team.example"
    bad = open_client.get(f"{API}/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_nul_characters_are_refused_everywhere(client):
    response = client.get(f"{API}/traces", params={"q": "a\x00b"})
    assert response.status_code == 400 and "NUL" in one_line(response)
    assert client.get(f"{API}/traces/ab%00cd").status_code == 400
    response = client.post(f"{API}/models", json={"source": "org/x", "name": "a\x00"})
    assert response.status_code == 422 and "NUL" in one_line(response)
    upload = client.post(f"{API}/task-sets", files={"file": ("a.jsonl", b'{"prompt": "a\\u0000", "target": "b"}\n')},
                         data={"name": "nul"})
    assert upload.status_code == 422 and "line 1: \"prompt\" contains a NUL character" in one_line(upload)
    raw = client.post(f"{API}/task-sets", files={"file": ("a.jsonl", b'{"prompt": "a", "target": "b"}\n\x00')},
                      data={"name": "nul2"})
    assert raw.status_code == 422 and "line 2: NUL character" in one_line(raw)


def test_result_etag_and_replacement(client, db_url):
    model = register(client)
    trace = client.post(f"{API}/traces", json=_trace_body(model["id"])).json()
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
                r = c.post(f"{API}/traces", json=_trace_body(models[0]), headers={"Idempotency-Key": key})
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


def test_overview_and_one_task(client, db_url):
    model = register(client)
    trace = client.post(f"{API}/traces", json=_trace_body(model["id"])).json()
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
