"""Helpers shared by the routers: ORM rows -> response dicts, broker sends that never fail a request,
idempotency keys (``backend.api.resources`` has the fetch / page / submit helpers built on them)."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Optional

from fastapi import HTTPException
from sqlalchemy.orm import object_session

from backend import broker
from backend.db.models import Job, Model
from backend.db.types import utcnow
from backend.settings import Settings

log = logging.getLogger("layertracer.api")


def scoped_key(scope: str, key: Optional[str]) -> Optional[str]:
    """An idempotency key for ``jobs.idempotency_key``: the scope and the sha256 of the client's key
    (fixed length whatever the client sends; scopes keep a trace key from matching an experiment)."""
    if not key:
        return None
    return f"{scope}:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def reused_key_check(stored_spec: Any, new_spec: dict[str, Any]) -> None:
    """422 when an Idempotency-Key comes back with another request: the key names one request, so a
    different body under it is a client bug, never silently the first resource."""
    if json.loads(json.dumps(stored_spec, default=str)) != json.loads(json.dumps(new_spec, default=str)):
        raise HTTPException(422, "this Idempotency-Key was used before with another request body; "
                                 "use a new key for a new request")


def not_found(what: str, ident: str) -> HTTPException:
    return HTTPException(404, f"unknown {what} {ident!r}")


# Set per request on the database session (backend/api/deps.py): a running job whose last sign of
# life (heartbeat or progress, ``updated_at``) is older than this many seconds shows as "stalled".
STALE_AFTER_KEY = "stale_after_seconds"


def display_status(job: Job) -> str:
    """The job's status as the API shows it: ``stalled`` for a running job that has missed two
    heartbeats (its worker may be dead; the reaper re-queues it when its lease ends), else the stored one."""
    if job.status != "running":
        return job.status
    session = object_session(job)
    stale_after = session.info.get(STALE_AFTER_KEY) if session is not None else None
    last = job.updated_at or job.started_at
    if stale_after and last is not None and (utcnow() - last).total_seconds() > stale_after:
        return "stalled"
    return job.status


def job_brief(job: Optional[Job]) -> Optional[dict[str, Any]]:
    if job is None:
        return None
    return {"id": job.id, "status": display_status(job), "progress": job.progress, "error": job.error,
            "attempts": job.attempts}


def job_public(job: Job) -> dict[str, Any]:
    resource = {"kind": job.resource_kind, "id": job.resource_id} if job.resource_kind and job.resource_id else None
    return {
        "id": job.id, "kind": job.kind, "queue": job.queue, "status": display_status(job), "progress": job.progress,
        "attempts": job.attempts, "max_attempts": job.max_attempts, "cancel_requested": job.cancel_requested,
        "error": job.error, "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "resource": resource,
    }


def model_brief(model: Model) -> dict[str, Any]:
    return {"id": model.id, "source": model.source, "name": model.name, "fingerprint": model.fingerprint,
            "info": model.info}


def status_of(job: Optional[Job]) -> str:
    return display_status(job) if job is not None else "unknown"


def send(settings: Settings, job: Job) -> None:
    """Deliver a job id to the workers. A broker outage must not lose the job or fail the request: the
    job stays queued in the database and the workers' sweep re-sends stale queued jobs."""
    try:
        broker.send_job(job.id, job.kind, settings, queue=job.queue)
    except Exception as exc:  # noqa: BLE001 - any broker failure is logged, the DB row is the truth
        log.warning("could not send job %s to the broker (%s); it stays queued", job.id, exc)
