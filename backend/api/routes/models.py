"""Models: register a local folder (under the model roots) or a hub id; an ``inspect`` job fills in
architecture, layers, block kinds and parameter counts."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import select

from backend.api.common import display_status, job_brief, scoped_key
from backend.api.resources import get_or_404, page, submit_with_resource
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.schemas import created_or_existing, ModelCreate, ModelPublic, ModelsPublic
from backend.db.models import Job, Model, new_id
from backend.security import PathError, confine_path
from layertracer.spec.jobs import InspectJobSpec
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
    # The source is the key: a concurrent registration of the same source returns the first one.
    return submit_with_resource(
        session, settings, response, kind="inspect", spec=InspectJobSpec(model_id=model_id).model_dump(), resource_kind="model",
        resource_id=model_id, key=scoped_key("model", source), same_request=False,
        build=lambda job_id: Model(id=model_id, source=source, source_kind=source_kind,
                                   name=(body.name or default_name)[:200], trust_remote_code=body.trust_remote_code,
                                   job_id=job_id),
        find=lambda ident: session.get(Model, ident), public=model_public,
    )


@router.get("", response_model=ModelsPublic)
def list_models(session: SessionDep, paging: PagingDep):
    """Registered models, newest first (filters: status of the inspect job, q in name or source)."""
    rows, count = page(session, select(Model).outerjoin(Job, Model.job_id == Job.id), paging,
                       order=(Model.created_at.desc(), Model.id), status_column=Job.status,
                       search=(Model.name, Model.source))
    return {"data": [model_public(m) for m in rows], "count": count}


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(model_id: str, session: SessionDep):
    """One model with its inspection (info: architecture, num_layers, block_kinds, parameters)."""
    return model_public(get_or_404(session, Model, model_id, "model"))
