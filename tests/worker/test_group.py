"""Multi-process jobs in the service: a trial job asking for 2 processes runs under torchrun as a child
process group of the worker (gloo on this CPU host), against a real SQLite database and the embedded
broker. Its lease, heartbeat, progress, cancel and crash recovery cover the whole group:

- it trains sharded (fsdp) on 2 ranks and stores the result of 2 processes, with every step's metrics,
  and the same losses as the same trial run in the worker's own process;
- a cancel mid-training stops the group after a checkpoint, leaves no rank behind, and a retry
  resumes from that checkpoint;
- a rank killed mid-training fails the job with a one-line reason at once (no hang);
- a worker killed mid-training takes its ranks with it, and the next run resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from backend import jobs
from backend.db.migrate import upgrade
from backend.db.models import Experiment, Model
from backend.db.session import session_scope
from backend.settings import Settings
from layertracer.training.sharded import fsdp_supported
from waiting import wait_for
from worker import control, tasks

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not fsdp_supported(), reason="strategy fsdp needs torch 2.9")


@pytest.fixture
def settings(tmp_path, saved_model):
    folder = saved_model("qwen3")
    s = Settings(data_dir=tmp_path / "data", lease_seconds=5, heartbeat_seconds=1, max_attempts=2,
                 model_roots=[str(folder.parent)])
    upgrade(s.database_url)
    return s


@pytest.fixture
def engine(settings):
    return control.engine_for(settings.database_url)


def _spec(settings, steps: int, processes: int, strategy: str) -> dict:
    from layertracer.tasks.sets import builtin_task

    corpus = settings.data_dir / "corpus.txt"
    corpus.write_text("\n\n".join(i.prompt + i.target for i in builtin_task("antonyms_en").items), encoding="utf-8")
    return {"corpus": str(corpus), "allocations": ["1-2"], "seeds": [1], "steps": steps, "batch_size": 4,
            "block_size": 32, "checkpoint_every": 5, "warmup_steps": 2, "holdout": 0.1, "lr": 2e-3,
            "device": "cpu", "dtype": "float32", "kind": "trial", "name": None, "processes": processes,
            "strategy": strategy}


def _trial_job(engine, source: str, spec: dict) -> tuple[str, str]:
    with session_scope(engine) as s:
        model = s.execute(select(Model).where(Model.source == source)).scalar_one_or_none()
        if model is None:
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


def _rank_pids(marker: str) -> list[int]:
    """Live processes (not zombies) whose command line holds ``marker`` (the group's launch file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def _checkpoint_steps(settings, job_id) -> list[int]:
    folder = settings.jobs_dir / job_id / "trials" / "1-2-seed1" / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("step-*")) if folder.is_dir() else []


def _result(engine, experiment_id) -> dict:
    from backend.results import train_metrics

    with session_scope(engine) as s:
        return {"result": s.get(Experiment, experiment_id).result, "curve": train_metrics(s, experiment_id)}


def test_a_two_process_fsdp_trial_job_runs_as_a_group_and_trains_like_one_process(settings, engine, saved_model):
    source = str(saved_model("qwen3"))
    job_id, experiment_id = _trial_job(engine, source, _spec(settings, steps=6, processes=2, strategy="fsdp"))
    assert tasks.execute(job_id, settings)["status"] == "succeeded"
    grouped = _result(engine, experiment_id)
    trial = grouped["result"]["trials"][0]
    assert grouped["result"]["world_size"] == 2 and trial["training"]["world_size"] == 2
    assert trial["training"]["steps"] == 6
    assert [row["step"] for row in grouped["curve"]["1-2-seed1"]] == list(range(1, 7))
    with session_scope(engine) as s:
        job = jobs.get_job(s, job_id)
        # The ranks' progress reached the job through the group's events: the trial's last stage.
        assert job.progress["stage"].startswith("trial 1/1 1-2-seed1:") and job.progress["percent"] > 90
        assert "starting 2 processes (torchrun)" in job.log
    assert not _rank_pids(str(settings.jobs_dir / job_id / "group" / "launch.json"))

    # The same trial in the worker's own process (ddp, one rank): the same losses, step by step.
    alone_id, alone_experiment = _trial_job(engine, source, _spec(settings, steps=6, processes=1, strategy="ddp"))
    assert tasks.execute(alone_id, settings)["status"] == "succeeded"
    alone = _result(engine, alone_experiment)
    assert [r["loss"] for r in grouped["curve"]["1-2-seed1"]] == pytest.approx(
        [r["loss"] for r in alone["curve"]["1-2-seed1"]], rel=1e-4)
    assert trial["training"]["holdout_loss_after"] == pytest.approx(
        alone["result"]["trials"][0]["training"]["holdout_loss_after"], rel=1e-4)


