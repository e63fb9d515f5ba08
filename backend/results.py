"""Functions the worker calls to store what a job produced. Each takes a session, changes only the rows
of one resource, is idempotent (a re-run job may store again) and commits.

- ``store_model_info(session, *, model_id, info, fingerprint=None)`` after an ``inspect`` job;
- ``store_trace_result(session, *, trace_id, result)`` with the engine's TraceResult JSON dict
  (``TraceResult.to_dict()`` / the content of OUT.json, README schema);
- ``store_partial(session, *, kind, resource_id, partial)`` while a job runs (merged, shown by the API);
- ``append_train_metrics(session, *, experiment_id, trial, rows)`` per few optimizer steps;
- ``store_experiment_result(session, *, experiment_id, result, ...)`` with the runner's result dict.

They do not change the job's state: call ``backend.jobs.finish_job`` afterwards. NaN and infinities are
stored as null (JSON has no NaN).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Optional

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db.models import Experiment, Model, TrainMetric, Trace, TracePart, TraceResultRow
from backend.db.types import utcnow
from layertracer.spec.run_metrics import experiment_metrics, trace_metrics
from layertracer.spec.views import clean_json, trace_overview, trace_summary


class ResultError(ValueError):
    """The resource is unknown or the result does not have the documented shape."""


def dumps(value: Any) -> str:
    """Compact strict JSON text (non-finite floats become null)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(clean_json(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _set_columns(row: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(row, key, value)


def task_part(name: str) -> str:
    return f"task:{name}"


def trace_parts(result: dict[str, Any]) -> dict[str, str]:
    """``{"overview": JSON text, "task:<name>": JSON text of the task as in the result, ...}``."""
    parts = {"overview": dumps(trace_overview(result))}
    for name, task in (result.get("tasks") or {}).items():
        parts[task_part(name)] = dumps(task)
    return parts


def _replace_parts(session: Session, trace_id: str, parts: dict[str, str]) -> None:
    session.execute(delete(TracePart).where(TracePart.trace_id == trace_id))
    session.execute(insert(TracePart), [
        dict(trace_id=trace_id, part=part, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), body=text)
        for part, text in parts.items()
    ])


def ensure_trace_parts(session: Session, trace_id: str) -> bool:
    """Derive and store the parts of a trace whose result was stored before parts existed (or lost them).
    Returns False when the trace has no stored result. Safe when two requests race: the loser's insert
    fails on the primary key and it reads what the winner stored."""
    if session.execute(select(TracePart.part).where(TracePart.trace_id == trace_id).limit(1)).first():
        return True
    body = session.execute(select(TraceResultRow.body).where(TraceResultRow.trace_id == trace_id)).scalar_one_or_none()
    if body is None:
        return False
    try:
        _replace_parts(session, trace_id, trace_parts(json.loads(body)))
        session.commit()
    except IntegrityError:
        session.rollback()
    return True


def store_trace_result(session: Session, *, trace_id: str, result: dict[str, Any]) -> Trace:
    """Store the engine's TraceResult JSON dict for ``trace_id``, once, with the views derived from it by
    the engine's own rules (``layertracer.spec.views``):

    - ``trace_results.body``: the JSON text, served as-is by ``GET /traces/{id}/result``;
    - ``trace_parts``: the overview (``trace_overview``) and each task's object, as JSON text, served
      by ``/overview`` and ``/tasks/{task}`` (and read by the CSV export);
    - ``traces.summary`` (``trace_summary``), ``traces.position_view``, ``traces.provenance``
      (``code_version`` = result["version"], ``model_fingerprint`` = result["model"]["fingerprint"],
      ``seeds`` = [options.seed], ``spec`` = the trace's request spec): what lists and headers show.

    Also fills the model's fingerprint if it has none. Replaces anything stored before. Raises
    ResultError for an unknown trace or a result without ``num_layers`` / ``tasks``.
    """
    trace = session.get(Trace, trace_id)
    if trace is None:
        raise ResultError(f"unknown trace {trace_id!r}")
    num_layers = result.get("num_layers")
    if not isinstance(num_layers, int) or num_layers <= 0 or not isinstance(result.get("tasks"), dict):
        raise ResultError("a trace result needs num_layers (int > 0) and tasks (object)")
    text = dumps(result)
    _replace_parts(session, trace_id, trace_parts(result))

    model_info = result.get("model") or {}
    options = result.get("options") or {}
    fingerprint = model_info.get("fingerprint")
    encoded = text.encode("utf-8")
    sha = hashlib.sha256(encoded).hexdigest()
    row = session.get(TraceResultRow, trace_id)
    if row is None:
        session.add(TraceResultRow(trace_id=trace_id, sha256=sha, body=text))
    else:
        row.sha256, row.body = sha, text
    trace.result_bytes = len(encoded)
    trace.result_sha256 = sha
    trace.summary = clean_json(trace_summary(result))
    _set_columns(trace, trace_metrics(trace.summary))  # the runs table's sortable metric columns
    trace.position_view = clean_json(result.get("position_view"))
    trace.provenance = {
        "code_version": result.get("version"),
        "schema_version": result.get("schema_version"),
        "model_source": model_info.get("source") or (trace.model.source if trace.model else None),
        "model_fingerprint": fingerprint,
        "seeds": [options["seed"]] if options.get("seed") is not None else [],
        "options": clean_json(options),
        "spec": trace.spec,
    }
    trace.finished_at = utcnow()
    if fingerprint and trace.model is not None and not trace.model.fingerprint:
        trace.model.fingerprint = fingerprint
    session.commit()
    return trace


def store_model_info(session: Session, *, model_id: str, info: dict[str, Any],
                     fingerprint: Optional[str] = None) -> Model:
    """Store what ``inspect`` found: ``info`` = ``{"architecture": str, "num_layers": int, "block_kinds":
    [L] str, "num_parameters": int, "block_parameters": [L] int, "hidden_size"?, "vocab_size"?,
    "mixers"?, "mlps"?, ...}`` (the engine's inspect JSON plus per-block parameter counts) and the
    model's content ``fingerprint`` (sha256 hex). Commits; raises ResultError for an unknown model."""
    model = session.get(Model, model_id)
    if model is None:
        raise ResultError(f"unknown model {model_id!r}")
    model.info = clean_json(info)
    if fingerprint:
        model.fingerprint = fingerprint
    elif isinstance(info.get("fingerprint"), str):
        model.fingerprint = info["fingerprint"]
    session.commit()
    return model


def store_partial(session: Session, *, kind: str, resource_id: str, partial: dict[str, Any]) -> None:
    """Merge ``partial`` (plain JSON, top-level keys replace) into the running trace's or experiment's
    ``partial`` (kind ``"trace"`` | ``"experiment"``), e.g. ``{"tasks_done": [...], "baseline": {...},
    "trials": {slug: {...}}}``; the API shows it as ``partial`` until the result is stored."""
    table = {"trace": Trace, "experiment": Experiment}.get(kind)
    if table is None:
        raise ResultError(f"store_partial: kind must be 'trace' or 'experiment', not {kind!r}")
    row = session.get(table, resource_id)
    if row is None:
        raise ResultError(f"unknown {kind} {resource_id!r}")
    row.partial = {**(row.partial or {}), **clean_json(partial)}
    session.commit()


def append_train_metrics(session: Session, *, experiment_id: str, trial: str,
                         rows: list[dict[str, Any]]) -> int:
    """Add optimizer-step rows of one trial (``trial`` = the engine's trial slug, e.g.
    ``train-shallow-seed1``). Each row: ``{"step": int, "loss": float, "lr": float, "tokens_per_s":
    float, "grad_norm": float, "eval_loss": float|None, "elapsed_s": float?}`` (StepMetrics fields).
    A step stored before (a resumed trial) is overwritten. Commits; returns the number of rows."""
    if not rows:
        return 0
    if session.get(Experiment, experiment_id) is None:
        raise ResultError(f"unknown experiment {experiment_id!r}")
    fields = ("loss", "lr", "tokens_per_s", "grad_norm", "eval_loss", "elapsed_s")
    values = []
    for row in rows:
        item = {"experiment_id": experiment_id, "trial": trial, "step": int(row["step"])}
        for f in fields:
            v = row.get(f)
            item[f] = float(v) if v is not None and math.isfinite(float(v)) else None
        values.append(item)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(TrainMetric)
    stmt = stmt.on_conflict_do_update(
        index_elements=["experiment_id", "trial", "step"], set_={f: getattr(stmt.excluded, f) for f in fields}
    )
    session.execute(stmt, values)
    session.commit()
    return len(values)


def store_experiment_result(session: Session, *, experiment_id: str, result: dict[str, Any],
                            code_version: Optional[str] = None,
                            model_fingerprint: Optional[str] = None) -> Experiment:
    """Store the engine runner's result dict (``run_experiment(...)`` / OUT/result.json: ``baseline``,
    ``trials`` (with ``drift``, ``retrace``), ``statistics``, ``table``, ...) for a trial or experiment,
    with provenance (``code_version``: the engine version; ``model_fingerprint``: sha256). Commits."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise ResultError(f"unknown experiment {experiment_id!r}")
    experiment.result = clean_json(result)
    _set_columns(experiment, experiment_metrics(experiment.result))  # the runs table's metric columns
    fingerprint = model_fingerprint or (experiment.model.fingerprint if experiment.model else None)
    experiment.provenance = {
        "code_version": code_version or result.get("version"),
        "model_source": experiment.model.source if experiment.model else None,
        "model_fingerprint": fingerprint,
        "seeds": list(experiment.spec.get("seeds") or []),
        "spec": experiment.spec,
    }
    experiment.finished_at = utcnow()
    session.commit()
    return experiment


def train_metrics(session: Session, experiment_id: str) -> dict[str, list[dict[str, Any]]]:
    """``{trial_slug: [{"step", "loss", "lr", "tokens_per_s", "grad_norm", "eval_loss"?}, ...]}`` by step."""
    out: dict[str, list[dict[str, Any]]] = {}
    rows = session.execute(
        select(TrainMetric).where(TrainMetric.experiment_id == experiment_id).order_by(TrainMetric.trial, TrainMetric.step)
    ).scalars()
    for r in rows:
        item = {"step": r.step, "loss": r.loss, "lr": r.lr, "tokens_per_s": r.tokens_per_s, "grad_norm": r.grad_norm}
        if r.eval_loss is not None:
            item["eval_loss"] = r.eval_loss
        out.setdefault(r.trial, []).append(item)
    return out
