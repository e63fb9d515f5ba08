"""Send job ids to the workers through Celery, without importing any worker code.

The message is ``f"{kind}.run"`` with ``args=[job_id]`` (JSON only) on queue ``trace`` (kinds ``inspect``,
``trace``, ``lens``) or ``train`` (``experiment``). The worker reads everything else from the database.

Broker URLs (``settings.broker_url``):
- ``filesystem://`` (embedded): kombu's filesystem transport with an atomic publish
  (``backend.embedded_broker``) under ``<data_dir>/broker``. Sender and
  worker use the SAME folder for ``data_folder_in`` and ``data_folder_out`` (``<data_dir>/broker/queue``),
  processed messages go to ``<data_dir>/broker/processed``; ``broker_transport_options(settings)`` gives
  the dict both sides must use.
- ``redis://...`` (served).
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from celery import Celery

from backend.embedded_broker import TRANSPORT as EMBEDDED_TRANSPORT
from backend.jobs import queue_for
from backend.settings import Settings, get_settings

_lock = threading.Lock()
_clients: dict[tuple[str, str], Celery] = {}


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options for ``settings.broker_url``; for the embedded broker it also creates the folders.

    filesystem: ``{"data_folder_in": Q, "data_folder_out": Q, "processed_folder": P, "store_processed":
    False, "control_folder": C}`` with Q = <data_dir>/broker/queue, P = .../processed, C = .../control.
    redis: a visibility timeout longer than any heartbeat gap (the DB lease, not Redis, decides who runs).
    """
    if settings.broker_url.startswith("filesystem"):
        base = settings.broker_dir
        queue, processed, control = base / "queue", base / "processed", base / "control"
        for folder in (queue, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "store_processed": False,
            "control_folder": str(control),
        }
    if settings.broker_url.startswith(("redis", "rediss")):
        return {"visibility_timeout": 12 * 3600}
    return {}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings shared by this client and the worker app (JSON only, late acks, prefetch 1)."""
    return {
        "broker_url": settings.broker_url,
        # The embedded broker: the filesystem transport with an atomic publish (backend/embedded_broker.py).
        "broker_transport": EMBEDDED_TRANSPORT if settings.broker_url.startswith("filesystem") else None,
        "broker_transport_options": broker_transport_options(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": "trace",
    }


def get_client(settings: Optional[Settings] = None) -> Celery:
    """A cached light Celery client for ``settings`` (one per broker URL and data folder)."""
    settings = settings or get_settings()
    key = (settings.broker_url, str(settings.data_dir))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = Celery("layertracer-client", set_as_current=False)
            client.conf.update(celery_config(settings))
            _clients[key] = client
        return client


def send_job(job_id: str, kind: str, settings: Optional[Settings] = None, queue: Optional[str] = None) -> None:
    """Deliver ``job_id`` to the workers: ``send_task(f"{kind}.run", args=[job_id], queue=...)`` on the
    job's stored queue (``jobs.queue``; the kind's queue when not given)."""
    get_client(settings).send_task(f"{kind}.run", args=[job_id], queue=queue or queue_for(kind))
