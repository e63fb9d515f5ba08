"""The runs table's lists in the database: ``GET /traces`` and ``GET /experiments`` filter, sort and page
with the grammar of ``layertracer/spec/runs_query.py`` on indexed columns (migration 0008), so a page of
10,000 runs never leaves the database whole.

Filters (all optional, combined with AND): ``status`` (the job's), ``q`` (a case-insensitive substring
of the run's name, the model's name or source, or one of its tags), ``model`` (a model id), ``tag`` (a
tag, whole, case-insensitive), and for experiments ``kind`` (``trial`` | ``experiment``). The SQL is
the same on SQLite and Postgres (text sorts by ``lower(x)``, under the "C" collation on Postgres, so
both order by code point).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional

from fastapi import Depends, HTTPException, Query
from sqlalchemy import Select, Text, cast, func, or_, select
from sqlalchemy.orm import Session, defer

from backend.api.deps import NO_NUL, Paging
from backend.db.models import Experiment, Job, Model, Trace
from layertracer.spec.runs_query import EXPERIMENT_SORT_FIELDS, SORT_PATTERN, TRACE_SORT_FIELDS, SortError, parse_sort


class RunFilters:
    """The list parameters beyond paging (``backend.api.deps.Paging``): sort, model, tag."""

    sort_fields: tuple[str, ...] = TRACE_SORT_FIELDS

    def __init__(
        self,
        sort: Annotated[Optional[str], Query(max_length=41, description=(
            "one field, '-' first for descending; missing values last, ties newest first: "
            f"{', '.join(TRACE_SORT_FIELDS)}"),
            json_schema_extra={"pattern": SORT_PATTERN["traces"]})] = None,
        model: Annotated[Optional[str], Query(max_length=64, description="a model id",
                                              json_schema_extra={"pattern": NO_NUL})] = None,
        tag: Annotated[Optional[str], Query(max_length=50, description="runs carrying this tag",
                                            json_schema_extra={"pattern": NO_NUL})] = None,
    ) -> None:
        try:
            self.sort = parse_sort(sort, self.sort_fields)
        except SortError as exc:
            raise HTTPException(422, str(exc)) from None
        self.model, self.tag = model or None, tag or None


class ExperimentFilters(RunFilters):
    """RunFilters with the experiments' sort fields and ``kind``."""

    sort_fields = EXPERIMENT_SORT_FIELDS

    def __init__(
        self,
        sort: Annotated[Optional[str], Query(max_length=41, description=(
            f"one field, '-' first for descending: {', '.join(EXPERIMENT_SORT_FIELDS)}"),
            json_schema_extra={"pattern": SORT_PATTERN["experiments"]})] = None,
        model: Annotated[Optional[str], Query(max_length=64, description="a model id",
                                              json_schema_extra={"pattern": NO_NUL})] = None,
        tag: Annotated[Optional[str], Query(max_length=50, description="runs carrying this tag",
                                            json_schema_extra={"pattern": NO_NUL})] = None,
        kind: Annotated[Optional[Literal["", "trial", "experiment"]], Query(description="trial or experiment ('' = both)")] = None,
    ) -> None:
        super().__init__(sort=sort, model=model, tag=tag)
        self.kind = kind or None


TraceFiltersDep = Annotated[RunFilters, Depends(RunFilters)]
ExperimentFiltersDep = Annotated[ExperimentFilters, Depends(ExperimentFilters)]


def _json_text(value: str) -> str:
    """How a string appears inside a stored JSON list (the default serializer escapes non-ASCII)."""
    return json.dumps(value)


def _text_key(session: Session, column: Any) -> Any:
    key = func.lower(column)
    return key.collate("C") if session.get_bind().dialect.name == "postgresql" else key


def _sort_columns(session: Session, table: Any) -> dict[str, Any]:
    """field name -> the SQL expression it sorts by, for ``table`` (Trace or Experiment)."""
    columns = {
        "created": table.created_at,
        "name": _text_key(session, table.name),
        "status": Job.status,
        "model": _text_key(session, Model.name),
    }
    if table is Trace:
        columns.update(plan=Trace.plan_share, vulnerable_layer=Trace.vulnerable_layer)
    else:
        columns.update(kind=Experiment.kind, best_allocation=_text_key(session, Experiment.best_label),
                       delta_retention=Experiment.delta_retention, delta_acquisition=Experiment.delta_acquisition)
    return columns


def _filtered_ids(session: Session, table: Any, q: Optional[str], status: Optional[str], filters: RunFilters) -> Select:
    """The ids of ``table``'s runs that pass the filters, joined with what they filter and sort by."""
    query = select(table.id).join(Model, table.model_id == Model.id).outerjoin(Job, table.job_id == Job.id)
    tags = cast(table.tags, Text)
    if status:
        query = query.where(Job.status == status)
    if q:
        query = query.where(or_(table.name.icontains(q, autoescape=True), Model.name.icontains(q, autoescape=True),
                                Model.source.icontains(q, autoescape=True), tags.icontains(q, autoescape=True),
                                tags.icontains(_json_text(q)[1:-1], autoescape=True)))
    if filters.model:
        query = query.where(table.model_id == filters.model)
    if filters.tag:
        query = query.where(tags.icontains(_json_text(filters.tag.strip()), autoescape=True))
    if getattr(filters, "kind", None):
        query = query.where(Experiment.kind == filters.kind)
    return query


def run_list_page(session: Session, table: Any, paging: Paging, filters: RunFilters) -> tuple[list[Any], int]:
    """(this page of ``table``'s runs, in order, with their model and job loaded; the count of all that pass).

    Two steps, so that the sort and the offset walk narrow (id, key) rows instead of every run's JSON
    columns: the page's ids in order, then those rows by id."""
    ids = _filtered_ids(session, table, paging.q, paging.status, filters)
    count = session.execute(select(func.count()).select_from(ids.subquery())).scalar_one()
    column = _sort_columns(session, table)[filters.sort.field]
    primary = (column.desc() if filters.sort.descending else column.asc()).nulls_last()
    order = (primary, table.created_at.desc(), table.id.asc())
    page_ids = session.execute(ids.order_by(*order).limit(paging.limit).offset(paging.offset)).scalars().all()
    if not page_ids:
        return [], count
    # A list row needs none of the big JSON a run keeps (provenance repeats the spec; a trace's
    # position view is layers x positions): not read.
    heavy = [table.provenance, table.partial] + ([Trace.position_view] if table is Trace else [])
    rows = session.execute(select(table).where(table.id.in_(page_ids)).options(*(defer(c) for c in heavy))
                           ).unique().scalars().all()
    by_id = {row.id: row for row in rows}
    return [by_id[i] for i in page_ids if i in by_id], count


__all__ = ["ExperimentFilters", "ExperimentFiltersDep", "RunFilters", "TraceFiltersDep", "run_list_page"]
