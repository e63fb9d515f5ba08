"""Runs page, the runs table to work from:
``/?kind=traces|experiments&type=trial|experiment&status=&q=&model=&tag=&sort=-delta_retention&page=2&size=50``.

Traces, trials and experiments with their status and live progress, and sortable metric columns
(traces: the freeze plan and the vulnerable layer; trials and experiments: the best allocation and its
change in retention and acquisition, ``layertracer/spec/run_metrics.py``). The server sorts, filters
and pages (``GET /api/v1/traces`` and ``/experiments``, grammar in ``layertracer/spec/runs_query.py``);
the page holds one page of rows. Every part of the view (sort, filters, page, page size) is in the URL.
Rows can be selected to open Compare (traces) or their Reports (experiments), cloned into their form
(``/new/<kind>?clone=<job id>``) or re-run with the same stored spec (a write: not on a share link).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Mapping, Optional

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from frontend.api_client import ApiError
from frontend.components import LIVE_STATUSES, api_error_box, build_search, client, empty_box, progress_bar, rel, status_badge
from frontend.viz.names import absolute_time, allocation_label, relative_time, run_duration, run_name, short_id
from layertracer.spec.runs_query import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_SORT,
    EXPERIMENT_KINDS,
    MAX_PAGE_SIZE,
    PAGE_SIZES,
    SORT_FIELDS,
    SortError,
    parse_sort,
)

dash.register_page(__name__, path="/", name="Runs", title="Runs · LayerTracer", order=0)

P = "runs"
POLL_MS = 2000
KINDS = {"traces": "Traces", "experiments": "Trials and experiments"}
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]
# The form each kind of run is launched from (its clone link: FORM?clone=<job id>).
FORMS = {"trace": "/new/trace", "trial": "/new/trial", "experiment": "/new/experiment"}
# Column headers: field (sortable, runs_query's name) or None, and the text shown.
TRACE_COLUMNS = [("name", "name"), ("status", "status"), ("model", "model"), (None, "what"), ("created", "created"),
                 (None, "took"), ("plan", "plan"), ("vulnerable_layer", "vulnerable layer")]
EXPERIMENT_COLUMNS = [("name", "name"), ("status", "status"), ("model", "model"), (None, "what"), ("created", "created"),
                      (None, "took"), ("best_allocation", "best allocation"), ("delta_retention", "Δ retention"),
                      ("delta_acquisition", "Δ acquisition")]
COLUMN_HELP = {
    "plan": "the freeze plan's trained layers (sorts by the share of layers trained)",
    "vulnerable_layer": "the layer whose masking changes the output most (primary perturbation)",
    "best_allocation": "the allocation with the largest mean change over the retention and acquisition benchmarks",
    "delta_retention": "accuracy change (after − base) of the best allocation on the first benchmark (old knowledge); * significant",
    "delta_acquisition": "accuracy change (after − base) of the best allocation on the second benchmark (new knowledge); * significant",
}


# -- the view: everything the URL says ---------------------------------------------------------------

@dataclass(frozen=True)
class RunsView:
    """One view of the runs table. ``page`` counts from 1; ``size`` rows a page."""

    kind: str = "traces"
    type: str = ""  # trial | experiment (kind experiments only; "" = both)
    status: str = ""
    q: str = ""
    model: str = ""
    tag: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1
    size: int = DEFAULT_PAGE_SIZE

    def api_params(self) -> dict[str, Any]:
        """The list route's query for this view."""
        params = {"status": self.status, "q": self.q, "model": self.model, "tag": self.tag, "sort": self.sort,
                  "limit": self.size, "offset": (self.page - 1) * self.size}
        if self.kind == "experiments":
            params["kind"] = self.type
        return {k: v for k, v in params.items() if v not in ("", None)}

    def search(self, share: Optional[str] = None) -> str:
        """The address bar's query: every value that is not the default (a share token kept)."""
        default = RunsView()
        values = {f: getattr(self, f) for f in ("kind", "type", "status", "q", "model", "tag", "sort", "page", "size")}
        return build_search({**{k: (None if v == getattr(default, k) else v) for k, v in values.items()}, "share": share})


def _int(text: Any, default: int, low: int, high: int) -> int:
    try:
        value = int(str(text))
    except (TypeError, ValueError):
        return default
    return value if low <= value <= high else default


