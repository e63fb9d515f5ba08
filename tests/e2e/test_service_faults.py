"""A worker process killed with SIGKILL in the middle of a trace and of a trial, in embedded and in
served mode: after a worker restarts, each job completes, nothing is lost, no two runs overlapped, and
the result is the same, number for number, as the same job run again without interruption."""

from __future__ import annotations

import pytest

from harness import wait_for
from layertracer.tasks.sets import builtin_task

pytestmark = pytest.mark.slow


def _assert_one_run_at_a_time(runs: list[dict], killed_at: float) -> None:
    """Two starts (the killed run and its successor), one end; the successor began after the kill."""
    starts = [r for r in runs if r["event"] == "start"]
    ends = [r for r in runs if r["event"] == "end"]
    assert [r["attempt"] for r in starts] == [1, 2]
    assert len(ends) == 1 and ends[0]["attempt"] == 2 and ends[0]["status"] == "succeeded"
    assert starts[0]["time"] < killed_at < starts[1]["time"] < ends[0]["time"]
    assert starts[0]["worker"] != starts[1]["worker"]


def test_worker_killed_mid_trace(service, model_root):
    model = service.register_model(model_root / "tiny")
    body = {"model_id": model["id"], "task_sets": ["all"], "perturbations": ["skip", "mask:keep=0.5,draws=3"],
            "options": {"limit": 20, "batch_size": 1, "similarity": False, "position_view": False}}
    trace = service.post("/traces", body)
    job_id = trace["job"]["id"]
    checkpoint = service.data_dir / "jobs" / job_id / "trace-checkpoint.npz"
    # Under way, and past its first checkpoint (every 0.5 s here): a tiny model's batches take 15 ms, so a
    # kill at the first progress alone could come before any checkpoint, and nothing would be resumed.
    wait_for(lambda: checkpoint.is_file() and 0 < ((service.job(job_id).get("progress") or {}).get("percent") or 0) < 70,
             60, "the trace to be under way past its first checkpoint", interval=0.01)
    killed_at = service.kill_worker(service.workers[0])
    job = service.job(job_id)
    assert job["status"] == "running" and job["attempts"] == 1  # the database still says so: the lease decides

    service.start_worker()
    job = service.wait_job(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    _assert_one_run_at_a_time(service.runs(job_id), killed_at)
    # The successor claimed after the kill: its reaper frees the job of a worker of this host whose
    # process is gone, or the lease lapses (LEASE_SECONDS), whichever comes first.
    assert service.runs(job_id)[1]["time"] >= killed_at
    result = service.client.get(f"/traces/{trace['id']}/result").json()
    assert len(result["tasks"]) == 12 and all(len(t["prompts"]) == 20 for t in result["tasks"].values())
    assert len(result["sensitivities"]) == 2
    log = "\n".join(service.client.get(f"/jobs/{job_id}/log").json()["lines"])
    assert "attempt 1 started" in log and "attempt 2 started" in log
    # The second attempt took what the first had done from its checkpoint (written every 0.5 s here).
    resumed = result["timings"]["resumed_prompts"]
    assert 0 < resumed < 240 and f"{int(resumed)} prompts were done" in log
    assert not checkpoint.exists()
    # Bit-identical to the same trace never interrupted.
    again = service.post("/traces", body)
    assert service.wait_job(again["job"]["id"], timeout=120)["status"] == "succeeded"
    clean = service.client.get(f"/traces/{again['id']}/result").json()
    for name, task in clean["tasks"].items():
        assert result["tasks"][name]["target_prob"] == task["target_prob"], name
        assert result["tasks"][name]["top_tokens"] == task["top_tokens"], name
    for name, sens in clean["sensitivities"].items():
        assert result["sensitivities"][name]["js"] == sens["js"], name
    assert result["freeze_plan"] == clean["freeze_plan"]


def test_worker_killed_mid_trial_resumes_from_its_checkpoint(service, model_root):
    model = service.register_model(model_root / "tiny")
    corpus = service.data_dir / "corpus.txt"
    corpus.write_text("\n\n".join(item.prompt + item.target for name in ("antonyms_en", "synonyms_en", "plural_en")
                                  for item in builtin_task(name).items), encoding="utf-8")
    steps, every = 300, 20
    body = {"model_id": model["id"], "corpus": str(corpus), "allocation": "train-shallow", "seeds": [1],
            "steps": steps, "batch_size": 8, "block_size": 64, "checkpoint_every": every, "warmup_steps": 5,
            "holdout": 0.0, "device": "cpu", "dtype": "float32"}
    trial = service.post("/trials", body)
    job_id = trial["job"]["id"]
    checkpoints = service.data_dir / "jobs" / job_id / "trials" / "train-shallow-seed1" / "checkpoints"
    wait_for(lambda: (checkpoints / f"step-{2 * every:06d}").is_dir(), 90, "the trial's second checkpoint",
             interval=0.01)
    killed_at = service.kill_worker(service.workers[0])
    assert service.job(job_id)["status"] == "running"

    service.start_worker()
    job = service.wait_job(job_id, timeout=150)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    _assert_one_run_at_a_time(service.runs(job_id), killed_at)
    result = service.client.get(f"/experiments/{trial['id']}").json()["result"]
    training = result["trials"][0]["training"]
    assert training["steps"] == steps
    assert 2 * every <= training["resumed_from"] < steps and training["resumed_from"] % every == 0
    # The result's loss curve covers the killed run's steps too (they travel in the checkpoint).
    assert [step for step, _ in training["loss_curve"]] == list(range(1, steps + 1))
    # Every optimizer step has its metrics row, once: those of the killed run too.
    curves = service.client.get(f"/experiments/{trial['id']}/metrics").json()["trials"]
    assert [p["step"] for p in curves["train-shallow-seed1"]] == list(range(1, steps + 1))
    # Bit-identical to the same trial never interrupted: losses, weights (drift) and evaluation.
    again = service.post("/trials", body)
    assert service.wait_job(again["job"]["id"], timeout=150)["status"] == "succeeded"
    clean = service.client.get(f"/experiments/{again['id']}").json()["result"]["trials"][0]
    assert training["loss_curve"] == clean["training"]["loss_curve"]
    assert result["trials"][0]["drift"] == clean["drift"] and result["trials"][0]["evals"] == clean["evals"]
    clean_curve = service.client.get(f"/experiments/{again['id']}/metrics").json()["trials"]["train-shallow-seed1"]
    assert [p["loss"] for p in curves["train-shallow-seed1"]] == [p["loss"] for p in clean_curve]
