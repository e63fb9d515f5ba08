"""The dashboard served alone is as open as the API it drives: it holds no credential (each call
carries its browser tab's token), so it answers other machines only when that API checks tokens."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn

from backend.exposure import dashboard_exposure_problem
from backend.settings import Settings
from waiting import free_port
from service.app import create_api_app, create_dashboard_app

REPO = Path(__file__).resolve().parents[2]
SECRET = "a-real-secret-key-for-the-tests-0123456789"
REMOTE_PEER = ("192.0.2.7", 50123)  # TEST-NET-1: an address of another machine


class LiveApi:
    """The real API app, served by uvicorn on 127.0.0.1 in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_api_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            self.thread.join(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _dashboard_get(app, peer, host="127.0.0.1:8050") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=peer)

    async def get():
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return await client.get("/")

    return asyncio.run(get())


def test_the_rule():
    url = "http://api:8000"
    assert dashboard_exposure_problem(url, "token", False) is None
    assert dashboard_exposure_problem(url, "none", True) is None  # behind the user's own gateway
    assert "runs without authentication" in dashboard_exposure_problem(url, "none", False)
    assert "did not answer" in dashboard_exposure_problem(url, None, False)


@pytest.mark.parametrize("auth", ["none", "token"])
def test_the_dashboard_answers_other_machines_only_when_its_api_checks_tokens(auth, tmp_path):
    api_settings = Settings(data_dir=tmp_path, auth=auth, **({"secret_key": SECRET} if auth == "token" else {}))
    with LiveApi(api_settings) as api_url:
        app = create_dashboard_app(Settings(data_dir=tmp_path / "dash", api_url=api_url))
        local = _dashboard_get(app, ("127.0.0.1", 40000))
        remote = _dashboard_get(app, REMOTE_PEER, host="lab.example.org:8050")
    assert local.status_code == 200 and "<html" in local.text.lower()
    if auth == "token":
        assert remote.status_code == 200
    else:
        # Another machine's peer is refused; so is a foreign Host header (DNS rebinding) from this one.
        assert remote.status_code in (400, 403)
        assert _dashboard_get(app, REMOTE_PEER).status_code == 403
        assert _dashboard_get(app, ("127.0.0.1", 40000), host="attacker.example").status_code == 400


def test_a_dashboard_whose_api_does_not_answer_stays_on_this_machine(tmp_path):
    app = create_dashboard_app(Settings(data_dir=tmp_path, api_url=f"http://127.0.0.1:{free_port()}"))
    assert _dashboard_get(app, REMOTE_PEER).status_code == 403
    assert _dashboard_get(app, ("127.0.0.1", 40000)).status_code == 200


def test_the_cli_refuses_a_public_dashboard_for_an_api_without_auth(tmp_path):
    with LiveApi(Settings(data_dir=tmp_path)) as api_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERTRACER_")}
        result = subprocess.run(
            [sys.executable, "-m", "layertracer", "dashboard", "--host", "0.0.0.0", "--port", str(free_port()),
             "--api-url", api_url],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120, stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve the dashboard on 0.0.0.0")
    assert "runs without authentication" in lines[0]


def test_a_bad_setting_is_one_line_for_the_dashboard_too():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERTRACER_")}
    env["LAYERTRACER_AUTH"] = "token"  # and no secret key
    result = subprocess.run([sys.executable, "-m", "layertracer", "dashboard", "--host", "0.0.0.0", "--port",
                             str(free_port())], capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
                            stdin=subprocess.DEVNULL)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: LAYERTRACER_") and "SECRET_KEY" in lines[0]
