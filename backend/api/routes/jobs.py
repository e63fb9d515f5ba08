"""Jobs: status, progress (percent, stage, ETA), log tail, cancel, retry."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from backend import jobs
from backend.api.common import job_public, not_found, send
from backend.api.resources import page
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.schemas import JobLog, JobPublic, JobsPublic
from backend.db.models import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


def _job_or_404(session, job_id: str) -> Job:
    job = jobs.get_job(session, job_id)  # as stored now: a worker may have changed it this instant
    if job is None:
        raise not_found("job", job_id)
    return job


@router.get("", response_model=JobsPublic)
def list_jobs(session: SessionDep, paging: PagingDep,
              kind: Annotated[Optional[str], Query(max_length=20)] = None):
    """Jobs, newest first (filters: status, kind)."""
    query = select(Job).where(Job.kind == kind) if kind else select(Job)
    rows, count = page(session, query, paging, order=(Job.created_at.desc(), Job.id), status_column=Job.status)
    return {"data": [job_public(j) for j in rows], "count": count}


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, session: SessionDep):
    """One job: status, progress {stage, done, total, percent, eta_seconds}, attempts, error, resource."""
    return job_public(_job_or_404(session, job_id))


@router.get("/{job_id}/log", response_model=JobLog)
def get_log(job_id: str, session: SessionDep, tail: Annotated[int, Query(ge=1, le=10_000)] = 200):
    """The last ``tail`` lines of the job's log."""
    job = _job_or_404(session, job_id)
    lines = (job.log or "").splitlines()[-tail:]
    return {"id": job.id, "status": job.status, "lines": lines, "text": "\n".join(lines)}


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: str, session: SessionDep):
    """Cancel: a queued job at once, a running one at its worker's next heartbeat."""
    job = jobs.request_cancel(session, job_id=job_id)
    return job_public(job if job is not None else _job_or_404(session, job_id))


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry(job_id: str, session: SessionDep, settings: SettingsDep):
    """Queue a failed or cancelled job again (attempts reset)."""
    job = jobs.retry_job(session, job_id=job_id)
    if job is None:
        current = _job_or_404(session, job_id)
        raise HTTPException(409, f"job {job_id!r} is {current.status}; only failed or cancelled jobs can be retried")
    send(settings, job)
    return job_public(job)