def view_from_query(query: Mapping[str, Any]) -> RunsView:
    """The view a URL's query asks for; an unknown or bad value falls back to its default."""
    kind = query.get("kind") if query.get("kind") in KINDS else "traces"
    try:
        sort = parse_sort(query.get("sort"), SORT_FIELDS[kind]).text
    except SortError:
        sort = DEFAULT_SORT
    text = {k: str(query.get(k) or "").strip()[:200] for k in ("q", "model", "tag")}
    return RunsView(
        kind=kind, type=query.get("type") if kind == "experiments" and query.get("type") in EXPERIMENT_KINDS else "",
        status=query.get("status") if query.get("status") in STATUSES else "", q=text["q"], model=text["model"][:64],
        tag=text["tag"][:50], sort=sort, page=_int(query.get("page"), 1, 1, 10_000_000),
        size=_int(query.get("size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )


def next_view(view: RunsView, trigger: Any, values: Mapping[str, Any]) -> RunsView:
    """The view after one control changed: ``trigger`` is the control's id (a sort header's is a dict
    with its ``field``), ``values`` the filters' current values. A filter, the page size or the sort sends
    the view back to page 1; a kind change also resets the sort (the fields differ)."""
    if isinstance(trigger, Mapping) and trigger.get("type") == f"{P}-sort":
        sort = parse_sort(view.sort, SORT_FIELDS[view.kind]).toggled(str(trigger.get("field")))
        if sort.field not in SORT_FIELDS[view.kind]:
            return view
        return replace(view, sort=sort.text, page=1)
    if trigger == f"{P}-prev":
        return replace(view, page=max(1, view.page - 1))
    if trigger == f"{P}-next":
        return replace(view, page=view.page + 1)
    kind = values.get("kind") if values.get("kind") in KINDS else view.kind
    changed = replace(
        view, kind=kind, type=(values.get("type") or "") if kind == "experiments" else "",
        status=values.get("status") or "", q=(values.get("q") or "").strip(), model=values.get("model") or "",
        tag=values.get("tag") or "", size=_int(values.get("size"), view.size, 1, MAX_PAGE_SIZE),
        sort=view.sort if kind == view.kind else DEFAULT_SORT,
    )
    return changed if changed == view else replace(changed, page=1)


# -- the page ---------------------------------------------------------------------------------------

def _model_options(token: Optional[str], share: Optional[str]) -> list[dict]:
    try:
        models = client(token, share).models().get("data") or []
    except ApiError:
        return []
    return [{"label": m.get("name") or m.get("source") or m["id"], "value": m["id"]} for m in models]


def layout(token: Optional[str] = None, **query: Any) -> html.Div:
    share = query.get("share")
    view = view_from_query(query)
    table, live, pages = runs_view(view, token, share)
    return html.Div([
        dcc.Location(id=f"{P}-url", refresh=False),
        dcc.Store(id=f"{P}-share", data=share),
        dcc.Store(id=f"{P}-view", data=asdict(view)),
        dcc.Store(id=f"{P}-selected", data={"kind": view.kind, "items": {}}),
        html.H1("Runs"),
        html.Div([
            html.Div([html.Label("Show", id=f"{P}-kind-label"),
                      dcc.RadioItems(id=f"{P}-kind", options=[{"label": v, "value": k} for k, v in KINDS.items()],
                                     value=view.kind, inline=True)], className="lt-field"),
            html.Div([html.Label("Kind", htmlFor=f"{P}-type"),
                      dcc.Dropdown(id=f"{P}-type", options=[{"label": k + "s", "value": k} for k in EXPERIMENT_KINDS],
                                   value=view.type or None, placeholder="trials and experiments", clearable=True,
                                   disabled=view.kind != "experiments")], className="lt-field lt-w-status"),
            html.Div([html.Label("Status", htmlFor=f"{P}-status"),
                      dcc.Dropdown(id=f"{P}-status", options=[{"label": s, "value": s} for s in STATUSES],
                                   value=view.status or None, placeholder="any status", clearable=True)],
                     className="lt-field lt-w-status"),
            html.Div([html.Label("Model", htmlFor=f"{P}-model"),
                      dcc.Dropdown(id=f"{P}-model", options=_model_options(token, share), value=view.model or None,
                                   placeholder="any model", clearable=True)], className="lt-field lt-w-status"),
            html.Div([html.Label("Search", htmlFor=f"{P}-q"),
                      dcc.Input(id=f"{P}-q", type="search", value=view.q, debounce=True,
                                placeholder="name, model, tag…", className="lt-input")], className="lt-field"),
            html.Div([html.Label("Tag", htmlFor=f"{P}-tag"),
                      dcc.Input(id=f"{P}-tag", type="search", value=view.tag, debounce=True, placeholder="a whole tag",
                                className="lt-input", style={"width": "9em"})], className="lt-field"),
            html.Div([dcc.Link("New trace", href=rel("/new/trace"), className="lt-button lt-primary"),
                      dcc.Link("New trial", href=rel("/new/trial"), className="lt-button"),
                      dcc.Link("New experiment", href=rel("/new/experiment"), className="lt-button")], className="lt-buttons"),
        ], className="lt-controls"),
        html.Div(selection_bar(view.kind, {}), id=f"{P}-selection", className="lt-buttons", style={"margin": "6px 0"}),
        html.Div(id=f"{P}-rerun-msg", role="status"),
        dcc.Interval(id=f"{P}-interval", interval=POLL_MS, disabled=not live),
        dcc.Loading(html.Div(table, id=f"{P}-table"), type="dot", delay_show=500),
        html.Div([
            html.Button("‹ Previous", id=f"{P}-prev", className="lt-button", disabled=view.page <= 1),
            html.Span(page_text(view, pages), id=f"{P}-page", className="lt-muted"),
            html.Button("Next ›", id=f"{P}-next", className="lt-button", disabled=view.page >= pages),
            html.Label("Rows a page", htmlFor=f"{P}-size", className="lt-muted"),
            dcc.Dropdown(id=f"{P}-size", options=[{"label": str(n), "value": n} for n in PAGE_SIZES]
                         + ([{"label": str(view.size), "value": view.size}] if view.size not in PAGE_SIZES else []),
                         value=view.size, clearable=False, style={"width": "6em"}),
        ], className="lt-buttons", style={"marginTop": "8px"}),
    ])


def page_text(view: RunsView, pages: int) -> str:
    return f"page {view.page} of {max(pages, 1)}"


# -- the table --------------------------------------------------------------------------------------

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
    """Items without their job (an older API's list) that are unfinished get it attached (status, live
    progress); today's lists carry it."""
    out = []
    for item in items:
        if item.get("job") is None and item.get("job_id") and item.get("status") in LIVE_STATUSES:
            try:
                item = {**item, "job": api.job(item["job_id"])}
            except ApiError:
                pass
        out.append(item)
    return out


def signed(value: Optional[float], significant: Optional[bool] = None) -> str:
    """An accuracy change as a signed fraction with three decimals ("+0.120"); "*" when significant."""
    if value is None:
        return "—"
    return f"{value:+.3f}" + (" *" if significant else "")


def _metric_cells(item: dict, kind: str) -> list:
    if kind == "traces":
        plan = item.get("plan")
        share = item.get("plan_share")
        plan_text = "—" if plan is None else f"train {plan}" + (f" ({share:.0%})" if share is not None else "")
        vulnerable = item.get("vulnerable_layer")
        return [html.Td(plan_text), html.Td("—" if vulnerable is None else str(vulnerable), className="lt-num")]
    best = item.get("best_allocation")
    given = item.get("best_label")
    labels = {best: given} if given and given != best else item.get("labels") or {}  # a label given at launch
    label = "—" if best is None else allocation_label(best, labels)
    benches = item.get("benchmarks") or []
    return [
        html.Td(label),
        html.Td(signed(item.get("delta_retention"), item.get("retention_significant")), className="lt-num",
                title=f"on {benches[0]}" if benches else None),
        html.Td(signed(item.get("delta_acquisition"), item.get("acquisition_significant")), className="lt-num",
                title=f"on {benches[1]}" if len(benches) > 1 else None),
    ]


def _run_kind(item: dict, kind: str) -> str:
    return "trace" if kind == "traces" else ("trial" if item.get("kind") == "trial" else "experiment")


def _actions(item: dict, kind: str, share: Optional[str]) -> html.Td:
    """Clone (the run's form, prefilled from its job) and, unless the page is a read-only share link,
    Re-run (the same stored spec, POSTed again)."""
    run_kind = _run_kind(item, kind)
    parts = []
    if item.get("job_id"):
        parts.append(dcc.Link("clone", href=rel(f"{FORMS[run_kind]}?clone={item['job_id']}"),
                              id={"type": f"{P}-clone", "id": str(item["id"])}, title="open the form with these settings"))
    if not share:
        parts.append(html.Button("re-run", id={"type": f"{P}-rerun", "kind": run_kind, "id": str(item["id"])},
                                 className="lt-button", title="launch again with the same settings",
                                 style={"padding": "0 6px", "marginLeft": "6px"}))
    return html.Td(parts)


@lru_cache(maxsize=512)
def _tag_search(kind: str, tag: str) -> str:
    """The query of the runs of ``kind`` carrying ``tag`` (a page of rows repeats a few tags: built once each)."""
    return build_search({"kind": kind if kind != "traces" else None, "tag": tag})


def _header(field: Optional[str], text: str, sort: Optional[str], kind: str) -> html.Th:
    if field is None or sort is None:
        return html.Th(text, scope="col")
    current = parse_sort(sort, SORT_FIELDS[kind])
    arrow = ("▼" if current.descending else "▲") if current.field == field else ""
    state = ("descending" if current.descending else "ascending") if current.field == field else "none"
    return html.Th(html.Button(f"{text} {arrow}".strip(), id={"type": f"{P}-sort", "field": field},
                               title=COLUMN_HELP.get(field, f"sort by {text}"),
                               style={"border": "none", "background": "none", "padding": 0, "font": "inherit",
                                      "fontWeight": "bold", "cursor": "pointer", "color": "inherit"}),
                   scope="col", **{"aria-sort": state})


def runs_table(items: list[dict], kind: str, now=None, *, sort: Optional[str] = None,
               selected: Mapping[str, Any] = (), share: Optional[str] = None) -> html.Table:
    """The list as a table: the name (the start of the id when unnamed) linking to the run, status with
    live progress, model, what, created (relative; the time itself on hover), duration, the metric
    columns, clone / re-run, and a box to select the row. With ``sort`` the sortable headers are buttons."""
    base = "/traces/" if kind == "traces" else "/experiments/"
    rows = []
    for item in items:
        job = item.get("job") or {"status": item.get("status")}
        status = item.get("status") or job.get("status")
        cell = progress_bar(job) if status in LIVE_STATUSES else status_badge(status)
        ident = str(item["id"])
        rows.append(html.Tr([
            html.Td([dcc.Link(run_name(item), href=rel(base + ident), title=f"id {ident}")]
                    + [dcc.Link(t, href=rel("/" + _tag_search(kind, t)), className="lt-tag", title=f"runs tagged {t}")
                       for t in item.get("tags") or []]),
            html.Td(cell, className="lt-status-cell"),
            html.Td(_model_name(item)),
            html.Td(_what(item, kind)),
            html.Td(relative_time(item.get("created_at"), now), title=absolute_time(item.get("created_at"))),
            html.Td(run_duration({**item, "status": status}, now)),
            *_metric_cells(item, kind),
            _actions(item, kind, share),
            html.Td(dcc.Checklist(id={"type": f"{P}-pick", "id": ident, "name": run_name(item)},
                                  options=[{"label": "", "value": ident}], value=[ident] if ident in selected else []),
                    title=f"select {run_name(item)}"),
        ]))
    columns = TRACE_COLUMNS if kind == "traces" else EXPERIMENT_COLUMNS
    header = html.Thead(html.Tr([_header(f, t, sort, kind) for f, t in columns]
                                + [html.Th("", scope="col"), html.Th("select", scope="col")]))
    return html.Table([header, html.Tbody(rows)], className="lt-table lt-runs", id=f"{P}-list")


def runs_view(view: RunsView, token: Optional[str], share: Optional[str],
              selected: Mapping[str, Any] = ()) -> tuple[list, bool, int]:
    """(the table area's children, whether a run on the page is live, the number of pages) of a view:
    one request for the page's rows, sorted, filtered and paged by the API."""
    api = client(token, share)
    try:
        page = api.get("/traces" if view.kind == "traces" else "/experiments", **view.api_params())
    except ApiError as exc:
        return [api_error_box(exc, title="The runs could not be loaded")], False, 1
    items = with_jobs(page.get("data") or [], api)
    count = int(page.get("count", len(items)))
    pages = max(1, -(-count // view.size))
    if not items:
        if count:
            return [empty_box(f"Page {view.page} is past the last page ({pages}).")], False, pages
        what = "traces" if view.kind == "traces" else "trials or experiments"
        filtered = view.status or view.q or view.model or view.tag or view.type
        hint = " matching these filters" if filtered else " yet — start one with New trace" if view.kind == "traces" else " yet"
        return [empty_box(f"No {what}{hint}.")], False, pages
    first = (view.page - 1) * view.size + 1
    noun = "trace" if view.kind == "traces" else "run"
    live = any((item.get("status") or "") in LIVE_STATUSES for item in items)
    return [html.P(f"{count} {noun}{'s' if count != 1 else ''} · {first}–{first + len(items) - 1} shown", className="lt-muted"),
            runs_table(items, view.kind, sort=view.sort, selected=selected, share=share)], live, pages


# -- selection, re-run ------------------------------------------------------------------------------

def selection_bar(kind: str, items: Mapping[str, str]) -> list:
    """What the selected runs open: Compare for traces (``/compare?traces=a,b``), each one's Report for
    trials and experiments (``/experiments/<id>/report``)."""
    if not items:
        return [html.Span("Select runs to compare them" if kind == "traces" else "Select runs to open their reports",
                          className="lt-muted")]
    ids = list(items)
    out: list = [html.Span(f"{len(ids)} selected", className="lt-muted")]
    if kind == "traces":
        out.append(dcc.Link(f"Compare ({len(ids)})", href=rel("/compare" + build_search({"traces": ids})),
                            id=f"{P}-compare", className="lt-button lt-primary"))
    else:
        out += [dcc.Link(f"Report: {name}", href=rel(f"/experiments/{ident}/report"), className="lt-button",
                         target="_blank") for ident, name in items.items()]
    out.append(html.Button("Clear", id={"type": f"{P}-clear", "kind": kind}, className="lt-button"))
    return out


def rerun_request(kind: str, detail: Mapping[str, Any]) -> tuple[str, dict]:
    """(the create route, its body) that launches a run again with its stored settings: a trace's spec
    is its create request as given; a trial's or experiment's is the job spec (paths resolved, labels
    kept), less its kind, with its allocations as the route takes them and its lineage."""
    spec = dict(detail.get("spec") or {})
    name = detail.get("name")
    rerun_name = (f"{name} (re-run)" if name else f"re-run of {short_id(detail.get('id'))}")[:200]
    if kind == "trace":
        return "/traces", {**spec, "name": rerun_name}
    spec.pop("kind", None)
    allocations = list(spec.pop("allocations", None) or [])
    if detail.get("source_trace_id"):
        spec["source_trace_id"] = detail["source_trace_id"]
    spec["name"] = rerun_name
    if kind == "trial":
        return "/trials", {**spec, "allocation": allocations[0] if allocations else spec.pop("allocation", "")}
    return "/experiments", {**spec, "allocations": allocations}


def rerun(kind: str, run_id: str, token: Optional[str]) -> html.Div:
    """Read the run and POST its settings again; a line with a link to the new run, or the API's error."""
    api = client(token, None)
    try:
        detail = api.get(("/traces/" if kind == "trace" else "/experiments/") + run_id)
        path, body = rerun_request(kind, detail)
        created = api.post(path, body)
    except ApiError as exc:
        return api_error_box(exc, title="The run could not be started again")
    base = "/traces/" if kind == "trace" else "/experiments/"
    return html.Div(["Started again as ", dcc.Link(run_name(created), href=rel(base + str(created["id"])),
                                                   id=f"{P}-rerun-link"), "."], className="lt-muted")


# -- callbacks --------------------------------------------------------------------------------------

def update_view(kind, type_, status, q, model, tag, size, _sort_clicks, _prev, _next, view_data):
    """A control changed -> the new view (the render callback draws it)."""
    trigger = ctx.triggered_id
    if isinstance(trigger, Mapping) and not (ctx.triggered and ctx.triggered[0].get("value")):
        return dash.no_update  # a header drawn anew, not clicked
    view = RunsView(**view_data) if view_data else RunsView()
    new = next_view(view, trigger, {"kind": kind, "type": type_, "status": status, "q": q, "model": model,
                                    "tag": tag, "size": size})
    return dash.no_update if new == view else asdict(new)


def render(view_data, _n_intervals, selected, share, token):
    """The view (or the poll tick) -> the table, the address bar, the pager and whether to keep polling."""
    view = RunsView(**view_data) if view_data else RunsView()
    chosen = (selected or {}).get("items") or {} if (selected or {}).get("kind") == view.kind else {}
    table, live, pages = runs_view(view, token, share, chosen)
    return (table, view.search(share), not live, view.page <= 1, view.page >= pages, page_text(view, pages),
            view.kind != "experiments")


def update_selection(values, _clear, view_data, selected):
    """A box ticked or the selection cleared -> the selected runs (id -> name; kept across pages)."""
    view = RunsView(**view_data) if view_data else RunsView()
    items = dict((selected or {}).get("items") or {}) if (selected or {}).get("kind") == view.kind else {}
    trigger = ctx.triggered_id
    if isinstance(trigger, Mapping) and trigger.get("type") == f"{P}-clear":
        if not (ctx.triggered and ctx.triggered[0].get("value")):
            return dash.no_update
        items = {}
    else:
        for box, value in zip(ctx.inputs_list[0] if ctx.inputs_list else [], values or []):
            ident, name = box["id"]["id"], box["id"].get("name") or box["id"]["id"]
            if value:
                items[ident] = name
            else:
                items.pop(ident, None)
    new = {"kind": view.kind, "items": items}
    return dash.no_update if new == selected else new


def show_selection(selected, view_data):
    kind = (view_data or {}).get("kind") or "traces"
    return selection_bar(kind, (selected or {}).get("items") or {} if (selected or {}).get("kind") == kind else {})


def on_rerun(_clicks, token):
    trigger = ctx.triggered_id
    if not isinstance(trigger, Mapping) or not (ctx.triggered and ctx.triggered[0].get("value")):
        return dash.no_update
    return rerun(trigger["kind"], trigger["id"], token)


def register_callbacks(app: dash.Dash) -> None:
    app.callback(Output(f"{P}-view", "data"),
                 Input(f"{P}-kind", "value"), Input(f"{P}-type", "value"), Input(f"{P}-status", "value"),
                 Input(f"{P}-q", "value"), Input(f"{P}-model", "value"), Input(f"{P}-tag", "value"),
                 Input(f"{P}-size", "value"), Input({"type": f"{P}-sort", "field": ALL}, "n_clicks"),
                 Input(f"{P}-prev", "n_clicks"), Input(f"{P}-next", "n_clicks"), State(f"{P}-view", "data"),
                 prevent_initial_call=True)(update_view)
    app.callback(Output(f"{P}-table", "children"), Output(f"{P}-url", "search"), Output(f"{P}-interval", "disabled"),
                 Output(f"{P}-prev", "disabled"), Output(f"{P}-next", "disabled"), Output(f"{P}-page", "children"),
                 Output(f"{P}-type", "disabled"),
                 Input(f"{P}-view", "data"), Input(f"{P}-interval", "n_intervals"), State(f"{P}-selected", "data"),
                 State(f"{P}-share", "data"), State("auth-token", "data"),
                 prevent_initial_call=True)(render)
    app.callback(Output(f"{P}-selected", "data"),
                 Input({"type": f"{P}-pick", "id": ALL, "name": ALL}, "value"),
                 Input({"type": f"{P}-clear", "kind": ALL}, "n_clicks"),
                 State(f"{P}-view", "data"), State(f"{P}-selected", "data"),
                 prevent_initial_call=True)(update_selection)
    app.callback(Output(f"{P}-selection", "children"), Input(f"{P}-selected", "data"), Input(f"{P}-view", "data"),
                 prevent_initial_call=True)(show_selection)
    app.callback(Output(f"{P}-rerun-msg", "children"),
                 Input({"type": f"{P}-rerun", "kind": ALL, "id": ALL}, "n_clicks"), State("auth-token", "data"),
                 prevent_initial_call=True)(on_rerun)
