"""The parts started one by one, as in a team deployment: ``layertracer api``, ``layertracer worker``
and ``layertracer dashboard`` (pointed at the API) over one data folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import httpx
import pytest

from harness import REPO, free_port, quiet_env, wait_for

pytestmark = pytest.mark.slow


def test_api_worker_and_dashboard_commands(tmp_path, model_root):
    data = tmp_path / "data"
    shutil.copytree(model_root / "tiny", data / "models" / "tiny")
    api_port, dash_port = free_port(), free_port()
    env = quiet_env()
    for key in ("LAYERTRACER_DATA_DIR", "LAYERTRACER_DATABASE_URL", "LAYERTRACER_BROKER_URL"):
        env.pop(key, None)
    # The API's migrations must be in place before the worker migrates too (`up` does this for you).
    env["LAYERTRACER_DATA_DIR"] = str(data)
    subprocess.run([sys.executable, "-m", "worker.migrate"], env=env, cwd=REPO, check=True, timeout=120)
    cli = [sys.executable, "-m", "layertracer"]
    commands = {
        "api": cli + ["api", "--data-dir", str(data), "--port", str(api_port)],
        "worker": cli + ["worker", "--data-dir", str(data), "--queues", "trace,train", "--name", f"parts-{os.getpid()}@%h"],
        "dashboard": cli + ["dashboard", "--port", str(dash_port), "--api-url", f"http://127.0.0.1:{api_port}"],
    }
    processes = {name: subprocess.Popen(command, cwd=REPO, env=env, stdout=open(tmp_path / f"{name}.log", "wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
                 for name, command in commands.items()}

    def answers(url: str) -> bool:
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited: {(tmp_path / f'{name}.log').read_text()[-2000:]}"
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{api_port}/api/v1/health"), 90, "the API", interval=0.2)
        wait_for(lambda: answers(f"http://127.0.0.1:{dash_port}/"), 90, "the dashboard", interval=0.2)
        page = httpx.get(f"http://127.0.0.1:{dash_port}/", timeout=10)
        assert "_dash-config" in page.text
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}/api/v1", timeout=30) as client:
            model = client.post("/models", json={"source": "models/tiny"})
            assert model.status_code == 201, model.text
            job_id = model.json()["job"]["id"]
            job = wait_for(lambda: (j := client.get(f"/jobs/{job_id}").json())["status"] in ("succeeded", "failed")
                           and j, 90, "the worker to inspect the model", interval=0.2)
            assert job["status"] == "succeeded", job
            assert client.get(f"/models/{model.json()['id']}").json()["info"]["num_layers"] == 4
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        codes = {name: process.wait(timeout=60) for name, process in processes.items()}
    # SIGTERM is a clean stop for each part: the worker exits 0; uvicorn finishes its shutdown, then
    # re-raises the signal it caught (its exit status says what stopped it).
    assert codes == {"api": -signal.SIGTERM, "worker": 0, "dashboard": -signal.SIGTERM}
    for name in ("api", "dashboard"):
        assert "Application shutdown complete" in (tmp_path / f"{name}.log").read_text()
