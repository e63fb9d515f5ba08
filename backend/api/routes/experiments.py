"""Trials and experiments: create (allocations, corpus, benchmarks, seeds, steps, hyper-parameters) and
read the results: training curves, before/after scores, statistics, weight drift, re-traces."""

from __future__ import annotations

from typing import Annotated, Optional, Union

from fastapi import APIRouter, Header, HTTPException, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from backend import __version__, results
from backend.api.common import job_brief, model_brief, not_found, scoped_key, status_of
from backend.api.resources import apply_update, get_or_404, submit_with_resource
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.run_lists import ExperimentFiltersDep, run_list_page
from backend.api.schemas import (
    created_or_existing,
    ExperimentCreate,
    ExperimentMetrics,
    ExperimentPublic,
    ExperimentsPublic,
    RunUpdate,
    TrialCreate,
)
from backend.api.data_paths import confined, resolve_benchmark, resolve_corpus
from backend.db.models import Experiment, Model, Trace, new_id
from backend.settings import Settings
from backend.tasksets import BUILTIN_TASK_NAMES
from layertracer.spec.jobs import ExperimentJobSpec
from layertracer.spec.run_metrics import EXPERIMENT_METRICS

router = APIRouter(tags=["experiments"])


def experiment_summary(result: Optional[dict]) -> Optional[dict]:
    """The parts of the runner's result a list or header needs: the results table and the status."""
    if not result:
        return None
    return {"table": result.get("table"), "status": result.get("status", "finished")}


def experiment_public(row: Experiment, with_result: bool = True) -> dict:
    result = row.result if with_result else None
    return {
        "id": row.id, "kind": row.kind, "name": row.name, "tags": list(row.tags or []), "notes": row.notes,
        "source_trace_id": row.source_trace_id, "status": status_of(row.job), "job": job_brief(row.job),
        "model": model_brief(row.model), "spec": row.spec, "summary": experiment_summary(result), "result": result,
        "partial": row.partial, "provenance": row.provenance, "created_at": row.created_at,
        "finished_at": row.finished_at,
    }


def _create(kind: str, body: Union[ExperimentCreate, TrialCreate], session: Session, settings: Settings,
            response: Response, idempotency_key: Optional[str]) -> dict:
    model = get_or_404(session, Model, body.model_id, "model")
    if model.trust_remote_code:
        raise HTTPException(422, "trials do not run a model folder's own code (trust_remote_code models)")
    fields = body.model_dump()
    source_trace_id = fields.pop("source_trace_id")
    if source_trace_id is not None and session.get(Trace, source_trace_id) is None:
        raise HTTPException(422, f"source_trace_id: no trace {source_trace_id}")
    allocations = [fields.pop("allocation")] if kind == "trial" else fields.pop("allocations")
    fields["corpus"] = resolve_corpus(settings, body.corpus)
    fields["benchmarks"] = [resolve_benchmark(settings, bench) for bench in body.benchmarks]
    resolved, renamed = [], {}
    for allocation in allocations:
        original = allocation
        if allocation.startswith("from-trace:"):
            allocation = "from-trace:" + confined(settings, allocation.split(":", 1)[1], "trace file", "file")
        renamed[original] = allocation
        resolved.append(allocation)
    fields["labels"] = {renamed[k]: v for k, v in body.labels.items()}
    unknown = [t for t in body.trace_tasks.split(",") if t and t != "all" and t not in BUILTIN_TASK_NAMES]
    if unknown:
        raise HTTPException(422, f"trace task {unknown[0]!r} is not a built-in task")
    experiment_id = new_id()
    spec = ExperimentJobSpec.model_validate({**fields, "allocations": resolved, "model_id": model.id,
                                             "kind": kind}).model_dump()
    provenance = {"code_version": __version__, "model_source": model.source, "model_fingerprint": model.fingerprint,
                  "seeds": list(body.seeds), "spec": spec}
    return submit_with_resource(
        session, settings, response, kind="experiment", spec=spec, resource_kind="experiment",
        resource_id=experiment_id, key=scoped_key("experiment", idempotency_key),
        build=lambda job_id: Experiment(id=experiment_id, kind=kind, model_id=model.id, job_id=job_id, name=body.name,
                                        spec=spec, provenance=provenance, source_trace_id=source_trace_id, tags=[]),
        find=lambda ident: session.get(Experiment, ident), public=experiment_public,
    )


