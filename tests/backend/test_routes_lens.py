"""The live logit lens through the service: POST /traces/{id}/lens queues a ``lens`` job on the trace
queue of the embedded broker, the worker runs the message it finds there, GET returns the result; the
result is the engine's own lens of that prompt. Writes need a token; bad prompts are one-line 4xx.

Through FastAPI's TestClient over real databases, the embedded (filesystem) broker and worker.tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sqlalchemy import select

from backend.db.models import Model, Trace
from backend.db.session import make_engine, session_scope
from backend.security import create_token
from backend.settings import Settings
from layertracer.models.loading import load_model
from layertracer.spec.jobs import LENS_MAX_PROMPT_CHARS, parse_job_spec
from layertracer.tracer import TraceOptions, trace
from worker import lens as worker_lens
from worker import tasks

from api_helpers import API, one_line

PROMPT, TARGET = "三加四等于", "七"


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    worker_lens.forget()
    yield
    worker_lens.forget()
    torch.set_num_threads(previous)


@pytest.fixture
def model_folder(saved_model):
    return saved_model("qwen3")


@pytest.fixture
def settings(db_url, tmp_path, model_folder):
    return Settings(data_dir=tmp_path / "data", database_url=db_url, model_roots=[str(model_folder.parent)])


def _trace_of(settings, source) -> str:
    """A registered model and a trace row of it (the lens needs the trace's model, not its result)."""
    engine = make_engine(settings.database_url)
    with session_scope(engine) as s:
        model = s.execute(select(Model).where(Model.source == str(source))).scalar_one_or_none()
        if model is None:
            model = Model(source=str(source), source_kind="local", name="tiny")
            s.add(model)
            s.flush()
        row = Trace(model_id=model.id, spec={})
        s.add(row)
        s.flush()
        trace_id = row.id
    engine.dispose()
    return trace_id


def _messages(settings) -> list[dict]:
    folder = settings.broker_dir / "queue"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.msg"))] if folder.exists() else []


def _run_delivered(settings, job_id: str) -> None:
    """What the worker does with the message the API sent: its task and argument, then the job."""
    headers = _messages(settings)[-1]["headers"]
    assert headers["task"] == "lens.run" and headers["argsrepr"] == repr([job_id])
    assert tasks.execute(job_id, settings)["status"] == "succeeded"


def test_a_typed_prompt_is_queued_run_by_the_worker_and_equals_the_engines_trace(make_client, settings, model_folder):
    client = make_client(model_roots=[str(model_folder.parent)])
    trace_id = _trace_of(settings, model_folder)
    response = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": PROMPT, "target": TARGET})
    assert response.status_code == 202, response.text
    body = response.json()
    job = body["job"]
    assert job["kind"] == "lens" and job["queue"] == "trace" and job["status"] == "queued" and body["result"] is None
    assert body["trace_id"] == trace_id and job["max_attempts"] == 1
    engine = make_engine(settings.database_url)
    with session_scope(engine) as s:
        from backend import jobs

        spec = jobs.get_job(s, job["id"]).spec
        assert parse_job_spec("lens", spec).model_dump() == spec and spec["prompt"] == PROMPT
        model_id = s.execute(select(Trace.model_id).where(Trace.id == trace_id)).scalar_one()
        assert spec["model_id"] == model_id
    engine.dispose()
    _run_delivered(settings, job["id"])

    answer = client.get(f"{API}/traces/{trace_id}/lens/{job['id']}")
    assert answer.status_code == 200
    got = answer.json()
    assert got["job"]["status"] == "succeeded"
    result = got["result"]
    # Independently of the worker: the engine's own trace of the same prompt, its position view.
    from layertracer.tasks.sets import Task, TaskItem

    loaded = load_model(str(model_folder), device="cpu")
    expected = trace(loaded, [Task(name="typed", items=[TaskItem(PROMPT, TARGET)])], perturbations=[],
                     options=TraceOptions(similarity=False, bootstrap_resamples=10)).position_view
    assert result["tokens"] == expected.tokens and result["target_token"] == expected.target_token
    assert result["top1_tokens"] == expected.top1_tokens
    np.testing.assert_allclose(result["target_prob"], expected.target_prob, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result["top1_probs"], expected.top1_probs, rtol=1e-6, atol=1e-9)
    assert result["reused_model"] is False

    # A second prompt on the same model: the worker kept it loaded.
    second = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": "hot -> cold\nbig ->"}).json()
    _run_delivered(settings, second["job"]["id"])
    again = client.get(f"{API}/traces/{trace_id}/lens/{second['job']['id']}").json()["result"]
    assert again["reused_model"] is True and again["target_prob"] is None and again["target"] is None


def test_a_prompt_over_the_token_limit_fails_its_job_with_one_line(make_client, settings, model_folder):
    client = make_client(model_roots=[str(model_folder.parent)])
    trace_id = _trace_of(settings, model_folder)
    job = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": "big " * 400}).json()["job"]
    assert tasks.execute(job["id"], settings)["status"] == "failed"
    got = client.get(f"{API}/traces/{trace_id}/lens/{job['id']}").json()
    assert got["result"] is None and "the live lens takes at most" in got["job"]["error"]
    assert "\n" not in got["job"]["error"]


@pytest.mark.parametrize("body, message", [
    ({"prompt": "   "}, "the prompt is empty"),
    ({"prompt": "x" * (LENS_MAX_PROMPT_CHARS + 1)}, f"at most {LENS_MAX_PROMPT_CHARS} characters"),
    ({"prompt": "a", "extra": 1}, "extra"),
])
def test_bad_lens_requests_are_refused_in_one_line(make_client, settings, model_folder, body, message):
    client = make_client(model_roots=[str(model_folder.parent)])
    trace_id = _trace_of(settings, model_folder)
    response = client.post(f"{API}/traces/{trace_id}/lens", json=body)
    assert response.status_code == 422 and message in one_line(response)
    assert _messages(settings) == []


def test_unknown_trace_model_or_job_is_404(make_client, settings, model_folder):
    client = make_client(model_roots=[str(model_folder.parent)])
    trace_id = _trace_of(settings, model_folder)
    assert client.post(f"{API}/traces/nope/lens", json={"prompt": "a"}).status_code == 404
    assert client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": "a", "model_id": "nope"}).status_code == 404
    assert client.get(f"{API}/traces/{trace_id}/lens/nope").status_code == 404
    other = _trace_of(settings, model_folder)
    job = client.post(f"{API}/traces/{other}/lens", json={"prompt": "a"}).json()["job"]
    assert client.get(f"{API}/traces/{trace_id}/lens/{job['id']}").status_code == 404  # another trace's job


def test_submitting_a_lens_needs_a_write_token(make_client, settings, model_folder):
    client = make_client(model_roots=[str(model_folder.parent)], auth="token", secret_key="k" * 32)
    trace_id = _trace_of(settings, model_folder)
    assert client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": "a"}).status_code == 401
    engine = make_engine(settings.database_url)
    with session_scope(engine) as s:
        token = create_token(s, "lens-test")
    engine.dispose()
    response = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": "a"},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202


def test_the_tuned_lens_reads_the_models_translators_from_the_services_cache(make_client, settings, model_folder):
    from layertracer.spec.lens import cached_file
    from layertracer.tuned_lens import Translators, save

    client = make_client(model_roots=[str(model_folder.parent)])
    trace_id = _trace_of(settings, model_folder)
    job = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": PROMPT, "lens": "tuned"}).json()["job"]
    assert tasks.execute(job["id"], settings)["status"] == "failed"
    error = client.get(f"{API}/traces/{trace_id}/lens/{job['id']}").json()["job"]["error"]
    assert error.startswith("no tuned lens for this model") and "train one with" in error
    loaded = load_model(str(model_folder), device="cpu")
    translators = Translators(loaded.adapter.num_layers, loaded.info.hidden_size)  # the identity
    path = cached_file(loaded.info.fingerprint, settings.tuned_lens_cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(translators, path, loaded.info.fingerprint)
    job = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": PROMPT, "target": TARGET, "lens": "tuned"}).json()["job"]
    assert tasks.execute(job["id"], settings)["status"] == "succeeded"
    tuned = client.get(f"{API}/traces/{trace_id}/lens/{job['id']}").json()["result"]
    job = client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": PROMPT, "target": TARGET}).json()["job"]
    assert tasks.execute(job["id"], settings)["status"] == "succeeded"
    logit = client.get(f"{API}/traces/{trace_id}/lens/{job['id']}").json()["result"]
    # Identity translators read the residual stream as the logit lens does, bit for bit.
    assert tuned["lens"] == "tuned" and logit["lens"] == "logit"
    assert tuned["target_prob"] == logit["target_prob"] and tuned["top1_tokens"] == logit["top1_tokens"]
    assert client.post(f"{API}/traces/{trace_id}/lens", json={"prompt": "a", "lens": "other"}).status_code == 422
