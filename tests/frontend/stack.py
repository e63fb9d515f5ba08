"""The real stack in embedded mode for the browser tests and the dashboard benchmark: ``layertracer up``
(migrations, one worker, the API and the dashboard on one port) over a fresh data folder, started as a
subprocess in its own process group and stopped with SIGTERM (``up`` stops its children)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import httpx
from waiting import free_port, wait_for  # noqa: F401 (re-exported to the tests here)

REPO = Path(__file__).resolve().parents[2]


class Stack:
    """``layertracer up`` on a free port; ``api`` is an httpx client of its /api/v1."""

    def __init__(self, root: Path, model_roots: tuple[Path, ...], extra_env: Optional[dict[str, str]] = None,
                 token: Optional[str] = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1",
                   LAYERTRACER_MODEL_ROOTS=os.pathsep.join(str(p) for p in (*model_roots, self.data_dir)))
        for key in ("LAYERTRACER_DATABASE_URL", "LAYERTRACER_BROKER_URL", "LAYERTRACER_AUTH", "LAYERTRACER_API_URL"):
            env.pop(key, None)
        env.update(extra_env or {})
        self.env = env
        self.token = token
        self.log = root / "up.log"
        self.process: Optional[subprocess.Popen] = None
        self.api = httpx.Client(base_url=f"{self.url}/api/v1", timeout=60)

    def admin(self, *args: str) -> str:
        """``python -m backend.admin ...`` on this stack's database; returns its stdout."""
        done = subprocess.run([sys.executable, "-m", "backend.admin", *args], env={**self.env,
                              "LAYERTRACER_DATA_DIR": str(self.data_dir)}, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def use_token(self, token: str) -> None:
        self.api.headers["Authorization"] = f"Bearer {token}"

    def start(self) -> "Stack":
        command = [sys.executable, "-m", "layertracer.cli", "up", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for(self._healthy, 180, "the service to answer /api/v1/health")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"layertracer up exited: {self.log.read_text(errors='replace')[-3000:]}")
        try:
            return self.api.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.api.close()
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # -- API helpers for set-up and checks ------------------------------------------------------------
    def get(self, path: str, **params) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
        return response.json()

    def post(self, path: str, body: dict) -> Any:
        response = self.api.post(path, json=body)
        assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text[:300]}"
        return response.json()

    def register_model(self, source: Path, name: str, timeout: float = 120) -> dict:
        model = self.post("/models", {"source": str(source), "name": name})
        return wait_for(lambda: (m := self.get(f"/models/{model['id']}"))["status"] == "succeeded" and m, timeout,
                        f"model {name} to be inspected")

    def wait_finished(self, path: str, timeout: float) -> dict:
        item = wait_for(lambda: (x := self.get(path))["status"] in ("succeeded", "failed", "cancelled") and x, timeout,
                        f"{path} to finish")
        assert item["status"] == "succeeded", f"{path} {item['status']}: {(item.get('job') or {}).get('error')}"
        return item
