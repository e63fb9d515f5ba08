"""The OpenAPI document is the contract: schemathesis (every check) against the live app, in local
mode and in token mode, finds nothing. One check is left out, and why:

- ``positive_data_acceptance`` (ST202): it expects every schema-valid request to be accepted, while
  some rules are about the world, not the shape: a corpus path that does not exist, a hub id longer
  than the hub allows, a perturbation kind the engine does not know. They answer 400/422 with the
  reason. (The perturbation grammar can become a schema pattern once it lives in layertracer.spec.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness import REPO, free_port, quiet_env, wait_for

pytestmark = pytest.mark.slow
LEFT_OUT = "positive_data_acceptance"
SECRET = "a-real-secret-key-for-the-contract-tests-0123"


def _serve(tmp_path: Path, **settings: str):
    env = quiet_env()
    for key in [k for k in env if k.startswith("LAYERTRACER_")]:
        env.pop(key)
    env.update(LAYERTRACER_DATA_DIR=str(tmp_path / "data"), **settings)
    subprocess.run([sys.executable, "-m", "backend.preflight", "--migrate"], env=env, cwd=REPO, check=True, timeout=120)
    port = free_port()
    log = open(tmp_path / "app.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (tmp_path / "app.log").read_text()
        try:
            return httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, "the app to answer", interval=0.1)
    return server, base, env


def _schemathesis(base: str, *headers: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json", "--checks", "all",
               "--exclude-checks", LEFT_OUT, "--max-examples", "15", "--seed", "20261201", "--no-color",
               "--request-timeout", "30"]
    for header in headers:
        command += ["-H", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)


@pytest.mark.parametrize("mode", ["local", "token"])
def test_schemathesis_finds_no_failure(tmp_path, mode):
    settings = {"LAYERTRACER_AUTH": "token", "LAYERTRACER_SECRET_KEY": SECRET} if mode == "token" else {}
    server, base, env = _serve(tmp_path, **settings)
    try:
        headers = []
        if mode == "token":
            token = subprocess.run([sys.executable, "-m", "backend.admin", "create-token", "contract"], env=env,
                                   cwd=REPO, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
            headers.append(f"Authorization: Bearer {token}")
        proc = _schemathesis(base, *headers)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout or " passed" in proc.stdout, proc.stdout[-3000:]
