"""Typed ORM models (SQLAlchemy 2). Schema changes go through an Alembic revision in ``migrations/``.

Ids are 32-character hex strings (uuid4) except built-in task sets, whose id is their name. JSON
columns hold plain JSON (no pickle). Times are UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false as sa_false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from backend.db.types import UTCDateTime, utcnow

# Named constraints so Alembic migrations and autogenerate compare the same names on both dialects.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
JOB_KINDS = ("inspect", "trace", "experiment", "lens")


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    """One unit of work for a worker. The database is the source of truth for its state.

    status: queued -> running -> succeeded | failed | cancelled. A running job holds a lease
    (``worker_id``, ``lease_expires_at``) that its heartbeat extends. ``progress`` is
    ``{"stage", "done", "total", "percent", "eta_seconds"}``; ``log`` keeps the last
    ``settings.log_tail_chars`` characters. ``resource_kind``/``resource_id`` name the row the job fills
    (``model``, ``trace`` or ``experiment``; a ``lens`` job names the trace it was asked from and fills
    none). ``result``: the outcome of a job that fills no row (a live lens: its JSON), else null.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(200), unique=True)
    resource_kind: Mapped[Optional[str]] = mapped_column(String(32))
    resource_id: Mapped[Optional[str]] = mapped_column(String(64))
    worker_id: Mapped[Optional[str]] = mapped_column(String(200))
    lease_expires_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[Optional[str]] = mapped_column(Text)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_resource", "resource_kind", "resource_id"),
    )


class Model(Base):
    """A registered model: a local folder under the model roots or a hub id.

    info (filled by the ``inspect`` job): ``{"architecture", "num_layers", "block_kinds": [L],
    "num_parameters", "block_parameters": [L], "hidden_size", "vocab_size", ...}``.
    fingerprint: the engine's sha256 over config and weight-file heads/tails.
    """

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source: Mapped[str] = mapped_column(String(1000), unique=True)
    source_kind: Mapped[str] = mapped_column(String(16))  # "local" | "hub"
    name: Mapped[str] = mapped_column(String(200))
    trust_remote_code: Mapped[bool] = mapped_column(Boolean, default=False)
    fingerprint: Mapped[Optional[str]] = mapped_column(String(128))
    info: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Optional[Job]] = relationship(lazy="joined")


class TaskSet(Base):
    """A set of prompts with targets: built-in (id = name, registered by the worker) or uploaded.

    items: ``[{"prompt", "target", "id"?, "task"?}]`` (uploaded sets only; built-in items live in the
    engine). tasks: the task names the set yields.
    """

    __tablename__ = "task_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[Optional[str]] = mapped_column(String(32))
    description: Mapped[Optional[str]] = mapped_column(Text)
    tasks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    num_items: Mapped[int] = mapped_column(Integer, default=0)
    items: Mapped[Optional[list[Any]]] = mapped_column(JSON)
    sha256: Mapped[Optional[str]] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Trace(Base):
    """A trace request and its result.

    spec: ``{"model_id", "task_sets": [...], "perturbations": [...], "options": {...}}``.
    summary: ``{"num_layers", "block_kinds", "tasks", "particles", "vulnerable_layer", "freeze_plan"}``.
    result_json: the engine's TraceResult JSON text exactly as stored (a property over the
        ``trace_results`` row; served as-is, never re-encoded). result_sha256: its ETag.
    provenance: ``{"code_version", "model_source", "model_fingerprint", "seeds", "spec"}``.
    partial: whatever the worker streams while running (``store_partial``).
    """

    __tablename__ = "traces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)  # a person's labels (PATCH), up to MAX_TAGS
    notes: Mapped[Optional[str]] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    position_view: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    result_bytes: Mapped[Optional[int]] = mapped_column(Integer)
    # sha256 hex of the UTF-8 result text: the ETag of /result and the key of the API's byte cache.
    result_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    provenance: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    partial: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # The runs table's metric columns (layertracer/spec/run_metrics.py trace_metrics), set with the
    # result so that a list sorts and filters them in the database (migration 0008).
    plan: Mapped[Optional[str]] = mapped_column(Text)
    plan_share: Mapped[Optional[float]] = mapped_column(Float, index=True)
    vulnerable_layer: Mapped[Optional[int]] = mapped_column(Integer, index=True)

    job: Mapped[Optional[Job]] = relationship(lazy="joined")
    model: Mapped[Model] = relationship(lazy="joined")
    result_row: Mapped[Optional["TraceResultRow"]] = relationship(
        lazy="select", uselist=False, cascade="all, delete-orphan", passive_deletes=True)

    @property
    def result_json(self) -> Optional[str]:
        """The stored engine JSON text, or None (loads the ``trace_results`` row)."""
        return self.result_row.body if self.result_row is not None else None


