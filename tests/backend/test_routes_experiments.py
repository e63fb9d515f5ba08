"""backend/api/routes/experiments.py: trials and experiments.

Through FastAPI's TestClient over real databases (a SQLite file and Postgres)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from backend import jobs, results
from backend.db.session import make_engine

from api_helpers import API, one_line, register, experiment_body


def test_experiments_and_trials(client, db_url, roots):
    model = register(client)
    response = client.post(f"{API}/experiments", json=experiment_body(model["id"], name="exp"))
    assert response.status_code == 201, response.text
    exp = response.json()
    assert exp["kind"] == "experiment" and exp["status"] == "queued" and exp["result"] is None
    assert exp["spec"]["corpus"] == str(roots / "corpus.txt")
    assert exp["spec"]["benchmarks"] == [f"cmmlu:{roots / 'bench' / 'cmmlu'}"]
    assert exp["spec"]["allocations"] == ["train-shallow", "0-1,3"]
    trial_body = experiment_body(model["id"], allocation="from-trace:trace.json",
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
        # and the worker's parser of experiment job specs takes it whole
        from layertracer.spec.jobs import parse_job_spec

        assert parse_job_spec("experiment", spec).model_dump() == spec
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
        ({"corpus": "hf:not a repo"}, 422, "not a hub dataset id"),
        ({"corpus": "hf:acme/web:train:extra"}, 422, "a split is one name"),
        ({"benchmarks": ["cmmlu:escape"]}, 400, "outside the allowed roots"),
        ({"benchmarks": ["mmlu:bench"]}, 422, "bad benchmark"),
        ({"benchmarks": ["lm-eval:/etc/task.yaml"]}, 400, "outside the allowed roots"),
        ({"benchmarks": ["lm-eval:arc easy"]}, 422, "not an lm-eval task name"),
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
        ({"strategy": "fsdp"}, 422, "strategy fsdp shards the model over several processes: set processes to 2"),
        ({"processes": 2, "placement": {"device_map": "auto"}}, 422, "with processes > 1 every process holds"),
        ({"processes": 17}, 422, "processes"),
        ({"strategy": "zero3"}, 422, "strategy"),
        ({"trace_tasks": "mine"}, 422, "not a built-in task"),
        ({"model_id": "nope"}, 404, "unknown model"),
    ],
)
def test_bad_experiment_requests(client, change, status, message):
    model = register(client)
    body = experiment_body(model["id"])
    body.update(change)
    response = client.post(f"{API}/experiments", json=body)
    assert response.status_code == status, response.text
    assert message in one_line(response)



def test_a_trial_carries_its_placement_to_the_worker(client, db_url):
    model = register(client)
    body = {**experiment_body(model["id"]), "placement": {"device_map": "auto", "max_memory": "0=70GiB,cpu=200GiB"}}
    created = client.post(f"{API}/experiments", json=body)
    assert created.status_code == 201, created.text
    engine = make_engine(db_url)
    with Session(engine) as s:
        spec = jobs.get_job(s, created.json()["job"]["id"]).spec
    assert spec["placement"] == {"device_map": "auto", "max_memory": "0=70GiB,cpu=200GiB", "attn_implementation": None,
                                 "load_in": None}
    # An lm-eval task is a name the worker's lm-eval resolves, kept as given (no path to confine).
    named = client.post(f"{API}/experiments", json={**experiment_body(model["id"]), "benchmarks": ["lm-eval:arc_easy"]})
    assert named.status_code == 201, named.text
    with Session(engine) as s:
        assert jobs.get_job(s, named.json()["job"]["id"]).spec["benchmarks"] == ["lm-eval:arc_easy"]
    engine.dispose()
    for bad, message in ((({"device_map": "/etc/map.json"}), "device_map"), ({"max_memory": "lots"}, "max memory 'lots'"),
                         ({"load_in": "2bit"}, "load_in")):
        refused = client.post(f"{API}/experiments", json={**experiment_body(model["id"]), "placement": bad})
        assert refused.status_code == 422 and message in one_line(refused), refused.text


def test_a_trial_on_several_processes_goes_to_the_multi_process_queue(client, db_url, tmp_path):
    import json

    from backend.settings import Settings

    model = register(client)
    body = {**experiment_body(model["id"]), "processes": 4, "strategy": "fsdp"}
    created = client.post(f"{API}/experiments", json=body)
    assert created.status_code == 201, created.text
    job = client.get(f"{API}/jobs/{created.json()['job']['id']}").json()
    assert job["queue"] == "train-multi"
    single = client.post(f"{API}/experiments", json=experiment_body(model["id"])).json()
    assert client.get(f"{API}/jobs/{single['job']['id']}").json()["queue"] == "train"
    # The broker's message for it is on that queue (where only a worker with several GPUs listens).
    folder = Settings(data_dir=tmp_path / "data", database_url=db_url).broker_dir / "queue"
    messages = [json.loads(p.read_text()) for p in sorted(folder.glob("*.msg"))] if folder.exists() else []
    routed = {m["headers"]["argsrepr"]: m["properties"]["delivery_info"]["routing_key"] for m in messages}
    assert routed[repr([job["id"]])] == "train-multi" and routed[repr([single["job"]["id"]])] == "train"


def test_a_hub_dataset_corpus_is_kept_as_named_not_confined(client, db_url):
    """hf:org/name[@revision][:split] is no path: the spec keeps it (normalised) for the worker's HF cache."""
    model = register(client)
    body = experiment_body(model["id"], corpus="hf:acme/river-corpus@v2:test")
    response = client.post(f"{API}/experiments", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["corpus"] == "hf:acme/river-corpus@v2:test"
