"""``layertracer up | api | worker | dashboard | demo``: the service's commands, whole or in parts.

The engine's CLI (``layertracer/cli.py``) finds these through the ``layertracer.commands`` entry points
(pyproject.toml), so the engine never imports the service: an engine-only install simply has no
``up``. Each command starts processes (see ``service.supervisor``) and imports no web package.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from layertracer.cli_common import err, fail, out
from layertracer.spec.jobs import ALL_QUEUES
from service.demo import QUICK, FULL, ApiClient, prepare_world, run_demo
from service.supervisor import (
    API_APP,
    DASHBOARD_APP,
    DEFAULT_QUEUES,
    LocalService,
    api_auth_mode,
    data_dir_of,
    port_free,
    preflight,
    service_env,
    uvicorn_command,
    worker_command,
)


def up(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: $LAYERTRACER_DATA_DIR or ./data)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default keeps the service on this machine."),
    port: int = typer.Option(int(os.environ.get("LAYERTRACER_PORT", 8000)), help="Port of the API and dashboard."),
    queues: str = typer.Option(DEFAULT_QUEUES, help="Queues the worker takes jobs from."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Start no worker (jobs wait for one started elsewhere)."),
) -> None:
    """Start everything on one machine: migrations, a worker, the API and the dashboard on one port."""
    folder = data_dir_of(data_dir)
    service = LocalService(folder, host, port, queues=queues, worker=not no_worker)

    def on_term(_signum, _frame):  # SIGTERM to `up` stops the children like Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        service.start()
        base_url = service.url
        out.print(f"LayerTracer is running at {base_url}/  (API {base_url}/api/v1, docs {base_url}/docs)", highlight=False)
        err.print(f"data in {folder}; Ctrl-C stops it", highlight=False)
        while True:
            service.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping…", highlight=False)
        service.stop()
        err.print("stopped", highlight=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exec(command: list[str], env: dict[str, str]) -> None:
    """Become the child process (signals such as Ctrl-C then reach it directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)


def api(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: $LAYERTRACER_DATA_DIR or ./data)."),
    host: str = typer.Option(os.environ.get("LAYERTRACER_HOST", "127.0.0.1"), help="Address to bind."),
    port: int = typer.Option(int(os.environ.get("LAYERTRACER_PORT", 8000)), help="Port."),
) -> None:
    """Run the API alone (uvicorn; migrations at start). Jobs need `layertracer worker` somewhere."""
    folder = data_dir_of(data_dir)
    env = service_env(folder, host=host, port=port)
    preflight(env, migrate=False)  # the settings' own rules first (e.g. no public address without auth)
    if not port_free(host, port):
        fail(f"port {port} on {host} is already in use; stop what uses it or pick another with --port")
    _exec(uvicorn_command(API_APP, host, port, loglevel="info"), env)


def worker(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: $LAYERTRACER_DATA_DIR or ./data)."),
    queues: str = typer.Option(DEFAULT_QUEUES, help="Comma-separated queues: trace, train, train-multi "
                               "(trials that ask for several processes: give it to a worker with that many GPUs)."),
    name: Optional[str] = typer.Option(None, help="Worker node name (default: celery@HOST)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Run one worker process (one job at a time; start one per GPU)."""
    unknown = sorted(set(q.strip() for q in queues.split(",") if q.strip()) - set(ALL_QUEUES))
    if unknown or not queues.strip():
        fail(f"--queues takes {', '.join(ALL_QUEUES)} (one or more, comma-separated), not {queues!r}")
    folder = data_dir_of(data_dir)
    _exec(worker_command(queues, name=name, loglevel=loglevel), service_env(folder))


def dashboard(
    host: str = typer.Option("127.0.0.1", help="Address to bind; another address only when the API checks tokens."),
    port: int = typer.Option(8050, help="Port."),
    api_url: str = typer.Option(
        os.environ.get("LAYERTRACER_API_URL", "http://127.0.0.1:8000"), help="Where the dashboard finds the API."
    ),
) -> None:
    """Run the dashboard alone; it talks to the API at --api-url over HTTP."""
    from pydantic import ValidationError

    from backend.exposure import dashboard_exposure_problem, is_loopback_host
    from backend.settings import Settings, settings_problem

    if not is_loopback_host(host):
        try:
            override = Settings().insecure_expose_without_auth
        except ValidationError as exc:
            fail(settings_problem(exc))
        problem = dashboard_exposure_problem(api_url, api_auth_mode(api_url), override)
        if problem:
            fail(f"refusing to serve the dashboard on {host or 'every address'}: {problem}; "
                 "bind 127.0.0.1, or serve an API with LAYERTRACER_AUTH=token")
    if not port_free(host, port):
        fail(f"port {port} on {host} is already in use; stop what uses it or pick another with --port")
    env = dict(os.environ, LAYERTRACER_API_URL=api_url, PYTHONUNBUFFERED="1")
    _exec(uvicorn_command(DASHBOARD_APP, host, port, loglevel="info"), env)


def demo(
    quick: bool = typer.Option(False, "--quick", help="One seed, shorter training, fewer prompts."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data folder (default: $LAYERTRACER_DATA_DIR or ./data)."),
    port: int = typer.Option(int(os.environ.get("LAYERTRACER_PORT", 8000)), help="Port of the API and dashboard (127.0.0.1)."),
    exit_when_done: bool = typer.Option(False, "--exit", help="Stop the service when the experiment is done instead of serving the dashboard."),
) -> None:
    """The main job: demo model, trace, freeze plan and the train-shallow / full / train-deep experiment,
    through the embedded service; then the dashboard's URLs."""
    from layertracer.cli_trials import print_experiment_table

    started = time.monotonic()
    folder = data_dir_of(data_dir)
    model_dir, world = prepare_world(folder)
    # The demo's own bars show progress; the service's processes log to a file.
    log_file = folder / "logs" / "demo-service.log"
    service = LocalService(folder, "127.0.0.1", port, name="demo", loglevel="WARNING", log_file=log_file)

    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        service.start()
        err.print(f"service running at {service.url}/ (data in {folder}; its log: {log_file})", highlight=False)
        ids = run_demo(ApiClient(service.url, on_poll=service.supervise), model_dir, world, QUICK if quick else FULL)
        if ids["result"]:
            print_experiment_table(ids["result"])
        out.print(f"\ntrace:      {service.url}/traces/{ids['trace']}", highlight=False)
        out.print(f"experiment: {service.url}/experiments/{ids['experiment']}", highlight=False)
        out.print(f"report:     {service.url}/experiments/{ids['experiment']}/report", highlight=False)
        out.print(f"all runs:   {service.url}/", highlight=False)
        err.print(f"demo finished in {time.monotonic() - started:.0f} s", highlight=False)
        if exit_when_done:
            return
        err.print("serving the dashboard; Ctrl-C stops it", highlight=False)
        while True:
            service.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping…", highlight=False)
    finally:
        service.stop()
        signal.signal(signal.SIGTERM, previous)
