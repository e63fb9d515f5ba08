"""Request and response schemas, one family per resource (``XCreate`` / ``XPublic`` / ``XsPublic``).

Request bodies forbid unknown fields (a typo is a 422, not silently ignored).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from layertracer.spec.allocations import check_allocation
from layertracer.spec.jobs import ExperimentFields, Item, check_perturbation  # noqa: F401 (check_perturbation: the API's name for it)
from layertracer.spec.loading import PlacementSpec
from layertracer.spec.trace_options import TraceOptionsSpec

T = TypeVar("T")



class ErrorBody(BaseModel):
    """Every error the API answers: one line that says what is wrong (validation errors included)."""

    detail: str = Field(description="one line, no traceback")


# The error answers every API route may give, declared once (backend/api/__init__.py adds them to the
# router): the body is always ErrorBody.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a path outside the roots, a host not allowed, NUL in the URL"},
    401: {"model": ErrorBody, "description": "token mode: no valid token or share link"},
    403: {"model": ErrorBody, "description": "not allowed: a read-only share link, a peer outside this machine in local mode, remote code"},
    404: {"model": ErrorBody, "description": "no such resource"},
    409: {"model": ErrorBody, "description": "the resource is not in a state that allows this (e.g. no result yet)"},
    413: {"model": ErrorBody, "description": "the request body is too large"},
    422: {"model": ErrorBody, "description": "the request is not valid (the detail says which field and why)"},
}


def created_or_existing(model: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a POST that finds its resource already there (same source, same Idempotency-Key)."""
    return {200: {"model": model, "description": f"the {what} existed already (same Idempotency-Key or source)"}}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # Postgres text cannot hold NUL; refuse it up front instead of failing in the database.
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


class ListOf(BaseModel, Generic[T]):
    data: list[T]
    count: int


# -- jobs --------------------------------------------------------------------------------------------
class Progress(BaseModel):
    """Progress of a running job: stage name, units done of total, percent (0-100) of the whole job, ETA
    in seconds; for a job in parts (an experiment's baseline and trials) also which part (``item``: base
    or a trial's slug; ``index`` of ``count``, 0 for the baseline) and what it does (``work``: train,
    eval, trace), as the engine reports them (``layertracer.progress.ProgressEvent``)."""

    model_config = ConfigDict(extra="allow")
    stage: Optional[str] = None
    done: Optional[float] = None
    total: Optional[float] = None
    percent: Optional[float] = None
    eta_seconds: Optional[float] = None
    item: Optional[str] = None
    work: Optional[str] = None
    index: Optional[int] = None
    count: Optional[int] = None


class ResourceRef(BaseModel):
    kind: str
    id: str


class JobBrief(BaseModel):
    id: str
    status: str
    progress: Optional[Progress] = None
    error: Optional[str] = None
    attempts: int


class JobPublic(BaseModel):
    id: str
    kind: str
    queue: str
    status: str
    progress: Optional[Progress] = None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error: Optional[str] = None
    created_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    resource: Optional[ResourceRef] = None


class JobsPublic(ListOf[JobPublic]):
    pass


class JobLog(BaseModel):
    """The tail of a job's log: ``lines`` (at most ``tail``) and the text they came from."""

    id: str
    status: str
    lines: list[str]
    text: str


# -- models ------------------------------------------------------------------------------------------
class ModelCreate(Request):
    """A model to register: a local folder under the model roots (absolute, or relative to a root) or a
    hub id (``org/name``)."""

    source: str = Field(min_length=1, max_length=1000)
    name: Optional[str] = Field(default=None, max_length=200)
    trust_remote_code: StrictBool = False


class ModelBrief(BaseModel):
    id: str
    source: str
    name: str
    fingerprint: Optional[str] = None
    info: Optional[dict[str, Any]] = None


class ModelPublic(BaseModel):
    id: str
    source: str
    source_kind: Literal["local", "hub"]
    name: str
    trust_remote_code: bool
    fingerprint: Optional[str] = None
    info: Optional[dict[str, Any]] = None
    status: Optional[str] = None
    job: Optional[JobBrief] = None
    created_at: datetime


class ModelsPublic(ListOf[ModelPublic]):
    pass


# -- task sets ---------------------------------------------------------------------------------------
class TaskSetPublic(BaseModel):
    id: str
    name: str
    builtin: bool
    language: Optional[str] = None
    description: Optional[str] = None
    tasks: list[str]
    num_items: int
    registered: StrictBool = True
    created_at: Optional[datetime] = None


