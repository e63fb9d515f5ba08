"""The local supervisor: the processes of ``layertracer up`` (and of the demo), started and watched.

It only starts processes (``python -m uvicorn service.app:...``, ``python -m celery -A worker.app ...``)
and imports no web package itself, so each part runs as it would in a team deployment.

``LocalService`` is the one-person, one-machine mode: migrations, then one worker and one uvicorn process
serving the API at ``/api/v1`` and the dashboard at ``/`` on one port bound to 127.0.0.1, with everything
(SQLite file, embedded broker, job folders) under the data folder. With ``LAYERTRACER_DATABASE_URL``
(Postgres) and ``LAYERTRACER_BROKER_URL`` (Redis) in the environment the same processes use those.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from layertracer.cli_common import err
from layertracer.errors import LayerTracerError
from layertracer.spec.jobs import ALL_QUEUES

DEFAULT_QUEUES = ",".join(ALL_QUEUES)  # one host, one worker: it serves every queue
# How long `up` waits for the API to answer, and for children to stop after Ctrl-C.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
# At most one worker restart per this many seconds (a worker that dies at start must not spin).
WORKER_RESTART_GAP_S = 5.0
# The ASGI factories uvicorn serves (service/app.py).
ONE_PORT_APP = "service.app:create_app"
API_APP = "service.app:create_api_app"
DASHBOARD_APP = "service.app:create_dashboard_app"


def data_dir_of(value: Optional[Path]) -> Path:
    """The data folder (``--data-dir``, else ``$LAYERTRACER_DATA_DIR``, else ./data), made if missing."""
    folder = (value or Path(os.environ.get("LAYERTRACER_DATA_DIR", "data"))).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (the check behind the one-line 'port taken' error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as uvicorn sets it: connections of a server that just stopped (TIME_WAIT, up to
        # a minute) must not count as "in use", while a listening socket still makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def service_env(data_dir: Path, **values: object) -> dict[str, str]:
    """The environment of the children: ours, plus ``LAYERTRACER_*`` values (None values are left out)."""
    env = dict(os.environ)
    env["LAYERTRACER_DATA_DIR"] = str(data_dir)
    for key, value in values.items():
        if value is not None:
            env[f"LAYERTRACER_{key.upper()}"] = str(value)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a service's log is no terminal: no tqdm bars
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_command(queues: str = DEFAULT_QUEUES, *, name: Optional[str] = None, loglevel: str = "INFO") -> list[str]:
    """The Celery worker command line: solo pool, one job at a time, no broadcast chatter.

    gossip/mingle/heartbeat are worker-to-worker events LayerTracer does not use (the database holds the
    state); mingle alone would delay every start by a second waiting for replies.
    """
    command = [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker",
        "-Q", queues, "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", loglevel,
    ]
    if name:
        command += ["-n", name]
    return command


def uvicorn_command(target: str, host: str, port: int, *, factory: bool = True, loglevel: str = "warning") -> list[str]:
    command = [sys.executable, "-m", "uvicorn", target, "--host", host, "--port", str(port), "--log-level", loglevel]
    if factory:
        command.insert(4, "--factory")
    return command


def _wait_for_http(url: str, processes: list[subprocess.Popen], timeout: float) -> Optional[str]:
    """Poll ``url`` until it answers 200; returns None, or why it did not (a child exited, timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                return f"{' '.join(process.args[1:4])} exited with code {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return None
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return f"{url} did not answer within {timeout:.0f} s"


def api_auth_mode(api_url: str, timeout: float = 5.0) -> Optional[str]:
    """The auth mode the API at ``api_url`` reports on ``/api/v1/health`` (``"none"`` or ``"token"``), or
    None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/api/v1/health", timeout=timeout) as response:
            return json.loads(response.read()).get("auth")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def stop_processes(processes: list[subprocess.Popen], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every child (a worker stops its job at the next progress event), wait, SIGKILL stragglers."""
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            process.wait()


def preflight(env: dict[str, str], *, migrate: bool) -> None:
    """Check the service's settings in ``env`` (``python -m backend.preflight``: the service's own rules,
    such as no public address without auth) and migrate the database; LayerTracerError with its line."""
    command = [sys.executable, "-m", "backend.preflight"] + (["--migrate"] if migrate else [])
    checked = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if checked.returncode == 0:
        return
    lines = (checked.stderr or checked.stdout).strip().splitlines() or ["unknown error"]
    if lines[-1].startswith("error: "):
        raise LayerTracerError(lines[-1].removeprefix("error: "))
    raise LayerTracerError(f"database migration failed: {lines[-1]}")


# prctl(2) option: the signal the kernel sends a process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def _dies_with(parent: int):
    """A preexec function: the child gets SIGTERM when ``parent`` dies, even by SIGKILL, so a killed
    `up` leaves no API holding its port and no worker running unsupervised. Linux only (elsewhere
    a no-op); a parent already gone before the child asked is caught by the ppid check."""

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: no parent-death signal
            return
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _spawn(command: list[str], env: dict[str, str], log=None) -> subprocess.Popen:
    """Start a child; its output goes to ``log`` (an open file) when given, else to our terminal."""
    # A session of its own: the terminal's Ctrl-C reaches `up` only, which then stops the children in
    # order; and a parent-death signal, so that children never outlive `up` (kill -9 included).
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=log, stderr=log,
                            preexec_fn=_dies_with(os.getpid()) if sys.platform.startswith("linux") else None)


