"""A real service for end-to-end tests: the API (uvicorn) and Celery workers as subprocesses over one
data folder, one database and one broker, in embedded mode (SQLite + filesystem broker) or served mode
(Postgres + Redis). Short leases (3 s lease, 1 s heartbeat) so a dead worker's job is re-queued quickly.

Every wait polls a condition with a deadline; nothing sleeps for timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx
from waiting import free_port, wait_for  # noqa: F401 (re-exported to the tests here)

REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")
# The hub model of the services' Hugging Face cache (conftest's hub_root): a repo id and its commit.
HUB_REPO = "acme/tiny"
HUB_COMMIT = "3" * 40
LEASE_SECONDS = 3
HEARTBEAT_SECONDS = 1


def quiet_env() -> dict[str, str]:
    """One thread per process (2 cores: the API, a worker and the test share them), no hub, no bars."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1",
               TQDM_DISABLE="1")
    return env


class Service:
    """API + workers for one mode. ``client`` talks to the API; ``workers`` are live worker processes."""

    def __init__(self, root: Path, *, database_url: Optional[str] = None, broker_url: Optional[str] = None,
                 model_roots: tuple[Path, ...] = (), extra_env: Optional[dict[str, str]] = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = quiet_env()
        env.update(
            LAYERTRACER_DATA_DIR=str(self.data_dir),
            LAYERTRACER_LEASE_SECONDS=str(LEASE_SECONDS),
            LAYERTRACER_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
            LAYERTRACER_MAX_ATTEMPTS="3",
            LAYERTRACER_TRACE_CHECKPOINT_SECONDS="0.5",
            LAYERTRACER_MODEL_ROOTS=os.pathsep.join(str(p) for p in (*model_roots, self.data_dir)),
            LAYERTRACER_API_URL=self.url,
        )
        for key in ("LAYERTRACER_DATABASE_URL", "LAYERTRACER_BROKER_URL"):
            env.pop(key, None)
        if database_url:
            env["LAYERTRACER_DATABASE_URL"] = database_url
        if broker_url:
            env["LAYERTRACER_BROKER_URL"] = broker_url
        env.update(extra_env or {})
        self.env = env
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'layertracer.db'}"
        self.api: Optional[subprocess.Popen] = None
        self.workers: list[subprocess.Popen] = []
        self._count = 0
        self.client = httpx.Client(base_url=f"{self.url}/api/v1", timeout=30)

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.logs / log_name, "ab")
        return subprocess.Popen(command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_api(self) -> None:
        # Migrations first, once, so the API and the worker never race to create the tables.
        subprocess.run([sys.executable, "-m", "worker.migrate"], env=self.env, cwd=REPO, check=True, timeout=120)
        self.api = self._spawn([sys.executable, "-m", "uvicorn", "service.app:create_api_app", "--factory",
                                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"], "api.log")
        wait_for(self._healthy, 60, "the API to answer /health", interval=0.1)

    def _healthy(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            raise AssertionError(f"the API exited: {(self.logs / 'api.log').read_text()[-2000:]}")
        try:
            return self.client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self) -> subprocess.Popen:
        self._count += 1
        name = f"w{self._count}-{os.getpid()}@%h"
        command = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "trace,train",
                   "--pool", "solo", "--concurrency", "1", "--without-gossip", "--without-mingle",
                   "--without-heartbeat", "--loglevel", "INFO", "-n", name]
        process = self._spawn(command, f"worker{self._count}.log")
        self.workers.append(process)
        return process

    def kill_worker(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> float:
        """Send ``sig`` to a worker and wait for it to die; returns the wall-clock time of the kill."""
        killed_at = time.time()
        os.killpg(process.pid, sig)
        process.wait(timeout=60)
        self.workers.remove(process)
        return killed_at

    def stop(self) -> None:
        for process in [*self.workers, *([self.api] if self.api else [])]:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in [*self.workers, *([self.api] if self.api else [])]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.workers.clear()
        self.client.close()

    # -- API helpers ---------------------------------------------------------------------------------
    def post(self, path: str, body: dict, **kwargs) -> dict:
        response = self.client.post(path, json=body, **kwargs)
        assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text}"
        return response.json()

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_job(self, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120) -> dict:
        def check():
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        try:
            return wait_for(check, timeout, f"job {job_id} to be {'/'.join(statuses)}", interval=0.1)
        except AssertionError:
            raise AssertionError(f"job {job_id} is {self.job(job_id)}; worker logs: {self.worker_logs()[-3000:]}")

    def register_model(self, source: Path) -> dict:
        model = self.post("/models", {"source": str(source)})
        job = self.wait_job(model["job"]["id"], timeout=90)
        assert job["status"] == "succeeded", job
        return self.client.get(f"/models/{model['id']}").json()

    def runs(self, job_id: str) -> list[dict]:
        """The worker's run log of a job: one record per start and end of a run."""
        path = self.data_dir / "jobs" / job_id / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker*.log")))
