"""The Celery app of the workers: ``python -m celery -A worker.app worker -Q trace,train``.

Broker: Redis in served mode (``LAYERTRACER_BROKER_URL=redis://...``); in embedded mode Celery's
filesystem transport under ``<data_dir>/broker`` (no service at all). Both through the same code: the
settings shared with the API's sender (``backend.broker.celery_config``) plus the worker-only ones.

One job per worker process: solo pool (CUDA cannot be re-initialised in a forked child, and a GPU job
wants the whole device), prefetch 1 (a worker never holds a second message while it runs a long job),
late acks (a message is acknowledged when its task returned, so Redis re-delivers the job of a worker
that died). JSON messages only. The database, not Celery, keeps the job state: see ``worker.tasks``.

At worker start (``worker_init``): migrations, built-in task sets upserted into the database, and the
reaper thread (``worker.control.Reaper``) that re-queues jobs whose worker died.
"""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery, signals
from kombu import Exchange, Queue

from backend.broker import celery_config
from layertracer.spec.jobs import ALL_QUEUES
from backend.settings import Settings, get_settings

log = logging.getLogger("layertracer.worker")

QUEUES = ALL_QUEUES
TASK_ROUTES = {"inspect.run": {"queue": "trace"}, "trace.run": {"queue": "trace"}, "experiment.run": {"queue": "train"},
               "lens.run": {"queue": "trace"}}
# The filesystem transport polls its folder; 0.1 s keeps pick-up latency low at ~10 stat calls a second.
FILESYSTEM_POLL_SECONDS = 0.1

# Set by the worker_shutting_down signal: a running job stops between units of work (see worker.tasks).
shutting_down = threading.Event()


def worker_config(settings: Settings) -> dict:
    """The whole Celery configuration of a worker for ``settings`` (plain data, tested as such)."""
    config = celery_config(settings)
    embedded = settings.broker_url.startswith("filesystem")
    options = dict(config.get("broker_transport_options") or {})
    if embedded:
        options["polling_interval"] = FILESYSTEM_POLL_SECONDS
    config.update(
        broker_transport_options=options,
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        # The exchange and key a sender's send_task(queue=name) creates for a queue it does not know.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_routes=TASK_ROUTES,
        task_acks_late=True,
        # A job that raised is finished in the DB already; its message must not come back.
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        worker_max_tasks_per_child=None,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # The filesystem transport has no use for broadcast control messages (they would be files too).
        worker_enable_remote_control=not embedded,
        worker_send_task_events=False,
        include=["worker.tasks"],
    )
    return config


def make_app(settings: Settings | None = None) -> Celery:
    """A worker Celery app configured from ``settings`` (default: the environment's)."""
    settings = settings or get_settings()
    app = Celery("layertracer")
    config = worker_config(settings)
    include = config.pop("include")
    app.conf.update(config)
    app.conf.include = include
    return app


app = make_app()


@signals.worker_init.connect
def _on_worker_init(**_kwargs) -> None:
    """Migrations, built-in task sets and the reaper, before the worker takes its first message."""
    from worker.control import start_worker_services

    _limit_threads()
    start_worker_services(get_settings())


@signals.worker_shutting_down.connect
def _on_shutting_down(**_kwargs) -> None:
    # Ctrl-C / SIGTERM: the running job stops at its next progress event (a trial after a checkpoint);
    # its lease then lapses and the reaper gives it to the next worker, which resumes it.
    shutting_down.set()


def _limit_threads() -> None:
    """Honour OMP/MKL thread limits for torch too (tests and small machines set OMP_NUM_THREADS=1)."""
    threads = os.environ.get("LAYERTRACER_TORCH_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if threads:
        try:
            import torch

            torch.set_num_threads(max(1, int(threads)))
        except (ImportError, ValueError):
            pass