@router.post("/experiments", response_model=ExperimentPublic, status_code=201, responses=created_or_existing(ExperimentPublic, "experiment"))
def create_experiment(body: ExperimentCreate, session: SessionDep, settings: SettingsDep, response: Response,
                      idempotency_key: Annotated[Optional[str], Header(max_length=200)] = None):
    """Queue an experiment: every allocation x every seed, evaluated before and after, compared."""
    return _create("experiment", body, session, settings, response, idempotency_key)


@router.post("/trials", response_model=ExperimentPublic, status_code=201, responses=created_or_existing(ExperimentPublic, "trial"))
def create_trial(body: TrialCreate, session: SessionDep, settings: SettingsDep, response: Response,
                 idempotency_key: Annotated[Optional[str], Header(max_length=200)] = None):
    """Queue a trial: one allocation, continued pre-training with each seed, evaluated before and after."""
    return _create("trial", body, session, settings, response, idempotency_key)


@router.get("/experiments", response_model=ExperimentsPublic)
def list_experiments(session: SessionDep, paging: PagingDep, filters: ExperimentFiltersDep):
    """Trials and experiments, newest first or by ``sort``; filters: status, q (name, model, tags), model,
    tag, kind (backend/api/run_lists.py)."""
    rows, count = run_list_page(session, Experiment, paging, filters)
    data = [{
        "id": e.id, "kind": e.kind, "name": e.name, "tags": list(e.tags or []), "source_trace_id": e.source_trace_id,
        "status": status_of(e.job), "model": model_brief(e.model),
        "allocations": list(e.spec.get("allocations") or []), "labels": dict(e.spec.get("labels") or {}),
        "seeds": list(e.spec.get("seeds") or []), "benchmarks": list(e.spec.get("benchmarks") or []),
        **{key: getattr(e, key) for key in EXPERIMENT_METRICS},
        "created_at": e.created_at, "finished_at": e.finished_at, "job_id": e.job_id, "job": job_brief(e.job),
    } for e in rows]
    return {"data": data, "count": count}


@router.get("/experiments/{experiment_id}", response_model=ExperimentPublic)
def get_experiment(experiment_id: str, session: SessionDep):
    """A trial or experiment with its job, spec, result (table, statistics, drift, re-trace) and provenance."""
    row = session.execute(
        select(Experiment).options(undefer(Experiment.result)).where(Experiment.id == experiment_id)
    ).unique().scalar_one_or_none()
    if row is None:
        raise not_found("experiment", experiment_id)
    return experiment_public(row)


@router.patch("/experiments/{experiment_id}", response_model=ExperimentPublic)
def update_experiment(experiment_id: str, body: RunUpdate, session: SessionDep):
    """Rename a trial or experiment, set its tags or notes (the fields given; a write: an API token)."""
    row = session.execute(
        select(Experiment).options(undefer(Experiment.result)).where(Experiment.id == experiment_id)
    ).unique().scalar_one_or_none()
    if row is None:
        raise not_found("experiment", experiment_id)
    apply_update(row, body)
    session.commit()
    return experiment_public(row)


@router.get("/experiments/{experiment_id}/metrics", response_model=ExperimentMetrics)
def get_metrics(experiment_id: str, session: SessionDep):
    """Training curves: per trial slug, one point per optimizer step (loss, lr, tokens/s, grad norm)."""
    get_or_404(session, Experiment, experiment_id, "experiment")
    return {"trials": results.train_metrics(session, experiment_id)}
