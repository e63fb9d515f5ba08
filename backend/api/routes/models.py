"""Models: register a local folder (under the model roots) or a hub id; an ``inspect`` job fills in
architecture, layers, block kinds and parameter counts."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import func, or_, select

from backend import jobs
from backend.api.common import display_status, scoped_key, get_model_or_404, job_brief, send
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.schemas import created_or_existing, ModelCreate, ModelPublic, ModelsPublic
from backend.db.models import Job, Model, new_id
from backend.security import PathError, confine_path
from layertracer.spec.sources import ModelSourceError, is_path_like, parse_model_source

router = APIRouter(prefix="/models", tags=["models"])


def refuse_remote_code(settings, principal) -> None:
    """403 unless this server lets a model folder's own code run and the caller may ask for it (an admin
    token in token mode; the machine's own user in local mode, which answers loopback only)."""
    if not settings.allow_remote_code:
        raise HTTPException(403, "this server does not run a model folder's own code (trust_remote_code): "
                                 "its LAYERTRACER_ALLOW_REMOTE_CODE setting is off")
    if principal not in ("admin", "local"):
        raise HTTPException(403, "only an admin token may register a model with trust_remote_code "
                                 "(python -m backend.admin create-token NAME --admin)")


def model_public(model: Model) -> dict:
    return {
        "id": model.id, "source": model.source, "source_kind": model.source_kind, "name": model.name,
        "trust_remote_code": model.trust_remote_code, "fingerprint": model.fingerprint, "info": model.info,
        "status": display_status(model.job) if model.job else None, "job": job_brief(model.job),
        "created_at": model.created_at,
    }


@router.post("", response_model=ModelPublic, status_code=201, responses=created_or_existing(ModelPublic, "model"))
def create_model(body: ModelCreate, session: SessionDep, settings: SettingsDep, request: Request, response: Response):
    """Register a model source and queue its inspection (the same source again returns the existing one).
    ``trust_remote_code`` needs the server's LAYERTRACER_ALLOW_REMOTE_CODE and, in token mode, an admin token."""
    if body.trust_remote_code:
        refuse_remote_code(settings, getattr(request.state, "principal", None))
    source = body.source.strip()
    # The engine's one model-source rule: an existing folder (confined to the model roots, checked
    # before anything else so that nothing outside them is probed) or a hub id with its revision.
    try:
        parsed = None if is_path_like(source) else parse_model_source(source, roots=settings.model_roots)
    except ModelSourceError as exc:
        raise HTTPException(422, str(exc)) from None
    if parsed is None or parsed.is_local:
        try:
            folder = confine_path(source, settings.model_roots, "model path", kind="dir")
        except PathError as exc:
            raise HTTPException(400, str(exc)) from None
        source, source_kind, default_name = str(folder), "local", folder.name
        if len(source) > 1000:
            raise HTTPException(422, "the model folder's path is longer than 1000 characters")
    else:
        source, source_kind, default_name = str(parsed), "hub", parsed.location.rsplit("/", 1)[-1]
    existing = session.execute(select(Model).where(Model.source == source)).scalar_one_or_none()
    if existing is not None:
        response.status_code = 200
        return model_public(existing)
    model_id = new_id()
    job = jobs.submit_job(
        session, kind="inspect", spec={"model_id": model_id}, idempotency_key=scoped_key("model", source),
        resource_kind="model", resource_id=model_id, max_attempts=settings.max_attempts, commit=False,
    )
    if job.resource_id != model_id:  # a concurrent request registered the same source first
        session.rollback()
        existing = session.execute(select(Model).where(Model.source == source)).scalar_one_or_none()
        if existing is None:
            raise HTTPException(409, "the model is being registered by another request; try again")
        response.status_code = 200
        return model_public(existing)
    model = Model(id=model_id, source=source, source_kind=source_kind, name=(body.name or default_name)[:200],
                  trust_remote_code=body.trust_remote_code, job_id=job.id)
    session.add(model)
    session.commit()
    send(settings, job)
    session.refresh(model)
    return model_public(model)


@router.get("", response_model=ModelsPublic)
def list_models(session: SessionDep, paging: PagingDep):
    """Registered models, newest first (filters: status of the inspect job, q in name or source)."""
    query = select(Model).outerjoin(Job, Model.job_id == Job.id)
    if paging.status:
        query = query.where(Job.status == paging.status)
    if paging.q:
        like = f"%{paging.q}%"
        query = query.where(or_(Model.name.ilike(like), Model.source.ilike(like)))
    count = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(Model.created_at.desc(), Model.id).limit(paging.limit).offset(paging.offset)).unique().scalars()
    return {"data": [model_public(m) for m in rows], "count": count}


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(model_id: str, session: SessionDep):
    """One model with its inspection (info: architecture, num_layers, block_kinds, parameters)."""
    return model_public(get_model_or_404(session, model_id))
