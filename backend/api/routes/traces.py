"""Traces: create (model, task sets, perturbations, options) and read the results: summary, the engine
JSON, its overview and one task of it, the per-position view, the freeze plan, CSV; the live logit lens
of any prompt on the trace's model (a short ``lens`` job); the runs launched from the trace."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import __version__, jobs, tasksets
from backend.api.common import job_brief, job_public, model_brief, not_found, scoped_key, send, status_of
from backend.api.resources import apply_update, get_or_404, submit_with_resource
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.run_lists import TraceFiltersDep, run_list_page
from backend.api.tuned_lens import require_tuned_lens
from backend.api.schemas import created_or_existing, JobPublic, RunUpdate, TraceCreate, TracePublic, TracesPublic
from backend.db.models import Experiment, Job, Model, Trace, TracePart, TraceResultRow, new_id
from backend.results import ensure_trace_parts, task_part
from layertracer.spec.jobs import LensJobSpec, LensRequest, TraceJobSpec
from layertracer.spec.views import layer_table

router = APIRouter(prefix="/traces", tags=["traces"])

def trace_public(trace: Trace) -> dict:
    return {
        "id": trace.id, "name": trace.name, "tags": list(trace.tags or []), "notes": trace.notes,
        "status": status_of(trace.job), "job": job_brief(trace.job),
        "model": model_brief(trace.model), "spec": trace.spec, "created_at": trace.created_at,
        "finished_at": trace.finished_at, "summary": trace.summary,
        "partial": trace.partial if trace.summary is None else None, "provenance": trace.provenance,
    }


def _trace_or_404(session: Session, trace_id: str) -> Trace:
    return get_or_404(session, Trace, trace_id, "trace")


def _finished_or_409(trace: Trace) -> dict:
    if trace.summary is None:
        raise HTTPException(409, f"trace {trace.id!r} has no result yet (status: {status_of(trace.job)})")
    return trace.summary


def _resolve_task_sets(session: Session, refs: list[str]) -> tuple[list[str], list[str]]:
    """(names for the worker, task names they yield); 404 for an unknown set."""
    names, task_names = [], []
    for ref in refs:
        if ref == "all":
            names.append("all")
            task_names.extend(tasksets.BUILTIN_TASK_NAMES)
            continue
        row = tasksets.find_task_set(session, ref)
        if row is not None:
            names.append(row.name)
            task_names.extend(row.tasks or [row.name])
        elif ref in tasksets.BUILTIN_TASK_NAMES:
            names.append(ref)
            task_names.append(ref)
        else:
            raise HTTPException(404, f"unknown task set {ref!r}")
    duplicates = sorted({t for t in task_names if task_names.count(t) > 1})
    if duplicates:
        raise HTTPException(422, f"task given twice: {', '.join(duplicates)}")
    return names, task_names


@router.post("", response_model=TracePublic, status_code=201, responses=created_or_existing(TracePublic, "trace"))
def create_trace(
    body: TraceCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[Optional[str], Header(max_length=200)] = None,
):
    """Queue a trace; with an Idempotency-Key header seen before, return that trace instead (200)."""
    model = get_or_404(session, Model, body.model_id, "model")
    names, task_names = _resolve_task_sets(session, body.task_sets)
    options = body.options.model_dump()
    if options["lens"] == "tuned":
        require_tuned_lens(settings, model)
    if options["position_task"] is not None and options["position_task"] not in task_names:
        raise HTTPException(422, f"position_task {options['position_task']!r} is not one of the traced tasks")
    limit, shots = options.pop("limit"), options.pop("shots")
    if options["position_task"] is None:
        options.pop("position_task")
    job_spec = TraceJobSpec(model_id=model.id, tasks=names, perturbations=body.perturbations, options=options,
                            limit=limit, shots=shots, placement=body.placement).model_dump()
    spec = body.model_dump()
    trace_id = new_id()
    # Provenance known at submission; store_trace_result replaces it with the engine's own record.
    provenance = {"code_version": __version__, "model_source": model.source, "model_fingerprint": model.fingerprint,
                  "seeds": [body.options.seed], "spec": spec}
    return submit_with_resource(
        session, settings, response, kind="trace", spec=job_spec, resource_kind="trace", resource_id=trace_id,
        key=scoped_key("trace", idempotency_key),
        build=lambda job_id: Trace(id=trace_id, model_id=model.id, job_id=job_id, name=body.name, spec=spec,
                                   provenance=provenance),
        find=lambda ident: session.get(Trace, ident), public=trace_public,
    )


@router.get("", response_model=TracesPublic)
def list_traces(session: SessionDep, paging: PagingDep, filters: TraceFiltersDep):
    """Traces, newest first or by ``sort``; filters: status, q (name, model, tags), model, tag
    (backend/api/run_lists.py)."""
    rows, count = run_list_page(session, Trace, paging, filters)
    data = [{
        "id": t.id, "name": t.name, "tags": list(t.tags or []), "status": status_of(t.job), "model": model_brief(t.model),
        "tasks": (t.summary or {}).get("tasks") or list(t.spec.get("task_sets") or []),
        "vulnerable_layer": t.vulnerable_layer, "plan": t.plan, "plan_share": t.plan_share,
        "created_at": t.created_at, "finished_at": t.finished_at, "job_id": t.job_id, "job": job_brief(t.job),
    } for t in rows]
    return {"data": data, "count": count}


@router.get("/{trace_id}", response_model=TracePublic)
def get_trace(trace_id: str, session: SessionDep):
    """Status, job progress, model, spec, summary (particles, vulnerable layer, freeze plan), provenance."""
    return trace_public(_trace_or_404(session, trace_id))


@router.patch("/{trace_id}", response_model=TracePublic)
def update_trace(trace_id: str, body: RunUpdate, session: SessionDep):
    """Rename a trace, set its tags or notes (the fields given; a write: an API token)."""
    trace = _trace_or_404(session, trace_id)
    apply_update(trace, body)
    session.commit()
    return trace_public(trace)


def _result_bytes(request: Request, session: Session, trace_id: str) -> tuple[bytes, str]:
    """(the stored result as UTF-8 bytes, its sha256), through the app's cache; 404 / 409 otherwise."""
    row = session.execute(
        select(Trace.result_sha256, Job.status).outerjoin(Job, Trace.job_id == Job.id).where(Trace.id == trace_id)
    ).one_or_none()
    if row is None:
        raise not_found("trace", trace_id)
    if row.result_sha256 is None:
        raise HTTPException(409, f"trace {trace_id!r} has no result yet (status: {row.status or 'unknown'})")
    cache = request.app.state.result_cache
    body = cache.get(trace_id, row.result_sha256)
    if body is None:
        stored = session.execute(
            select(TraceResultRow.body, TraceResultRow.sha256).where(TraceResultRow.trace_id == trace_id)
        ).one_or_none()
        if stored is None:  # removed between the two queries
            raise HTTPException(409, f"trace {trace_id!r} has no result yet")
        text, sha = stored
        body = text.encode("utf-8")
        cache.put(trace_id, sha, body)
        return body, sha
    return body, row.result_sha256


