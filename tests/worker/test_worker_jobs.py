"""worker.tasks / worker.control in-process against a real SQLite database and the embedded
(filesystem) broker: claim, heartbeat, cancel and lost-lease flags, result storage, failure reasons,
the reaper and its attempt cap, start-up (migrations, built-in task sets)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from backend import jobs
from backend.db.migrate import upgrade
from backend.db.models import Job, Model, TaskSet, Trace
from backend.db.session import session_scope
from backend.db.types import utcnow
from backend.settings import Settings
from layertracer.progress import ProgressEvent
from worker import control, tasks


@pytest.fixture
def settings(tmp_path, saved_model):
    folder = saved_model("qwen3")
    s = Settings(data_dir=tmp_path / "data", lease_seconds=3, heartbeat_seconds=1, max_attempts=2,
                 model_roots=[str(folder.parent)])
    upgrade(s.database_url)
    return s


@pytest.fixture
def engine(settings):
    return control.engine_for(settings.database_url)


def _trace_job(engine, source: str, spec: dict | None = None) -> tuple[str, str]:
    """A model row, a trace row and its queued job; returns (job id, trace id)."""
    with session_scope(engine) as s:
        model = s.execute(select(Model).where(Model.source == source)).scalar_one_or_none()
        if model is None:
            model = Model(source=source, source_kind="local", name="tiny")
            s.add(model)
            s.flush()
        trace = Trace(model_id=model.id, spec={})
        s.add(trace)
        s.flush()
        job = jobs.submit_job(
            s, kind="trace", resource_kind="trace", resource_id=trace.id, commit=False, max_attempts=2,
            spec={"model_id": model.id, **(spec or {"tasks": ["antonyms_en"], "limit": 2,
                                                   "options": {"similarity": False, "bootstrap_resamples": 20}})},
        )
        trace.job_id = job.id
        return job.id, trace.id


def _job(engine, job_id):
    with session_scope(engine) as s:
        return jobs.get_job(s, job_id)


def _runs(settings, job_id):
    path = settings.jobs_dir / job_id / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_trace_job_runs_and_stores_its_result(settings, engine, saved_model):
    job_id, trace_id = _trace_job(engine, str(saved_model("qwen3")))
    assert tasks.execute(job_id, settings) == {"job_id": job_id, "status": "succeeded"}
    job = _job(engine, job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.error is None
    assert job.progress["percent"] == 100.0 and job.progress["stage"] == "sensitivity:skip"
    assert "attempt 1 started" in job.log and "finished: succeeded" in job.log
    with session_scope(engine) as s:
        trace = s.get(Trace, trace_id)
        result = json.loads(trace.result_json)
        assert list(result["tasks"]) == ["antonyms_en"] and trace.summary["num_layers"] == 4
    assert [r["event"] for r in _runs(settings, job_id)] == ["start", "end"]
    # A redelivered message for a finished job runs nothing.
    assert tasks.execute(job_id, settings)["status"] == "skipped"
    assert len(_runs(settings, job_id)) == 2


def test_a_job_held_by_a_live_lease_is_not_run_again(settings, engine, saved_model):
    job_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    with session_scope(engine) as s:
        assert jobs.claim_job(s, job_id=job_id, worker_id="someone-else", lease_seconds=60) is not None
    assert tasks.execute(job_id, settings)["status"] == "skipped"
    job = _job(engine, job_id)
    assert job.status == "running" and job.worker_id == "someone-else" and job.attempts == 1
    assert _runs(settings, job_id) == []


@pytest.mark.parametrize("spec, reason", [
    ({"tasks": []}, "tasks: List should have at least 1 item"),
    ({"tasks": ["antonyms_en"], "perturbations": ["wobble"]}, "perturbations: unknown perturbation 'wobble'"),
    ({"tasks": ["antonyms_en"], "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_a_malformed_job_spec_fails_the_job_with_one_line_before_any_work(settings, engine, saved_model, spec, reason):
    """The worker parses the stored spec once, by its kind's model (layertracer.spec.jobs): a spec no
    API would write ends the job with the field at fault, before a model is loaded."""
    job_id, _ = _trace_job(engine, str(saved_model("qwen3")), spec=spec)
    assert tasks.execute(job_id, settings)["status"] == "failed"
    job = _job(engine, job_id)
    assert job.error.startswith("the trace job's spec is not valid: ") and reason in job.error, job.error
    assert "\n" not in job.error and "stage load" not in (job.log or "")  # no model was loaded


def test_a_failing_job_ends_failed_with_a_one_line_reason(settings, engine, tmp_path):
    outside = "/usr"  # exists, and lies outside the roots (the models' folder and the data folder)
    job_id, _ = _trace_job(engine, outside)
    assert tasks.execute(job_id, settings)["status"] == "failed"
    job = _job(engine, job_id)
    assert job.status == "failed"
    assert job.error == f"model path {outside!r} is outside the allowed roots"
    bad_id, _ = _trace_job(engine, str(tmp_path / "data"), spec={"tasks": ["nope"]})
    tasks.execute(bad_id, settings)
    assert _job(engine, bad_id).error == "unknown task set 'nope': neither built in nor uploaded"


def test_uploaded_task_sets_are_traced_under_their_name(settings, engine, saved_model):
    from backend.tasksets import create_task_set

    with session_scope(engine) as s:
        create_task_set(s, name="colours", content=b"x", items=[
            {"prompt": "Grass is", "target": " green"}, {"prompt": "The sky is", "target": " blue"}])
    job_id, trace_id = _trace_job(engine, str(saved_model("qwen3")), spec={
        "tasks": ["colours"], "options": {"similarity": False, "position_view": False}})
    assert tasks.execute(job_id, settings)["status"] == "succeeded"
    with session_scope(engine) as s:
        result = json.loads(s.get(Trace, trace_id).result_json)
    assert result["tasks"]["colours"]["targets"] == [" green", " blue"]


def test_heartbeat_reports_cancel_and_lost_lease(settings, engine, saved_model):
    job_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    with session_scope(engine) as s:
        jobs.claim_job(s, job_id=job_id, worker_id="w1", lease_seconds=3)
    state = control.ProgressState()
    state.update(ProgressEvent("lens", 5, 10))
    beat = control.JobControl(settings, engine, job_id, "w1", state)
    beat.log("hello")
    assert beat.beat() is False and not beat.cancelled.is_set()
    job = _job(engine, job_id)
    assert job.progress["percent"] == 50.0 and job.progress["stage"] == "lens" and "hello" in job.log
    with session_scope(engine) as s:
        jobs.request_cancel(s, job_id=job_id)
    assert beat.beat() is True and beat.cancelled.is_set() and not beat.lost.is_set()

    other_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    with session_scope(engine) as s:
        jobs.claim_job(s, job_id=other_id, worker_id="w1", lease_seconds=3)
        # The lease lapses (worker stalled) and another worker claims the job.
        s.execute(update(Job).where(Job.id == other_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
        assert jobs.claim_job(s, job_id=other_id, worker_id="w2", lease_seconds=3) is not None
    lost = control.JobControl(settings, engine, other_id, "w1", control.ProgressState())
    assert lost.beat() is True and lost.lost.is_set() and not lost.cancelled.is_set()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_percent_and_eta_from_the_measured_rate():
    """The stored percent is the share done; the time left is the rate since the rate window began
    (here: a quarter in 10 s after a first event at 0), not since the job started (model loading)."""
    clock = FakeClock()
    state = control.ProgressState(clock=clock)
    clock.now = 100.0  # a slow start (loading) before the first event must not count
    state.update(ProgressEvent("lens", 0, 4))
    assert state.snapshot()["eta_seconds"] is None  # no rate measured yet
    clock.now = 110.0
    state.update(ProgressEvent("lens", 1, 4))
    value = state.snapshot()
    assert value["percent"] == 25.0 and value["eta_seconds"] == pytest.approx(30.0)  # 0.75 left at 0.025/s
    assert "item" not in value  # a run without parts
    state.update(ProgressEvent("sensitivity:skip", 4, 4))
    assert state.snapshot()["percent"] == 100.0 and state.snapshot()["eta_seconds"] is None  # done: nothing left
    # A run in parts: the engine's fraction of the whole run wins over this part's done / total.
    state.update(ProgressEvent("trial 2/4 full-seed1: train", 5, 10, item="full-seed1", work="train", index=2,
                               count=4, fraction=0.3725))
    value = state.snapshot()
    assert value["percent"] == 37.25 and (value["item"], value["work"], value["index"], value["count"]) == \
        ("full-seed1", "train", 2, 4)


def test_progress_lines_for_the_worker_log_at_a_steady_interval():
    """docker logs shows a long job move: a line when a stage starts, then one per interval, and the
    last state when the job ends between two lines; no line per event."""
    clock, lines = FakeClock(), []
    state = control.ProgressState(lines=lines.append, interval=10.0, clock=clock)
    for second in range(0, 26):  # one event a second for 25 s, 100 steps
        clock.now = float(second)
        state.update(ProgressEvent("train", 4 * second, 100))
    state.close()
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == ["0/100 (0%)", "40/100 (40%)",
                                                                           "80/100 (80%)", "100/100 (100%)"]
    assert all(line.startswith("[progress] train:") for line in lines)


def test_stages_that_alternate_batch_by_batch_do_not_flood_the_log():
    """A trace's stages alternate every batch (lens, then each perturbation): each stage's first event
    and then one line a stage every interval, not a line per batch and stage."""
    clock, lines = FakeClock(), []
    state = control.ProgressState(lines=lines.append, interval=10.0, clock=clock)
    stages = ("lens", "sensitivity:skip", "sensitivity:mask")
    for batch in range(100):  # a batch every 0.25 s for 25 s, each through the three stages
        clock.now = 0.25 * batch
        for offset, stage in enumerate(stages):
            state.update(ProgressEvent(stage, 3 * batch + offset + 1, 300))
    state.close()
    # each stage: its start (batch 0), at 10 s (batch 40), at 20 s (batch 80), and its last state on close
    assert len(lines) == 3 * 4, lines
    lens = [line.split(": ")[1].split(" ")[0] for line in lines if line.startswith("[progress] lens:")]
    assert lens == ["1/300", "121/300", "241/300", "298/300"]


def _broker_messages(settings) -> list[dict]:
    folder = settings.broker_dir / "queue"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.msg"))] if folder.exists() else []


def test_reaper_requeues_and_resends_then_fails_at_the_attempt_cap(settings, engine, saved_model):
    job_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    expired = utcnow() - timedelta(seconds=1)
    for attempt in (1, 2):
        with session_scope(engine) as s:
            assert jobs.claim_job(s, job_id=job_id, worker_id=f"dead-{attempt}", lease_seconds=3) is not None
            s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=expired))
            s.commit()
        before = len(_broker_messages(settings))
        reaped = control.reap(settings)
        job = _job(engine, job_id)
        if attempt == 1:
            assert reaped == [job_id] and job.status == "queued"
            messages = _broker_messages(settings)
            assert len(messages) == before + 1
            headers = messages[-1]["headers"]
            assert headers["task"] == "trace.run" and headers["argsrepr"] == repr([job_id])
            assert messages[-1]["content-type"] == "application/json"
        else:  # max_attempts = 2: the second death is the last
            assert reaped == [] and job.status == "failed"
            assert job.error == "lease expired on attempt 2 of 2: the worker died or stopped responding; giving up"
            assert len(_broker_messages(settings)) == before


def test_worker_start_migrates_and_registers_the_builtin_task_sets(tmp_path):
    from layertracer.tasks.sets import BUILTIN_TASKS, builtin_facts

    s = Settings(data_dir=tmp_path / "fresh")
    control.start_worker_services(s, reaper=False)
    control.start_worker_services(s, reaper=False)  # idempotent
    with session_scope(control.engine_for(s.database_url)) as session:
        rows = {r.name: r for r in session.execute(select(TaskSet)).scalars()}
    assert set(rows) == set(BUILTIN_TASKS)
    assert all(r.builtin for r in rows.values())
    assert rows["antonyms_en"].num_items == len(builtin_facts("antonyms_en")) >= 60
    assert rows["arithmetic_zh"].language == "zh" and rows["antonyms_en"].description == "English antonyms"


def _trial_job(engine, settings, source: str, steps: int = 200) -> tuple[str, str]:
    """A model, a trial (experiment row) and its queued job over a corpus in the data folder."""
    from backend.db.models import Experiment
    from layertracer.tasks.sets import builtin_task

    corpus = settings.data_dir / "corpus.txt"
    corpus.write_text("\n\n".join(i.prompt + i.target for i in builtin_task("antonyms_en").items), encoding="utf-8")
    spec = {"corpus": str(corpus), "allocations": ["train-shallow"], "seeds": [1], "steps": steps,
            "batch_size": 4, "block_size": 32, "checkpoint_every": 10, "warmup_steps": 2, "holdout": 0.0,
            "device": "cpu", "dtype": "float32", "kind": "trial", "name": None}
    with session_scope(engine) as s:
        model = Model(source=source, source_kind="local", name="tiny")
        s.add(model)
        s.flush()
        experiment = Experiment(kind="trial", model_id=model.id, spec=spec)
        s.add(experiment)
        s.flush()
        job = jobs.submit_job(s, kind="experiment", spec={**spec, "model_id": model.id}, resource_kind="experiment",
                              resource_id=experiment.id, commit=False)
        experiment.job_id = job.id
        return job.id, experiment.id


def _run_in_thread(job_id, settings):
    import threading

    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(tasks.execute(job_id, settings)), daemon=True)
    thread.start()
    return thread, outcome


def _wait(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_trial_released_at_shutdown_cancelled_then_retried_resumes_its_checkpoint(settings, engine, saved_model):
    from backend.results import train_metrics
    from backend.db.models import Experiment
    from worker.app import shutting_down

    job_id, experiment_id = _trial_job(engine, settings, str(saved_model("qwen3")), steps=600)
    checkpoints = settings.jobs_dir / job_id / "trials" / "train-shallow-seed1" / "checkpoints"

    # 1. The worker shuts down mid-training: the trial checkpoints, the job goes back to the queue
    #    (not counted as an attempt) and is re-sent.
    messages = len(_broker_messages(settings))
    thread, outcome = _run_in_thread(job_id, settings)
    _wait(lambda: (checkpoints / "step-000010").is_dir())
    shutting_down.set()
    try:
        thread.join(60)
    finally:
        shutting_down.clear()
    assert outcome["status"] == "released"
    job = _job(engine, job_id)
    assert job.status == "queued" and job.attempts == 0 and job.worker_id is None
    assert len(_broker_messages(settings)) == messages + 1
    stopped_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
    assert stopped_at >= 10

    # 2. It runs again, from that checkpoint, and is cancelled: it stops after a checkpoint.
    thread, outcome = _run_in_thread(job_id, settings)
    _wait(lambda: any(int(p.name.split("-")[1]) > stopped_at for p in checkpoints.glob("step-*")))
    with session_scope(engine) as s:
        jobs.request_cancel(s, job_id=job_id)
    thread.join(60)
    assert outcome["status"] == "cancelled"
    job = _job(engine, job_id)
    assert job.status == "cancelled" and job.attempts == 1
    cancelled_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))

    # 3. A retry resumes from the cancelled run's last checkpoint and finishes; every step has its metrics.
    with session_scope(engine) as s:
        assert jobs.retry_job(s, job_id=job_id) is not None
    assert tasks.execute(job_id, settings)["status"] == "succeeded"
    with session_scope(engine) as s:
        result = s.get(Experiment, experiment_id).result
        curve = train_metrics(s, experiment_id)["train-shallow-seed1"]
    training = result["trials"][0]["training"]
    assert training["resumed_from"] == cancelled_at > stopped_at and training["steps"] == 600
    assert [p["step"] for p in curve] == list(range(1, 601))
    assert [r["event"] for r in _runs(settings, job_id)] == ["start", "end"] * 3
    with session_scope(engine) as s:
        partial = s.get(Experiment, experiment_id).partial
    # Streamed while it ran: the base model's numbers, then each finished trial.
    assert partial["baseline"] == {"evals": {}}
    assert partial["trials"]["train-shallow-seed1"]["steps"] == 600


def test_a_worker_that_is_shutting_down_starts_no_job_and_gives_its_message_back(settings, engine, saved_model):
    """The solo pool may hand a stopping worker one more message (often the job it has just released):
    it must not claim it (that would load the model again only to stop), and the message must go back
    to the broker for the next worker (rejected with requeue, under late acks: never acked, never lost)."""
    from celery.exceptions import Reject

    from worker.app import shutting_down

    job_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    shutting_down.set()
    try:
        with pytest.raises(Reject) as refused:
            tasks.execute(job_id, settings)
    finally:
        shutting_down.clear()
    assert refused.value.requeue is True
    job = _job(engine, job_id)
    assert job.status == "queued" and job.attempts == 0 and job.worker_id is None
    assert _runs(settings, job_id) == []  # no attempt began
    assert tasks.execute(job_id, settings)["status"] == "succeeded"  # the next worker runs it


def test_a_job_stops_itself_before_an_unrenewed_lease_can_lapse(settings, engine, saved_model):
    """If heartbeats fail (the database is away), the job must stop before another worker could claim it."""
    job_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    with session_scope(engine) as s:
        jobs.claim_job(s, job_id=job_id, worker_id="w1", lease_seconds=settings.lease_seconds)
    beat = control.JobControl(settings, engine, job_id, "w1", control.ProgressState())
    sink = tasks.Sink(beat)
    sink(ProgressEvent("lens", 1, 9))  # a fresh lease: carries on
    beat.lease_until = time.monotonic() + 0.4  # the last good beat was 2.6 s ago (lease 3 s, beats 1 s)
    assert beat.lease_at_risk()
    with pytest.raises(tasks.LeaseLost):
        sink(ProgressEvent("lens", 2, 9))
    assert beat.beat() is False and not beat.lease_at_risk()  # a successful beat renews it


def test_reaper_resends_a_job_whose_message_got_lost_once_per_period(settings, engine, saved_model):
    job_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    sent: list[str] = []
    assert control.reap(settings, send=lambda i, k: sent.append(i)) == []  # fresh: its message is on the way
    with session_scope(engine) as s:  # queued for long without a claim: the message was lost...
        s.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(hours=1)))
        s.commit()
    busy_id, _ = _trace_job(engine, str(saved_model("qwen3")))
    with session_scope(engine) as s:  # ...unless it waits behind a running job of its queue (a backlog)
        jobs.claim_job(s, job_id=busy_id, worker_id="busy", lease_seconds=60)
    assert control.reap(settings, send=lambda i, k: sent.append(i)) == []
    with session_scope(engine) as s:
        jobs.finish_job(s, job_id=busy_id, worker_id="busy", status="succeeded")
    assert control.reap(settings, send=lambda i, k: sent.append(i)) == [job_id]
    assert control.reap(settings, send=lambda i, k: sent.append(i)) == []  # not again on the next pass
    assert sent == [job_id] and _job(engine, job_id).status == "queued"


def test_a_worker_never_runs_model_code_its_settings_do_not_allow(settings, engine, saved_model):
    """A model row that asks for trust_remote_code (written past the API) fails on a worker whose own
    LAYERTRACER_ALLOW_REMOTE_CODE is off, with the reason, and no code of the folder is imported."""
    source = str(saved_model("qwen3"))
    job_id, _ = _trace_job(engine, source)
    with session_scope(engine) as s:
        s.execute(update(Model).where(Model.source == source).values(trust_remote_code=True))
    assert tasks.execute(job_id, settings)["status"] == "failed"
    job = _job(engine, job_id)
    assert "LAYERTRACER_ALLOW_REMOTE_CODE is off" in job.error


def test_a_job_whose_local_worker_died_is_requeued_at_once(settings, engine, saved_model):
    """A worker of this host and pid namespace whose process is gone (killed, out of memory) frees its
    job on the next reaper pass, with an hour of lease left; a live holder or one in another pid
    namespace (another container) is left alone."""
    import os
    import socket
    import subprocess
    import sys

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    host = socket.gethostname()
    holders = {
        "dead": f"{host}:{exited.pid}:abcd1234:{namespace}",
        "alive": f"{host}:{os.getpid()}:abcd1234:{namespace}",
        "elsewhere": f"{host}:{exited.pid}:abcd1234:{namespace}0",
    }
    job_ids = {}
    for name, holder in holders.items():
        job_id, _ = _trace_job(engine, str(saved_model("qwen3")), spec={"tasks": ["antonyms_en"], "limit": 1, "name": name})
        with session_scope(engine) as s:
            assert jobs.claim_job(s, job_id=job_id, worker_id=holder, lease_seconds=3600) is not None
        job_ids[name] = job_id
    reaped = control.reap(settings)
    assert reaped == [job_ids["dead"]]
    assert _job(engine, job_ids["dead"]).status == "queued"
    assert _job(engine, job_ids["alive"]).status == "running"
    assert _job(engine, job_ids["elsewhere"]).status == "running"
    assert control.worker_id().split(":")[3] == namespace  # this process's own id carries its namespace
