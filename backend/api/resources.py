"""The routers' service layer: one way to fetch a row or answer 404, to page a listing, and to submit
a job together with the resource it fills (trace, experiment, model), idempotently.

Each takes the request's session; none commits anything but what it creates.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, TypeVar

from fastapi import HTTPException, Response
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from backend import jobs
from backend.api.common import not_found, reused_key_check, scoped_key, send
from backend.api.deps import Paging
from backend.settings import Settings

Row = TypeVar("Row")


def get_or_404(session: Session, table: type[Row], ident: str, what: str) -> Row:
    """The row of ``table`` with primary key ``ident``, or 404 ``unknown <what> '<ident>'``."""
    row = session.get(table, ident)
    if row is None:
        raise not_found(what, ident)
    return row


def page(session: Session, query: Select, paging: Paging, *, order: Iterable[Any], status_column: Any = None,
         search: Iterable[Any] = ()) -> tuple[list[Any], int]:
    """(this page of ``query``'s rows, the count of all of them) under ``paging``: its ``status`` filter
    on ``status_column`` (a job's status), its ``q`` as a case-insensitive substring of any of the
    ``search`` columns, then ``order``, ``limit`` and ``offset``."""
    if paging.status and status_column is not None:
        query = query.where(status_column == paging.status)
    search = list(search)
    if paging.q and search:
        like = f"%{paging.q}%"
        query = query.where(or_(*(column.ilike(like) for column in search)))
    count = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(*order).limit(paging.limit).offset(paging.offset)).unique().scalars().all()
    return list(rows), count


def submit_with_resource(
    session: Session,
    settings: Settings,
    response: Response,
    *,
    kind: str,
    spec: dict[str, Any],
    resource_kind: str,
    resource_id: str,
    key: Optional[str],
    build: Callable[[str], Any],
    find: Callable[[str], Optional[Any]],
    public: Callable[[Any], dict],
    same_request: bool = True,
) -> dict:
    """Queue a ``kind`` job with ``spec`` and create its resource (``build(job_id)``, a new row with id
    ``resource_id``) in one transaction, then send the job to the workers; returns ``public(row)``.

    ``key`` (an Idempotency-Key, already scoped) seen before: nothing is created, and the resource of
    that first request is returned with status 200 (``find(id)``; 409 while it is still being
    created). With ``same_request``, a key reused with another spec is the client's bug: 422.
    """
    job = jobs.submit_job(session, kind=kind, spec=spec, idempotency_key=key, resource_kind=resource_kind,
                          resource_id=resource_id, max_attempts=settings.max_attempts, commit=False)
    if job.resource_id != resource_id:
        stored_spec, existing_id = job.spec, job.resource_id
        session.rollback()
        if same_request:
            reused_key_check(stored_spec, spec)
        existing = find(existing_id)
        if existing is None:
            raise HTTPException(409, f"this {resource_kind} is being created by another request; try again")
        response.status_code = 200
        return public(existing)
    session.add(build(job.id))
    session.commit()
    send(settings, job)
    return public(find(resource_id))


__all__ = ["get_or_404", "page", "scoped_key", "submit_with_resource"]


def apply_update(row: Any, body: Any) -> None:
    """A PATCH's fields onto a trace or experiment row: only those the request named (``name: null``
    clears the name; tags and notes null mean "no change" for tags, "none" for notes)."""
    given = body.model_fields_set
    if "name" in given:
        row.name = (body.name or "").strip() or None
    if "tags" in given and body.tags is not None:
        row.tags = list(body.tags)
    if "notes" in given:
        row.notes = (body.notes or "").strip() or None