def _json_bytes_response(request: Request, body: bytes, sha: str, headers: Optional[dict] = None) -> Response:
    etag = f'"{sha}"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    return Response(content=body, media_type="application/json", headers={"ETag": etag, **(headers or {})})


@router.get("/{trace_id}/result", responses={200: {"content": {"application/json": {}},
                                                   "description": "the engine's TraceResult JSON (README schema)"}})
def get_result(trace_id: str, session: SessionDep, request: Request):
    """The engine's TraceResult JSON exactly as stored (README "OUT.json" schema); ETag / If-None-Match."""
    # Served as stored bytes: re-encoding tens of MB of JSON per request would dominate the latency.
    body, sha = _result_bytes(request, session, trace_id)
    return _json_bytes_response(request, body, sha)


@router.get("/{trace_id}/export.json", responses={200: {"content": {"application/json": {}}}})
def export_json(trace_id: str, session: SessionDep, request: Request):
    """The engine's TraceResult JSON as a download."""
    body, sha = _result_bytes(request, session, trace_id)
    return _json_bytes_response(request, body, sha,
                                {"Content-Disposition": f'attachment; filename="trace-{trace_id}.json"'})


def _part_bytes(request: Request, session: Session, trace_id: str, part: str, missing: str) -> tuple[bytes, str]:
    """(a stored part of the trace's result as UTF-8 bytes, its sha256), deriving the parts of a trace
    stored before they existed; 404 with ``missing`` when the finished trace has no such part."""

    def sha_of() -> Optional[str]:
        return session.execute(select(TracePart.sha256).where(TracePart.trace_id == trace_id, TracePart.part == part)
                               ).scalar_one_or_none()

    sha = sha_of()
    if sha is None:
        _finished_or_409(_trace_or_404(session, trace_id))
        if not ensure_trace_parts(session, trace_id):
            raise HTTPException(409, f"trace {trace_id!r} has no result yet")
        sha = sha_of()
        if sha is None:
            raise HTTPException(404, missing)
    cache = request.app.state.result_cache
    key = f"{trace_id}/{part}"
    body = cache.get(key, sha)
    if body is None:
        text = session.execute(select(TracePart.body).where(TracePart.trace_id == trace_id, TracePart.part == part)
                               ).scalar_one_or_none()
        if text is None:  # replaced between the two queries
            raise HTTPException(409, f"trace {trace_id!r} is being stored again; try again")
        body = text.encode("utf-8")
        cache.put(key, sha, body)
    return body, sha


@router.get("/{trace_id}/overview", responses={200: {"content": {"application/json": {}},
                                                     "description": "the result without per-prompt arrays"}})
def get_overview(trace_id: str, session: SessionDep, request: Request):
    """The result without what grows with the prompts (docs/schemas.md, "The trace overview"): model,
    options, per-task mean curves (prob, rank, entropy), particles and top-1 tokens, stability curves,
    similarity, position view, freeze plan. A few hundred kB where the result can be tens of MB; ETag."""
    body, sha = _part_bytes(request, session, trace_id, "overview", f"trace {trace_id!r} has no overview")
    return _json_bytes_response(request, body, sha)