class TaskSetDetail(TaskSetPublic):
    items: Optional[list[dict[str, Any]]] = None


class TaskSetsPublic(ListOf[TaskSetPublic]):
    pass


# -- traces ------------------------------------------------------------------------------------------
class TraceOptions(TraceOptionsSpec):
    """Trace options, as the engine's spec declares them (``layertracer/spec/trace_options.py``)."""

    model_config = ConfigDict(extra="forbid", title="TraceOptions")


class TraceCreate(Request):
    """A trace: a registered model, task sets (ids or names; ``all`` = every built-in one),
    perturbations (the first is the primary) and options."""

    model_id: str = Field(min_length=1, max_length=64)
    task_sets: list[Item] = Field(min_length=1, max_length=50)
    perturbations: list[Item] = Field(default_factory=lambda: ["skip"], min_length=1, max_length=10)
    options: TraceOptions = Field(default_factory=TraceOptions)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    name: Optional[str] = Field(default=None, max_length=200)

    @field_validator("perturbations")
    @classmethod
    def _perturbations(cls, values: list[str]) -> list[str]:
        out = [check_perturbation(v) for v in values]
        if len(set(out)) != len(out):
            raise ValueError("a perturbation is listed twice")
        return out

    @field_validator("task_sets")
    @classmethod
    def _task_sets(cls, values: list[str]) -> list[str]:
        out = [v.strip() for v in values]
        if any(not v or len(v) > 200 for v in out):
            raise ValueError("task set references must be 1-200 characters")
        if len(set(out)) != len(out):
            raise ValueError("a task set is listed twice")
        return out


class TraceSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    num_layers: int
    block_kinds: list[str]
    tasks: list[str]
    particles: dict[str, Optional[int]]
    vulnerable_layer: Optional[int] = None
    freeze_plan: Optional[dict[str, Any]] = None


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")
    code_version: Optional[str] = None
    model_fingerprint: Optional[str] = None
    seeds: list[int] = Field(default_factory=list)


MAX_TAGS = 20
Tag = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^,]*$")]  # a comma would split it in a filter


class RunUpdate(Request):
    """A PATCH of a trace, trial or experiment: what a person says about it (only the fields given change;
    ``name: null`` removes the name, ``tags`` replaces the list)."""

    name: Optional[str] = Field(default=None, max_length=200)
    tags: Optional[list[Tag]] = Field(default=None, max_length=MAX_TAGS)
    notes: Optional[str] = Field(default=None, max_length=10_000)

    @field_validator("tags")
    @classmethod
    def _tags(cls, values: Optional[list[str]]) -> Optional[list[str]]:
        if values is None:
            return None
        out = list(dict.fromkeys(v.strip() for v in values))  # once each, in the order given
        if any(not v for v in out):
            raise ValueError("tags: each tag needs a character that is not a space")
        return out


class TracePublic(BaseModel):
    id: str
    name: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    notes: Optional[str] = None
    status: str
    job: Optional[JobBrief] = None
    model: ModelBrief
    spec: dict[str, Any]
    created_at: datetime
    finished_at: Optional[datetime] = None
    summary: Optional[TraceSummary] = None
    partial: Optional[dict[str, Any]] = None
    provenance: Optional[Provenance] = None


class TraceListItem(BaseModel):
    id: str
    name: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    status: str
    model: ModelBrief
    tasks: list[str]
    # The runs table's metric columns (layertracer/spec/run_metrics.py): null until the result is stored.
    vulnerable_layer: Optional[int] = None
    plan: Optional[str] = None  # the freeze plan's trained ranges
    plan_share: Optional[float] = None  # the share of layers it trains, in [0, 1]
    created_at: datetime
    finished_at: Optional[datetime] = None
    job_id: Optional[str] = None
    job: Optional[JobBrief] = None  # status and live progress, so a list needs no request per job


class TracesPublic(ListOf[TraceListItem]):
    pass


# -- experiments -------------------------------------------------------------------------------------
class _TrainingFields(Request, ExperimentFields):
    """Fields shared by trials and experiments: the spec's (layertracer/spec/jobs.py ExperimentFields,
    with the hyper-parameters of layertracer/spec/training.py), their defaults, limits and checks;
    ``source_trace_id``: the trace whose freeze plan it trains (lineage; it must exist)."""

    source_trace_id: Optional[str] = Field(default=None, min_length=1, max_length=32)