class LocalService:
    """The processes ``up`` runs: migrations, then one worker (unless ``worker=False``) and one uvicorn
    process serving the API at ``/api/v1`` and the dashboard at ``/`` on ``host:port``.

    ``start()`` returns once the API answers; ``supervise()`` (call it every second or so) replaces a
    worker that died and raises LayerTracerError when the server did; ``stop()`` stops every child.
    Used by ``layertracer up`` and ``layertracer demo``.
    """

    def __init__(self, data_dir: Path, host: str, port: int, *, queues: str = DEFAULT_QUEUES,
                 worker: bool = True, name: str = "up", loglevel: str = "INFO",
                 log_file: Optional[Path] = None) -> None:
        if not port_free(host, port):
            raise LayerTracerError(f"port {port} on {host} is already in use; stop what uses it or pick another with --port")
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        self.env = service_env(data_dir, host=host, port=port, api_url=self.url)
        self.worker_cmd = worker_command(queues, name=f"{name}-{os.getpid()}@%h", loglevel=loglevel) if worker else None
        self.processes: list[subprocess.Popen] = []
        self.server: Optional[subprocess.Popen] = None
        self._last_restart = 0.0
        self.log_file = log_file
        self._log = None

    def start(self) -> None:
        preflight(self.env, migrate=True)
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "a", encoding="utf-8")
        if self.worker_cmd:
            self.processes.append(_spawn(self.worker_cmd, self.env, self._log))
        self.server = _spawn(uvicorn_command(ONE_PORT_APP, self.host, self.port), self.env, self._log)
        self.processes.append(self.server)
        problem = _wait_for_http(f"{self.url}/api/v1/health", self.processes, START_TIMEOUT_S)
        if problem:
            self.stop()
            raise LayerTracerError(f"the service did not start: {problem}")

    def supervise(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            self.stop()
            raise LayerTracerError(f"the API server exited with code {self.server.returncode}; stopped the rest")
        for index, process in enumerate(self.processes):
            if process is not self.server and process.poll() is not None:
                # A worker that died (killed, out of memory) is replaced; its job is re-queued by the
                # new worker's reaper once the lease lapses, and a trial resumes from its checkpoint.
                time.sleep(max(0.0, WORKER_RESTART_GAP_S - (time.monotonic() - self._last_restart)))
                err.print(f"the worker exited with code {process.returncode}; starting a new one", highlight=False)
                self.processes[index] = _spawn(self.worker_cmd, self.env, self._log)
                self._last_restart = time.monotonic()

    def stop(self) -> None:
        stop_processes(self.processes)
        if self._log is not None:
            self._log.close()
            self._log = None