@router.get("/{trace_id}/tasks/{task}", responses={200: {"content": {"application/json": {}},
                                                         "description": "one task of the result, as stored"}})
def get_task(trace_id: str, task: str, session: SessionDep, request: Request):
    """One task's object exactly as in the result: prompts, targets, every [P][L] array and the top-k
    tokens (docs/schemas.md, the task table); ETag."""
    body, sha = _part_bytes(request, session, trace_id, task_part(task), f"trace {trace_id!r} has no task {task!r}")
    return _json_bytes_response(request, body, sha)


@router.get("/{trace_id}/position")
def position_view(trace_id: str, session: SessionDep) -> Optional[dict]:
    """The per-position view (one prompt: target probability and top-1 token per layer x position), or null."""
    trace = _trace_or_404(session, trace_id)
    _finished_or_409(trace)
    return trace.position_view


@router.get("/{trace_id}/freeze-plan")
def freeze_plan(trace_id: str, session: SessionDep) -> dict:
    """The freeze plan: train/freeze layers and ranges, boundary, rule, evidence and reasons."""
    summary = _finished_or_409(_trace_or_404(session, trace_id))
    return summary.get("freeze_plan") or {}


@router.get("/{trace_id}/export.csv", responses={200: {"content": {"text/csv": {}}}})
def export_csv(trace_id: str, session: SessionDep, request: Request):
    """One row per task x layer: mean prob, rank, entropy, whether it is the particle, primary mean JS
    (``layertracer.spec.views.layer_table`` over the stored overview)."""
    body, _ = _part_bytes(request, session, trace_id, "overview", f"trace {trace_id!r} has no overview")
    header, rows = layer_table(json.loads(body))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for task, layer, depth, *numbers, is_particle, js in rows:
        writer.writerow([task, layer, f"{depth:.6g}", *map(_num, numbers), is_particle, _num(js)])
    return Response(content=out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="trace-{trace_id}.csv"'})


def _num(value) -> str:
    return "" if value is None else repr(float(value))


# -- the live logit lens ------------------------------------------------------------------------------
class LensCreate(LensRequest):
    """A prompt (and optional target) for the live lens; ``model_id``: a registered model to read it with
    instead of the trace's own (default)."""

    model_id: Optional[str] = Field(default=None, min_length=1, max_length=64)


class LensPublic(BaseModel):
    """A live-lens job and, once it has succeeded, its result (``layertracer.live_lens.live_lens``'s dict:
    tokens [T], target_prob / top1_probs / top1_tokens [L][T], target_token, model)."""

    job: JobPublic
    trace_id: str
    result: Optional[dict[str, Any]] = None


def _lens_public(job: Job) -> dict:
    return {"job": job_public(job), "trace_id": job.resource_id,
            "result": job.result if job.status == "succeeded" else None}


@router.post("/{trace_id}/lens", response_model=LensPublic, status_code=202)
def submit_lens(trace_id: str, body: LensCreate, session: SessionDep, settings: SettingsDep):
    """Queue the live logit lens of one prompt (layer x position: the top-1 token and its probability,
    the target's probability) on the trace's model or another registered one: a short job on the trace
    queue, polled at ``GET /traces/{id}/lens/{job_id}``. A write (an API token); the prompt's limits are
    ``layertracer.spec.jobs``'s (characters here, tokens in the worker)."""
    trace = _trace_or_404(session, trace_id)
    model = get_or_404(session, Model, body.model_id, "model") if body.model_id else trace.model
    spec = LensJobSpec(model_id=model.id, prompt=body.prompt, target=body.target, lens=body.lens).model_dump()
    # A person waits for it: one attempt (a failure is shown at once, not retried behind their back).
    job = jobs.submit_job(session, kind="lens", spec=spec, resource_kind="trace", resource_id=trace.id, max_attempts=1)
    send(settings, job)
    return _lens_public(job)


@router.get("/{trace_id}/lens/{job_id}", response_model=LensPublic)
def get_lens(trace_id: str, job_id: str, session: SessionDep):
    """A live-lens job of this trace: its status and progress, and its result once it has succeeded."""
    job = jobs.get_job(session, job_id)
    if job is None or job.kind != "lens" or job.resource_id != trace_id:
        raise not_found("lens job", job_id)
    return _lens_public(job)


# -- lineage ----------------------------------------------------------------------------------------------
@router.get("/{trace_id}/runs")
def trace_runs(trace_id: str, session: SessionDep) -> dict:
    """The trials and experiments launched from this trace (they record it as ``source_trace_id``),
    newest first: id, kind, name, status, created_at."""
    _trace_or_404(session, trace_id)
    rows = session.execute(select(Experiment).where(Experiment.source_trace_id == trace_id)
                           .order_by(Experiment.created_at.desc(), Experiment.id)).scalars().all()
    data = [{"id": e.id, "kind": e.kind, "name": e.name, "status": status_of(e.job), "created_at": e.created_at,
             "finished_at": e.finished_at} for e in rows]
    return {"data": data, "count": len(data)}
