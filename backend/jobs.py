"""Job state as plain functions over a session. The database is the source of truth; the broker only
delivers job ids.

States: ``queued -> running -> succeeded | failed | cancelled``.

Every state change is ONE ``UPDATE ... WHERE <expected state>`` statement whose row count says whether
it happened, so two workers, two API processes or a worker and the reaper can race on the same job on
Postgres (row locks, READ COMMITTED re-checks the WHERE) and on SQLite (one writer at a time) without a
lost update. Each function commits its own change (``submit_job`` can leave the commit to the caller so a
job and the row it fills are created in one transaction). Times are UTC; leases are in seconds.

Worker loop (see worker/)::

    job = claim_job(s, job_id=..., worker_id=w, lease_seconds=settings.lease_seconds)
    if job is None: return                       # someone else holds it, or it is finished/cancelled
    ... every settings.heartbeat_seconds:
        if heartbeat(s, job_id=..., worker_id=w, progress={...}, log="line\\n"): stop   # cancel or lease lost
    finish_job(s, job_id=..., worker_id=w, status="succeeded" | "failed" | "cancelled", error=None | "why")
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Optional

from sqlalchemy import String, and_, cast, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from backend.db.models import JOB_KINDS, TERMINAL_STATES, Job, new_id
from backend.db.types import utcnow
from layertracer.spec.jobs import MULTI_PROCESS_QUEUE

QUEUES = {"inspect": "trace", "trace": "trace", "experiment": "train", "lens": "trace"}
DEFAULT_LOG_TAIL = 64 * 1024


class JobError(ValueError):
    """A job function was called with something it cannot do (unknown kind, bad status)."""


def queue_for(kind: str, spec: Optional[dict[str, Any]] = None) -> str:
    """The Celery queue of a job: ``inspect``/``trace``/``lens`` -> ``trace``, ``experiment`` -> ``train``, or
    ``train-multi`` when its spec asks for several processes (only a worker with that many GPUs can
    run it). A job keeps its queue in ``jobs.queue``; every re-send uses that."""
    try:
        queue = QUEUES[kind]
    except KeyError:
        raise JobError(f"unknown job kind {kind!r} (one of {', '.join(JOB_KINDS)})") from None
    processes = (spec or {}).get("processes") or 1
    return MULTI_PROCESS_QUEUE if kind == "experiment" and isinstance(processes, int) and processes > 1 else queue


def _insert_ignoring_conflict(session: Session, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(Job).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(Job).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    else:  # pragma: no cover - only SQLite and Postgres are supported
        stmt = insert(Job).values(**values)
    session.execute(stmt)


def submit_job(
    session: Session,
    *,
    kind: str,
    spec: dict[str, Any],
    idempotency_key: Optional[str] = None,
    resource_kind: Optional[str] = None,
    resource_id: Optional[str] = None,
    max_attempts: int = 3,
    commit: bool = True,
) -> Job:
    """Queue a job; with an ``idempotency_key`` already used, return that job unchanged instead.

    Concurrent submissions with the same key all get the same job (INSERT ... ON CONFLICT DO NOTHING,
    then a read). ``spec`` is plain JSON the worker reads (see backend/api for each kind's shape).
    ``commit=False`` leaves the transaction open so the caller can add the job's resource row first; then
    compare ``job.resource_id`` with the id you passed to know whether the job is new.
    """
    queue = queue_for(kind, spec)
    now = utcnow()
    values = dict(
        id=new_id(), kind=kind, queue=queue, status="queued", spec=spec, idempotency_key=idempotency_key,
        resource_kind=resource_kind, resource_id=resource_id, attempts=0, max_attempts=max_attempts,
        cancel_requested=False, log="", created_at=now, updated_at=now,
    )
    if idempotency_key is None:
        job = Job(**values)
        session.add(job)
        session.flush()
    else:
        _insert_ignoring_conflict(session, values)
        job = session.execute(
            select(Job).where(Job.idempotency_key == idempotency_key).execution_options(populate_existing=True)
        ).scalar_one()
    if commit:
        session.commit()
    return job


def get_job(session: Session, job_id: str) -> Optional[Job]:
    """The job as stored now (bypasses the session's identity map)."""
    return session.execute(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).scalar_one_or_none()


def claim_job(session: Session, *, job_id: str, worker_id: str, lease_seconds: float) -> Optional[Job]:
    """Take the job for ``worker_id``: one atomic UPDATE that succeeds only if the job is queued, or
    running with an expired lease, not cancel-requested and below its attempt cap. Bumps ``attempts``,
    sets the lease to now + ``lease_seconds``. Returns the claimed job, or None (another worker won, the
    job is finished/cancelled, or it is unknown)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            Job.attempts < Job.max_attempts,
            or_(Job.status == "queued", and_(Job.status == "running", Job.lease_expires_at < now)),
        )
        .values(
            status="running",
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, now),
            finished_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return get_job(session, job_id)


def _append_log(session: Session, text: str, limit: int):
    # Keep only the tail: SQLite's substr takes a negative start, Postgres has right().
    joined = func.coalesce(Job.log, "") + literal(text)
    if session.get_bind().dialect.name == "postgresql":
        return func.right(joined, limit)
    return func.substr(joined, -limit)


def heartbeat(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    progress: Optional[dict[str, Any]] = None,
    log: Optional[str] = None,
    lease_seconds: float = 60,
    log_limit: int = DEFAULT_LOG_TAIL,
) -> bool:
    """Extend the lease of a running job this worker holds; store ``progress`` (replaces it:
    ``{"stage": str, "done": int, "total": int, "percent": float 0-100, "eta_seconds": float|None}``)
    and append ``log`` (text, keep your own newlines) to the log tail.

    Returns True when the worker must STOP: a cancel was requested (finish with status "cancelled"), or
    the lease is no longer this worker's (reaped and re-queued, or claimed by another worker; then
    ``finish_job`` is a no-op returning False). Returns False to carry on.
    """
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "updated_at": now}
    if progress is not None:
        values["progress"] = progress
    if log:
        values["log"] = _append_log(session, log, log_limit)
    cancel = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(**values)
        .returning(Job.cancel_requested)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    session.commit()
    if cancel is None:  # no row: the lease is not ours any more
        return True
    return bool(cancel)


def lease_held(session: Session, *, job_id: str, worker_id: str) -> bool:
    """Whether ``worker_id`` still holds the running job (to tell a cancel from a lost lease)."""
    row = session.execute(select(Job.status, Job.worker_id).where(Job.id == job_id)).one_or_none()
    return row is not None and row.status == "running" and row.worker_id == worker_id


def finish_job(
    session: Session, *, job_id: str, worker_id: str, status: str, error: Optional[str] = None,
    result: Optional[dict[str, Any]] = None,
) -> bool:
    """End a running job this worker holds with ``status`` succeeded | failed | cancelled (``error``: one
    line for failed; ``result``: the outcome of a job that fills no row, a ``lens`` job's, stored on the
    job in the same statement). Returns False (and changes nothing) if the lease is no longer this worker's."""
    if status not in TERMINAL_STATES:
        raise JobError(f"finish_job: status must be one of {', '.join(TERMINAL_STATES)}, not {status!r}")
    now = utcnow()
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(status=status, error=error, finished_at=now, updated_at=now, lease_expires_at=None,
                **({"result": result} if result is not None else {}))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return done.rowcount == 1


def request_cancel(session: Session, *, job_id: str) -> Optional[Job]:
    """Cancel a job: a queued job becomes ``cancelled`` at once (no worker will claim it); a running
    job gets ``cancel_requested`` and its worker's next heartbeat returns True. Finished jobs are left as
    they are. Returns the job as it is now, or None if unknown."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now, error="cancelled")
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return get_job(session, job_id)


def retry_job(session: Session, *, job_id: str) -> Optional[Job]:
    """Put a failed or cancelled job back in the queue with its attempts reset. Returns the queued job
    (the caller re-sends it through the broker), or None if the job is unknown or not failed/cancelled."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("failed", "cancelled")))
        .values(
            status="queued", attempts=0, error=None, cancel_requested=False, worker_id=None,
            lease_expires_at=None, finished_at=None, progress=None, updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return get_job(session, job_id)


def reap_expired(session: Session, *, now: Optional[datetime] = None) -> list[str]:
    """Handle running jobs whose lease expired before ``now`` (their worker died or stalled):

    - cancel requested -> ``cancelled``;
    - ``attempts >= max_attempts`` -> ``failed`` with the reason in ``error``;
    - otherwise -> back to ``queued`` (lease cleared).

    Returns the ids put back in the queue; the caller re-sends them (``backend.broker.send_job``). Safe
    to run from several workers at once: each row changes in exactly one UPDATE.
    """
    now = now or utcnow()
    expired = and_(Job.status == "running", Job.lease_expires_at < now)
    common = dict(worker_id=None, lease_expires_at=None, updated_at=now)
    session.execute(
        update(Job)
        .where(expired, Job.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=now, error="cancelled (the worker stopped responding)", **common)
        .execution_options(synchronize_session=False)
    )
    reason = (
        literal("lease expired on attempt ")
        + cast(Job.attempts, String)
        + literal(" of ")
        + cast(Job.max_attempts, String)
        + literal(": the worker died or stopped responding; giving up")
    )
    session.execute(
        update(Job)
        .where(expired, Job.cancel_requested.is_(False), Job.attempts >= Job.max_attempts)
        .values(
            status="failed", finished_at=now,
            error=reason, **common,
        )
        .execution_options(synchronize_session=False)
    )
    requeued = session.execute(
        update(Job)
        .where(expired, Job.cancel_requested.is_(False), Job.attempts < Job.max_attempts)
        .values(status="queued", **common)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ).scalars().all()
    session.commit()
    return list(requeued)


def stale_queued(session: Session, *, older_than_seconds: float, now: Optional[datetime] = None) -> list[str]:
    """Ids of jobs queued for longer than ``older_than_seconds`` without a claim (a lost broker message,
    e.g. Redis restarted). Re-sending is safe: ``claim_job`` lets only one delivery run the job."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than_seconds)
    return list(
        session.execute(select(Job.id).where(Job.status == "queued", Job.updated_at < cutoff)).scalars().all()
    )