class ExperimentCreate(_TrainingFields):
    """An experiment: every allocation x every seed on the same data, compared with statistics."""

    allocations: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(min_length=1, max_length=10)

    @field_validator("allocations")
    @classmethod
    def _allocations(cls, values: list[str]) -> list[str]:
        out = [check_allocation(v) for v in values]
        if len(set(out)) != len(out):
            raise ValueError("an allocation is listed twice")
        return out

    @model_validator(mode="after")
    def _from_trace(self) -> "ExperimentCreate":
        if "from-trace" in self.allocations and not self.trace_tasks:
            raise ValueError("allocation 'from-trace' needs trace_tasks to trace the base model")
        self._check_labels(self.allocations)
        return self


class TrialCreate(_TrainingFields):
    """A trial: one allocation (trained with each seed)."""

    allocation: str = Field(min_length=1, max_length=1000)

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, value: str) -> str:
        return check_allocation(value)

    @model_validator(mode="after")
    def _from_trace(self) -> "TrialCreate":
        if self.allocation == "from-trace" and not self.trace_tasks:
            raise ValueError("allocation 'from-trace' needs trace_tasks to trace the base model")
        self._check_labels([self.allocation])
        return self


class ExperimentPublic(BaseModel):
    id: str
    kind: Literal["trial", "experiment"]
    name: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    notes: Optional[str] = None
    source_trace_id: Optional[str] = None  # the trace whose freeze plan this run trains
    status: str
    job: Optional[JobBrief] = None
    model: ModelBrief
    spec: dict[str, Any]
    summary: Optional[dict[str, Any]] = None
    result: Optional[dict[str, Any]] = None
    partial: Optional[dict[str, Any]] = None
    provenance: Optional[Provenance] = None
    created_at: datetime
    finished_at: Optional[datetime] = None


class ExperimentListItem(BaseModel):
    id: str
    kind: Literal["trial", "experiment"]
    name: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    source_trace_id: Optional[str] = None
    status: str
    model: ModelBrief
    allocations: list[str]
    labels: dict[str, str] = Field(default_factory=dict)  # allocation -> the name given at launch
    seeds: list[int]
    benchmarks: list[str] = Field(default_factory=list)  # in order: the first is retention's, the second acquisition's
    # The runs table's metric columns (layertracer/spec/run_metrics.py): null until the result is stored.
    best_allocation: Optional[str] = None
    best_label: Optional[str] = None
    delta_retention: Optional[float] = None  # accuracy change (after - base) on the retention benchmark
    delta_acquisition: Optional[float] = None  # the same on the acquisition benchmark
    retention_significant: Optional[bool] = None
    acquisition_significant: Optional[bool] = None
    created_at: datetime
    finished_at: Optional[datetime] = None
    job_id: Optional[str] = None
    job: Optional[JobBrief] = None  # status and live progress, so a list needs no request per job


class ExperimentsPublic(ListOf[ExperimentListItem]):
    pass


class MetricPoint(BaseModel):
    step: int
    loss: Optional[float] = None
    lr: Optional[float] = None
    tokens_per_s: Optional[float] = None
    grad_norm: Optional[float] = None
    eval_loss: Optional[float] = None


class ExperimentMetrics(BaseModel):
    """Training curves per trial slug, ordered by step."""

    trials: dict[str, list[MetricPoint]]


# -- shares ------------------------------------------------------------------------------------------
class ShareCreate(Request):
    """A read-only link to one trace or experiment, optionally expiring after ``expires_in_seconds``."""

    kind: Literal["trace", "experiment"]
    id: str = Field(min_length=1, max_length=64)
    expires_in_seconds: Optional[int] = Field(default=None, ge=1, le=10 * 365 * 24 * 3600)


class SharePublic(BaseModel):
    """token: send as ``?share=<token>`` or the ``X-Share-Token`` header. url: the API resource;
    dashboard_path: the dashboard page, both with the token."""

    id: str
    kind: str
    resource_id: str
    token: str
    url: str
    dashboard_path: str
    created_at: datetime
    expires_at: Optional[datetime] = None
    revoked: bool
    expired: bool


class SharesPublic(ListOf[SharePublic]):
    pass


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    auth: str