class TraceResultRow(Base):
    """The engine's TraceResult JSON text of one trace, kept out of ``traces`` so reading a trace's
    other columns never walks tens of MB (SQLite stores a big value in overflow pages inside the row)."""

    __tablename__ = "trace_results"

    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)


class TracePart(Base):
    """A JSON document derived from one trace's result, stored as text and served as-is (with its sha256
    as the ETag), so a page needs a few hundred kB instead of the whole result:

    - part ``overview``: the result without its per-prompt arrays (``layertracer.spec.views.trace_overview``);
    - part ``task:<name>``: one task's object exactly as in the result (every per-prompt array).

    Written with the result; a trace stored before these existed gets them on first request.
    """

    __tablename__ = "trace_parts"

    trace_id: Mapped[str] = mapped_column(ForeignKey("traces.id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[str] = mapped_column(String(220), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)


class Experiment(Base):
    """A trial (kind ``trial``: one allocation) or an experiment (several allocations).

    spec: the engine's ExperimentSpec fields as JSON (``model`` = the model's source, paths resolved).
    result: the engine runner's result JSON (baseline, trials, statistics, table, drift, retrace).
    provenance: ``{"code_version", "model_source", "model_fingerprint", "seeds", "spec"}``.
    """

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # "trial" | "experiment"
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[Optional[str]] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[Optional[str]] = mapped_column(Text)
    # Lineage: the trace whose freeze plan this run trains ("Launch a trial with this plan").
    source_trace_id: Mapped[Optional[str]] = mapped_column(ForeignKey("traces.id", ondelete="SET NULL"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, deferred=True)
    partial: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    provenance: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # The runs table's metric columns (layertracer/spec/run_metrics.py experiment_metrics), set with
    # the result (migration 0008): the best allocation and its accuracy changes on the retention and
    # acquisition benchmarks (fractions, after minus base), significant or not.
    best_allocation: Mapped[Optional[str]] = mapped_column(String(1000))
    best_label: Mapped[Optional[str]] = mapped_column(String(1000), index=True)
    delta_retention: Mapped[Optional[float]] = mapped_column(Float, index=True)
    delta_acquisition: Mapped[Optional[float]] = mapped_column(Float, index=True)
    retention_significant: Mapped[Optional[bool]] = mapped_column(Boolean)
    acquisition_significant: Mapped[Optional[bool]] = mapped_column(Boolean)

    job: Mapped[Optional[Job]] = relationship(lazy="joined")
    model: Mapped[Model] = relationship(lazy="joined")

    __table_args__ = (Index("ix_experiments_kind_created", "kind", "created_at"),)


class TrainMetric(Base):
    """One optimizer step of one trial: loss (nats/token), lr, tokens/s, grad norm, optional eval loss."""

    __tablename__ = "train_metrics"

    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    trial: Mapped[str] = mapped_column(String(200), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    loss: Mapped[Optional[float]] = mapped_column(Float)
    lr: Mapped[Optional[float]] = mapped_column(Float)
    tokens_per_s: Mapped[Optional[float]] = mapped_column(Float)
    grad_norm: Mapped[Optional[float]] = mapped_column(Float)
    eval_loss: Mapped[Optional[float]] = mapped_column(Float)
    elapsed_s: Mapped[Optional[float]] = mapped_column(Float)


class Share(Base):
    """A read-only link to one result (``kind`` trace|experiment). Revoked by setting ``revoked_at``."""

    __tablename__ = "shares"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_shares_resource", "kind", "resource_id"),)


class RegisteredPath(Base):
    """A corpus or benchmark registered by name, as models are, for the forms to offer: ``kind`` is
    ``corpus`` or a benchmark kind (``ceval``, ``cmmlu``, ``lm-eval``: ``layertracer.spec.benchmarks``);
    ``path`` is confined to the model roots when registered (an lm-eval task known by name is no path)."""

    __tablename__ = "registered_paths"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("kind", "path"),)


class ApiToken(Base):
    """An API token; only its sha256 (hex) is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # An admin token may also ask for what the server's settings reserve to admins (trust_remote_code).
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


__all__ = [
    "Base", "Job", "Model", "TaskSet", "Trace", "TraceResultRow", "TracePart",
    "Experiment", "TrainMetric", "Share", "ApiToken", "JOB_STATES", "TERMINAL_STATES", "JOB_KINDS", "new_id",
]