def test_a_cancelled_group_stops_after_a_checkpoint_leaves_no_rank_and_resumes(settings, engine, saved_model):
    job_id, experiment_id = _trial_job(engine, str(saved_model("qwen3")),
                                       _spec(settings, steps=300, processes=2, strategy="fsdp"))
    marker = str(settings.jobs_dir / job_id / "group" / "launch.json")
    thread, outcome = _run_in_thread(job_id, settings)
    wait_for(lambda: _checkpoint_steps(settings, job_id), 180, "a first checkpoint")
    with session_scope(engine) as s:
        jobs.request_cancel(s, job_id=job_id)
    thread.join(120)
    assert outcome["status"] == "cancelled"
    assert not _rank_pids(marker)
    stopped_at = max(_checkpoint_steps(settings, job_id))
    assert 5 <= stopped_at < 300

    # Retried: it resumes from that checkpoint and trains to the end.
    with session_scope(engine) as s:
        assert jobs.retry_job(s, job_id=job_id) is not None
    assert tasks.execute(job_id, settings)["status"] == "succeeded"
    training = _result(engine, experiment_id)["result"]["trials"][0]["training"]
    assert training["resumed_from"] >= stopped_at and training["steps"] == 300
    assert not _rank_pids(marker)


def test_a_rank_that_dies_fails_the_job_with_one_line_at_once(settings, engine, saved_model):
    job_id, _ = _trial_job(engine, str(saved_model("qwen3")), _spec(settings, steps=300, processes=2, strategy="fsdp"))
    marker = str(settings.jobs_dir / job_id / "group" / "launch.json")
    thread, outcome = _run_in_thread(job_id, settings)
    wait_for(lambda: _checkpoint_steps(settings, job_id), 180, "a first checkpoint")
    ranks = [pid for pid in _rank_pids(marker) if b"worker.rank" in Path(f"/proc/{pid}/cmdline").read_bytes()
             and b"torch.distributed.run" not in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(ranks) == 2
    os.kill(max(ranks), signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive(), "the job hangs after a rank died"
    assert outcome["status"] == "failed"
    with session_scope(engine) as s:
        job = jobs.get_job(s, job_id)
    assert "\n" not in job.error and ("signal" in job.error or "exit code" in job.error or "rank" in job.error)
    assert not _rank_pids(marker)


def test_the_ranks_die_with_their_worker_and_the_next_run_resumes(settings, engine, saved_model, tmp_path):
    """The worker here is a plain process calling run_experiment_group (what the Celery task calls); it is
    killed with SIGKILL, as the kernel's OOM killer or a lost node would."""
    from worker.group import run_experiment_group
    from worker.tasks import runner_spec

    spec = runner_spec({**_spec(settings, steps=300, processes=2, strategy="fsdp")},
                       {"source": str(saved_model("qwen3")), "trust_remote_code": False})
    out = tmp_path / "job"
    roots = [str(r) for r in settings.model_roots] + [str(settings.data_dir)]
    script = ("import json, sys; from worker.group import run_experiment_group; "
              "a = json.loads(sys.argv[1]); run_experiment_group(a['spec'], processes=2, out_dir=a['out'], roots=a['roots'])")
    args = json.dumps({"spec": spec, "out": str(out), "roots": roots})
    worker = subprocess.Popen([sys.executable, "-c", script, args], cwd=str(REPO), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "trials" / "1-2-seed1" / "checkpoints"
    try:
        wait_for(lambda: list(checkpoints.glob("step-*")), 180, "a first checkpoint")
        marker = str(out / "group" / "launch.json")
        assert len(_rank_pids(marker)) >= 3  # torchrun and its two ranks
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_for(lambda: not _rank_pids(marker), 30, "the ranks to end with their worker")
    finally:
        if worker.poll() is None:
            worker.kill()
    stopped_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
    result = run_experiment_group(spec, processes=2, out_dir=out, roots=roots)  # the next worker's run
    assert result["status"] == "complete"
    assert result["trials"][0]["training"]["resumed_from"] >= stopped_at
