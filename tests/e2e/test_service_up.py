"""``layertracer up``: one command starts migrations, a worker, the API and the dashboard on one port
bound to 127.0.0.1; a model registered through it is inspected by its worker; Ctrl-C stops every child."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness import REPO, free_port, quiet_env, wait_for

pytestmark = pytest.mark.slow


def _processes_with(data_dir: Path) -> list[int]:
    """Pids of live processes whose environment names ``data_dir`` as LAYERTRACER_DATA_DIR."""
    needle = f"LAYERTRACER_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:  # a zombie has already exited
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("mode", ["embedded", "served"])
def test_up_serves_api_and_dashboard_on_one_port_and_stops_cleanly(mode, tmp_path, model_root, request):
    data = tmp_path / "data"
    shutil.copytree(model_root / "tiny", data / "models" / "tiny")
    port = free_port()
    env = _up_env(mode, request, LAYERTRACER_LEASE_SECONDS="3", LAYERTRACER_HEARTBEAT_SECONDS="1")
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        up = subprocess.Popen([sys.executable, "-m", "layertracer", "up", "--data-dir", str(data), "--port", str(port)],
                              cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: f"LayerTracer is running at {base}/" in out.read_text() or up.poll() is not None, 120,
                 "`up` to print its URL", interval=0.1)
        assert up.poll() is None, err.read_text()
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/api/v1/health").status_code == 200
            page = client.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "_dash-config" in page.text  # the Dash app, on the same port
            assert client.get("/docs").status_code == 200
            missing = client.get("/api/v1/no-such-thing")
            assert missing.status_code == 404 and "detail" in missing.json()  # API 404s, not a dashboard page
            model = client.post("/api/v1/models", json={"source": "models/tiny"})
            assert model.status_code == 201, model.text
            job_id = model.json()["job"]["id"]
            job = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{job_id}").json())["status"] in
                           ("succeeded", "failed") and j, 90, "the inspect job", interval=0.2)
            assert job["status"] == "succeeded", job
            if mode == "embedded":
                # A worker that dies is replaced, and jobs still run.
                workers = [pid for pid in _processes_with(data) if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()]
                assert len(workers) == 1
                os.kill(workers[0], signal.SIGKILL)
                wait_for(lambda: [p for p in _processes_with(data) if p != workers[0]
                                  and b"celery" in Path(f"/proc/{p}/cmdline").read_bytes()], 30,
                         "`up` to start a new worker", interval=0.1)
                trace = client.post("/api/v1/traces", json={
                    "model_id": model.json()["id"], "task_sets": ["antonyms_en"],
                    "options": {"limit": 1, "similarity": False, "position_view": False}})
                assert trace.status_code == 201, trace.text
                trace_job = trace.json()["job"]["id"]
                done = wait_for(lambda: (j := client.get(f"/api/v1/jobs/{trace_job}").json())["status"] in
                                ("succeeded", "failed") and j, 90, "a trace on the new worker", interval=0.2)
                assert done["status"] == "succeeded", done
        if mode == "embedded":
            assert (data / "layertracer.db").is_file() and (data / "broker" / "queue").is_dir()
        # Loopback only: the port does not answer on another address of this machine.
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            with socket.socket() as probe, pytest.raises(OSError):
                probe.settimeout(2)
                probe.connect((address, port))
        children = _processes_with(data)
        assert len(children) >= 2  # the worker and uvicorn (plus `up` itself)
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        code = up.wait(timeout=60)
    assert code == 0, err.read_text()
    assert "stopped" in err.read_text()
    if mode == "embedded":
        assert "the worker exited with code -9; starting a new one" in err.read_text()
    wait_for(lambda: not _processes_with(data), 10, "every child of `up` to exit", interval=0.1)


def _embedded_env(**values: str) -> dict[str, str]:
    """The environment of an embedded-mode `up` (SQLite, the folder broker), with ``values`` added."""
    env = quiet_env()
    for key in ("LAYERTRACER_DATA_DIR", "LAYERTRACER_DATABASE_URL", "LAYERTRACER_BROKER_URL"):
        env.pop(key, None)
    env.update(values)
    return env


def _up_env(mode: str, request, **values: str) -> dict[str, str]:
    """The environment of an `up` in ``mode``: embedded (SQLite, the folder broker) or served (a new
    Postgres database and a Redis database of its own, so the session's `served` worker takes none of
    its jobs), with ``values`` added."""
    env = _embedded_env(**values)
    if mode == "served":
        env["LAYERTRACER_DATABASE_URL"] = request.getfixturevalue("new_pg_database")()
        env["LAYERTRACER_BROKER_URL"] = request.getfixturevalue("other_redis_url")
    return env


def _start_up(tmp_path: Path, name: str, data: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """`layertracer up` on ``data`` and ``port``, once it prints its URL (logs: tmp_path/NAME.out, .err)."""
    out = tmp_path / f"{name}.out"
    with open(out, "wb") as stdout, open(tmp_path / f"{name}.err", "wb") as stderr:
        up = subprocess.Popen([sys.executable, "-m", "layertracer", "up", "--data-dir", str(data), "--port", str(port)],
                              cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    wait_for(lambda: f"LayerTracer is running at http://127.0.0.1:{port}/" in out.read_text() or up.poll() is not None,
             120, f"`up` ({name}) to print its URL", interval=0.1)
    assert up.poll() is None, (tmp_path / f"{name}.err").read_text()
    return up


def test_kill_9_of_up_takes_its_children_with_it_and_a_new_up_starts(tmp_path):
    """`up` killed with SIGKILL cannot stop its children itself: the kernel's parent-death signal does,
    so the port is free again and a new `up` on the same data folder and port starts."""
    data = tmp_path / "data"
    port = free_port()
    env = _embedded_env()
    base = f"http://127.0.0.1:{port}"
    first = _start_up(tmp_path, "first", data, port, env)
    children = [pid for pid in _processes_with(data) if pid != first.pid]
    assert len(children) >= 2  # the worker and uvicorn
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    wait_for(lambda: not _processes_with(data), 60, "the children of the killed `up` to exit", interval=0.1)
    second = _start_up(tmp_path, "second", data, port, env)
    try:
        assert httpx.get(f"{base}/api/v1/health", timeout=30).status_code == 200
    finally:
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=60) == 0
    wait_for(lambda: not _processes_with(data), 10, "every child of the second `up` to exit", interval=0.1)


def test_a_port_whose_server_just_stopped_is_free_and_a_listening_one_is_not():
    """Connections of a stopped server linger in TIME_WAIT for up to a minute; `up` run again at once
    must still start (uvicorn binds with SO_REUSEADDR), while a live listener is refused."""
    from service.supervisor import port_free

    port = free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    assert not port_free("127.0.0.1", port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    client.close()
    server.close()
    assert port_free("127.0.0.1", port)


def _finished(client: httpx.Client, job_id: str):
    state = client.get(f"/jobs/{job_id}").json()
    return state if state["status"] in ("succeeded", "failed", "cancelled") else None


def _up_killed_mid_job(tmp_path: Path, env: dict[str, str], model_root: Path, submit, under_way, fetch):
    """A job run under an `up` killed with SIGKILL once ``under_way(client, job_id, data)`` holds, then
    finished by a second `up` on the same data folder; and the same job run again there, uninterrupted.

    ``submit(client, model) -> resource`` (with its ``job``); ``fetch(client, resource) -> result``.
    Returns (the interrupted job's result, the uninterrupted one's), after checking the runs: the first
    worker stopped with `up` (its parent-death signal; a stop gives the attempt back) and a worker of
    the second `up` finished the job.
    """
    data = tmp_path / "data"
    shutil.copytree(model_root / "tiny", data / "models" / "tiny")
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    first = _start_up(tmp_path, "first", data, port, env)
    with httpx.Client(base_url=base, timeout=30) as client:
        model = client.post("/models", json={"source": "models/tiny"}).json()
        wait_for(lambda: client.get(f"/jobs/{model['job']['id']}").json()["status"] == "succeeded", 90, "the inspection")
        interrupted = submit(client, model)
        job_id = interrupted["job"]["id"]
        wait_for(lambda: under_way(client, job_id, data), 120, "the job to be under way", interval=0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    wait_for(lambda: not _processes_with(data), 90, "the children of the killed `up` to exit", interval=0.1)

    second = _start_up(tmp_path, "second", data, port, env)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            job = wait_for(lambda: _finished(client, job_id), 300, "the interrupted job to finish", interval=0.2)
            assert job["status"] == "succeeded", job
            runs = [json.loads(line) for line in (data / "jobs" / job_id / "runs.jsonl").read_text().splitlines()]
            first_worker = runs[0]["worker"]
            # One run, released; a stopping worker does not take the job back (it rejects the message).
            first_runs = [(r["event"], r.get("status")) for r in runs if r["worker"] == first_worker]
            assert first_runs == [("start", None), ("end", "released")], runs
            assert runs[-1]["event"] == "end" and runs[-1]["status"] == "succeeded" and runs[-1]["worker"] != first_worker
            resumed = fetch(client, interrupted)
            again = submit(client, model)
            assert wait_for(lambda: _finished(client, again["job"]["id"]), 300, "the uninterrupted job")["status"] == "succeeded"
            clean = fetch(client, again)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=60)
    wait_for(lambda: not _processes_with(data), 30, "every child of the second `up` to exit", interval=0.1)
    return resumed, clean


# Short beats, and a trace checkpoint every half second, so that a kill always falls between them.
DRILL_ENV = {"LAYERTRACER_LEASE_SECONDS": "3", "LAYERTRACER_HEARTBEAT_SECONDS": "1",
             "LAYERTRACER_TRACE_CHECKPOINT_SECONDS": "0.5"}


@pytest.mark.parametrize("mode", ["embedded", "served"])
def test_up_killed_mid_trace_resumes_in_the_next_up_with_identical_results(mode, tmp_path, model_root, request):
    """The whole `up` tree killed with SIGKILL in the middle of a trace: the next `up` on the same data
    folder re-queues the job (its worker is gone), resumes it from the trace checkpoint, and the result
    is the same, number for number, as the same trace run without interruption."""
    body = {"task_sets": ["all"], "perturbations": ["skip", "mask:keep=0.5,draws=4", "noise:scale=1,draws=4"],
            "options": {"limit": 30, "batch_size": 1, "similarity": False, "position_view": False}}

    def submit(client, model):
        return client.post("/traces", json={"model_id": model["id"], **body}).json()

    def under_way(client, job_id, _data):
        return 0 < ((client.get(f"/jobs/{job_id}").json().get("progress") or {}).get("percent") or 0) < 60

    resumed, clean = _up_killed_mid_job(tmp_path, _up_env(mode, request, **DRILL_ENV), model_root, submit, under_way,
                                        lambda client, trace: client.get(f"/traces/{trace['id']}/result").json())
    assert resumed["timings"]["resumed_prompts"] > 0
    assert resumed["tasks"].keys() == clean["tasks"].keys()
    for name, task in clean["tasks"].items():
        assert resumed["tasks"][name]["target_prob"] == task["target_prob"], name  # bit for bit
        assert resumed["tasks"][name]["top_tokens"] == task["top_tokens"], name
    for name, sens in clean["sensitivities"].items():
        assert resumed["sensitivities"][name]["js"] == sens["js"], name
    assert resumed["freeze_plan"] == clean["freeze_plan"]


@pytest.mark.parametrize("mode", ["embedded", "served"])
def test_up_killed_mid_trial_resumes_in_the_next_up_with_identical_results(mode, tmp_path, model_root, request):
    """The whole `up` tree killed with SIGKILL in the middle of a trial: the next `up` resumes it from
    its last checkpoint, and it ends with the same losses, weights (their drift from the base, block by
    block) and evaluation as the same trial never interrupted."""
    from layertracer.tasks.sets import builtin_task

    corpus = tmp_path / "data" / "corpus.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("\n\n".join(item.prompt + item.target for name in ("antonyms_en", "synonyms_en", "plural_en")
                                  for item in builtin_task(name).items), encoding="utf-8")
    steps, every = 200, 20
    body = {"corpus": str(corpus), "allocation": "train-shallow", "seeds": [1], "steps": steps, "batch_size": 8,
            "block_size": 64, "checkpoint_every": every, "warmup_steps": 5, "holdout": 0.1, "device": "cpu",
            "dtype": "float32"}

    def submit(client, model):
        return client.post("/trials", json={"model_id": model["id"], **body}).json()

    def under_way(_client, job_id, data):
        checkpoints = data / "jobs" / job_id / "trials" / "train-shallow-seed1" / "checkpoints"
        return (checkpoints / f"step-{2 * every:06d}").is_dir()

    def fetch(client, trial):
        result = client.get(f"/experiments/{trial['id']}").json()["result"]
        curves = client.get(f"/experiments/{trial['id']}/metrics").json()["trials"]["train-shallow-seed1"]
        return result["trials"][0], curves

    (resumed, resumed_curve), (clean, clean_curve) = _up_killed_mid_job(
        tmp_path, _up_env(mode, request, **DRILL_ENV), model_root, submit, under_way, fetch)
    assert clean["training"]["resumed_from"] in (None, 0)
    assert 2 * every <= resumed["training"]["resumed_from"] < steps
    assert resumed["training"]["steps"] == clean["training"]["steps"] == steps
    # Every optimizer step has its metrics row, once, and the same loss as without the kill.
    assert [p["step"] for p in resumed_curve] == list(range(1, steps + 1))
    assert [(p["step"], p["loss"]) for p in resumed_curve] == [(p["step"], p["loss"]) for p in clean_curve]
    for key in ("loss_curve", "final_loss", "holdout_loss_after", "eval_loss"):
        assert resumed["training"][key] == clean["training"][key], key
    assert resumed["drift"] == clean["drift"]  # the final weights, block by block, bit for bit
    assert resumed["evals"] == clean["evals"]
