"""Runs page (``/?kind=traces|experiments&status=&q=``): traces, trials and experiments with their
status and live progress, filtered by status and searched by text."""

from __future__ import annotations

from typing import Any, Optional

import dash
from dash import Input, Output, State, dcc, html

from frontend.api_client import ApiError
from frontend.components import LIVE_STATUSES, api_error_box, build_search, client, empty_box, progress_bar, rel, status_badge
from frontend.viz.names import absolute_time, allocation_label, relative_time, run_duration, run_name, short_id

dash.register_page(__name__, path="/", name="Runs", title="Runs · LayerTracer", order=0)

P = "runs"
POLL_MS = 2000
KINDS = {"traces": "Traces", "experiments": "Trials and experiments"}
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]


def layout(token: Optional[str] = None, kind: str = "traces", status: str = "", q: str = "", **query: Any) -> html.Div:
    kind = kind if kind in KINDS else "traces"
    status = status if status in STATUSES else ""
    share = query.get("share")
    return html.Div([
        dcc.Location(id=f"{P}-url", refresh=False),
        dcc.Store(id=f"{P}-share", data=share),
        html.H1("Runs"),
        html.Div([
            html.Div([html.Label("Show", id=f"{P}-kind-label"),
                      dcc.RadioItems(id=f"{P}-kind", options=[{"label": v, "value": k} for k, v in KINDS.items()],
                                     value=kind, inline=True)], className="lt-field"),
            html.Div([html.Label("Status", htmlFor=f"{P}-status"),
                      dcc.Dropdown(id=f"{P}-status", options=[{"label": s, "value": s} for s in STATUSES], value=status or None,
                                   placeholder="any status", clearable=True)], className="lt-field lt-w-status"),
            html.Div([html.Label("Search", htmlFor=f"{P}-q"),
                      dcc.Input(id=f"{P}-q", type="search", value=q, debounce=True, placeholder="id, model, task…",
                                className="lt-input")], className="lt-field"),
            html.Div([dcc.Link("New trace", href=rel("/new/trace"), className="lt-button lt-primary"),
                      dcc.Link("New trial", href=rel("/new/trial"), className="lt-button"),
                      dcc.Link("New experiment", href=rel("/new/experiment"), className="lt-button")], className="lt-buttons"),
        ], className="lt-controls"),
        dcc.Interval(id=f"{P}-interval", interval=POLL_MS),
        dcc.Loading(html.Div(runs_view(kind, status, q, token, share), id=f"{P}-table"), type="dot", delay_show=500),
    ])


def _model_name(item: dict) -> str:
    model = item.get("model") or {}
    return model.get("name") or model.get("source") or str(item.get("model_id") or "?")


def _what(item: dict, kind: str) -> str:
    spec = item.get("spec") or {}
    if kind == "traces":
        tasks = item.get("tasks") or spec.get("tasks") or spec.get("task_sets") or []
        text = ", ".join(tasks) if isinstance(tasks, list) else str(tasks)
        if item.get("vulnerable_layer") is not None:
            text += f" · vulnerable layer {item['vulnerable_layer']}"
        return text
    allocs = item.get("allocations") or spec.get("allocations") or ([spec["allocation"]] if spec.get("allocation") else [])
    seeds = item.get("seeds") or spec.get("seeds") or []
    labels = item.get("labels") or spec.get("labels") or {}
    text = f"{item.get('kind', 'experiment')}: " + ", ".join(allocation_label(a, labels) for a in allocs)
    text += f" · seeds {','.join(str(s) for s in seeds)}" if seeds else ""
    return text + (f" · plan of trace {short_id(item['source_trace_id'])}" if item.get("source_trace_id") else "")


def with_jobs(items: list[dict], api) -> list[dict]:
    """List items carry a job id only; unfinished ones get their job (status, live progress) attached."""
    out = []
    for item in items:
        if item.get("job") is None and item.get("job_id") and item.get("status") in LIVE_STATUSES:
            try:
                item = {**item, "job": api.job(item["job_id"])}
            except ApiError:
                pass
        out.append(item)
    return out


def runs_table(items: list[dict], kind: str, now=None) -> html.Table:
    """The list as a table: the name (the start of the id when unnamed) linking to the run, status with
    live progress, model, what, created (relative; the time itself on hover), duration."""
    base = "/traces/" if kind == "traces" else "/experiments/"
    rows = []
    for item in items:
        job = item.get("job") or {"status": item.get("status")}
        status = item.get("status") or job.get("status")
        cell = progress_bar(job) if status in LIVE_STATUSES else status_badge(status)
        rows.append(html.Tr([
            html.Td([dcc.Link(run_name(item), href=rel(base + str(item["id"])), title=f"id {item['id']}")]
                    + [html.Span(t, className="lt-tag") for t in item.get("tags") or []]),
            html.Td(cell, className="lt-status-cell"),
            html.Td(_model_name(item)),
            html.Td(_what(item, kind)),
            html.Td(relative_time(item.get("created_at"), now), title=absolute_time(item.get("created_at"))),
            html.Td(run_duration({**item, "status": status}, now)),
        ]))
    header = html.Thead(html.Tr([html.Th(h, scope="col") for h in ("name", "status", "model", "what", "created", "took")]))
    return html.Table([header, html.Tbody(rows)], className="lt-table lt-runs", id=f"{P}-list")


def runs_view(kind: str, status: str, q: str, token: Optional[str], share: Optional[str]) -> list:
    api = client(token, share)
    try:
        page = api.traces(status=status or "", q=q or "") if kind == "traces" else api.experiments(status=status or "", q=q or "")
    except ApiError as exc:
        return [api_error_box(exc, title="The runs could not be loaded")]
    items = with_jobs(page.get("data") or [], api)
    if not items:
        what = "traces" if kind == "traces" else "trials or experiments"
        hint = " matching these filters" if (status or q) else " yet — start one with New trace" if kind == "traces" else " yet"
        return [empty_box(f"No {what}{hint}.")]
    count = page.get("count", len(items))
    return [html.P(f"{count} {'trace' if kind == 'traces' else 'run'}{'s' if count != 1 else ''}", className="lt-muted"),
            runs_table(items, kind)]


def refresh(kind, status, q, n_intervals, share, token):
    """Filters or the poll tick -> the table and the address bar's query."""
    search = build_search({"kind": kind if kind != "traces" else None, "status": status, "q": q, "share": share})
    return runs_view(kind or "traces", status or "", q or "", token, share), search


def register_callbacks(app: dash.Dash) -> None:
    app.callback(Output(f"{P}-table", "children"), Output(f"{P}-url", "search"),
                 Input(f"{P}-kind", "value"), Input(f"{P}-status", "value"), Input(f"{P}-q", "value"),
                 Input(f"{P}-interval", "n_intervals"), State(f"{P}-share", "data"), State("auth-token", "data"),
                 prevent_initial_call=True)(refresh)
