"""Trace page: ``/traces/<trace_id>?task=&metric=&pert=&layers=&norm=`` — the URL is the view.

First the verdict: the freeze plan, its trainable share and how sure it is (the bootstrap over prompts
the engine stored), the particles that rest on too few prompts, and one depth strip (plan, particle
histogram, sensitivity curve, vulnerable layer, each in its own row). Then the line view (the chosen
metric per task against depth: probability, log rank, top-k accuracy, entropy, KL to the final layer),
heatmaps (layers x tasks,
layers x prompts of one task), the logit-lens grid of one prompt, the live lens (type any prompt, or
pick one of the trace's, and its layer x position lens comes back from a short ``lens`` job on the
worker; two side by side), the stability curve, the CKA matrix and the freeze plan with a button that
opens the trial form with the plan's ranges. While the trace runs, a progress bar polls the job; when
it finishes, the figures appear. The header names the trace (editable), says when it ran, and links
the trials and experiments launched from it.

The page reads the trace's overview (no per-prompt arrays) and the selected task's prompts from the
API, never the whole result: for 10 tasks x 200 prompts that is about 2.5 MB instead of 27 MB.
"""

from __future__ import annotations

from typing import Any, Optional

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from frontend.api_client import ApiError, ResultCache
from frontend.components import (
    LIVE_STATUSES,
    api_error_box,
    build_search,
    client,
    empty_box,
    error_box,
    figure_card,
    make_share,
    parse_window,
    progress_bar,
    rel,
    share_bar,
    table,
    to_csv,
    to_json,
    truthy,
)
from frontend.viz import export as tx
from frontend.viz import trace as tv
from frontend.viz.common import METRICS, graph_config, kinds_caption
from frontend.viz.names import absolute_time, relative_time, run_duration, run_name, short_id
from layertracer.spec.jobs import LENS_MAX_PROMPT_CHARS, LENS_MAX_TARGET_CHARS, LENS_MAX_TOKENS
from layertracer.spec.uncertainty import PLAN_STABLE_SHARE, interval_text, plan_stability_text, trainable_share

dash.register_page(__name__, path_template="/traces/<trace_id>", name="Trace", title="Trace · LayerTracer")

P = "trace"
POLL_MS = 1500
LENS_POLL_MS = 300  # a live lens takes a second or two: poll its job often
LENS_SIDES = ("a", "b")  # two prompts side by side
FINISHED = ("succeeded", "failed", "cancelled")


# -- figures ------------------------------------------------------------------------------------------

# A finished trace never changes, so each figure is a pure function of (trace, view parameters): a view
# drawn once is served again without rebuilding (a reload, a teammate opening a shared link).
FIGURE_CACHE = ResultCache(size=48)


class Figures:
    """The six figures of one finished trace, memoised per view when ``source`` (the API, the trace id and
    the credentials that read it) is given. ``result``: the overview, with the shown task's prompts merged."""

    def __init__(self, result: dict, source: Optional[tuple] = None) -> None:
        self.result = result
        self.source = source

    def _get(self, name: str, params: tuple, build):
        if self.source is None:
            return build()
        key = (self.source, name, params)
        figure = FIGURE_CACHE.get(key)
        if figure is None:
            figure = build()
            FIGURE_CACHE.put(key, figure)
        return figure

    def verdict(self, norm: bool) -> Any:
        return self._get("verdict", (norm,), lambda: tv.verdict_figure(self.result, normalized=norm))

    def plan(self, norm: bool, window) -> Any:
        return self._get("plan", (norm, tuple(window or ())),
                         lambda: tv.plan_figure(self.result, normalized=norm, window=window))

    def lines(self, metric: str, norm: bool, window) -> Any:
        return self._get("lines", (metric, norm, tuple(window or ())),
                         lambda: tv.depth_lines(self.result, metric, normalized=norm, window=window))

    def tasks(self, metric: str, norm: bool, window) -> Any:
        return self._get("tasks", (metric, norm, tuple(window or ())),
                         lambda: tv.task_heatmap(self.result, metric, normalized=norm, window=window))

    def prompts(self, task: Optional[str], metric: str, norm: bool, window) -> Any:
        return self._get("prompts", (task, metric, norm, tuple(window or ())),
                         lambda: tv.prompt_heatmap(self.result, task, metric, normalized=norm, window=window))

    def stability(self, pert, norm: bool, window) -> Any:
        return self._get("stability", (tuple(pert or ()), norm, tuple(window or ())),
                         lambda: tv.stability_figure(self.result, pert or [], normalized=norm, window=window))

    def position(self, norm: bool, window=None) -> Any:
        return self._get("position", (norm, tuple(window or ())), lambda: tv.position_grid(self.result, normalized=norm, window=window))

    def similarity(self, norm: bool, window) -> Any:
        return self._get("similarity", (norm, tuple(window or ())),
                         lambda: tv.similarity_figure(self.result, normalized=norm, window=window))


def _source(trace_id: str, share: Optional[str], token: Optional[str]) -> tuple:
    api = client(token, share)
    return (api.base_url, trace_id, api.token, api.share)


# -- view state ---------------------------------------------------------------------------------------

def view_from_query(result: dict, query: dict) -> dict[str, Any]:
    """The view state from the URL query, made valid for this result (unknown values fall back)."""
    L = tv.num_layers(result)
    tasks = tv.task_names(result)
    perts = tv.perturbation_names(result)
    task = query.get("task") if query.get("task") in tasks else (tasks[0] if tasks else None)
    metric = query.get("metric") if query.get("metric") in METRICS else "prob"
    chosen = [p for p in str(query.get("pert") or "").split(",") if p in perts] if query.get("pert") else perts
    window = parse_window(query.get("layers"), L) or [0, L - 1]
    return {"task": task, "metric": metric, "pert": chosen, "layers": window, "norm": truthy(query.get("norm"))}


def view_search(task: Optional[str], metric: Optional[str], pert: Optional[list], window: Optional[list],
                norm: Optional[list], num_layers: int, all_perts: list[str], share: Optional[str]) -> str:
    """The URL query of a view; defaults are left out so links stay short."""
    params: dict[str, Any] = {"task": task, "metric": metric if metric and metric != "prob" else None}
    if pert is not None and sorted(pert) != sorted(all_perts):
        params["pert"] = ",".join(pert) if pert else "none"
    if window and (window[0] != 0 or window[1] != num_layers - 1):
        params["layers"] = f"{window[0]}-{window[1]}"
    params["norm"] = bool(norm)
    params["share"] = share
    return build_search(params)


# -- the page -------------------------------------------------------------------------------------------

def layout(trace_id: Optional[str] = None, token: Optional[str] = None, **query: Any) -> html.Div:
    share = query.get("share")
    head = [
        dcc.Store(id=f"{P}-id", data=trace_id),
        dcc.Store(id=f"{P}-share", data=share),
        dcc.Store(id=f"{P}-query", data={k: v for k, v in query.items() if isinstance(v, str)}),
        dcc.Location(id=f"{P}-url", refresh=False),
        dcc.Download(id=f"{P}-download"),
    ]
    if not trace_id or trace_id == "none":
        return html.Div(head + [error_box("No trace id in the address.", title="Not found")])
    api = client(token, share)
    try:
        meta = api.trace(trace_id)
    except ApiError as exc:
        return html.Div(head + [html.H1(f"Trace {trace_id}"), api_error_box(exc, title="The trace could not be loaded")])
    finished = meta.get("status") in FINISHED
    body = body_for(meta, query, token, share)
    return html.Div(head + [
        header(meta, _runs(trace_id, token, share), share),
        dcc.Interval(id=f"{P}-interval", interval=POLL_MS, disabled=finished),
        html.Div(body, id=f"{P}-body"),
    ])


def heading(meta: dict) -> str:
    """The page's title: the trace's name, or "Trace <short id>" when it has none."""
    return run_name(meta) if (meta.get("name") or "").strip() else f"Trace {run_name(meta)}"


def header(meta: dict, runs: Optional[list] = None, share: Optional[str] = None) -> html.Div:
    """Name, model, relative times (the exact time on hover), the runs launched from this trace, the
    name and notes editor, the share bar."""
    model = meta.get("model") or {}
    times = [html.Span(" · created "),
             html.Span(relative_time(meta.get("created_at")), title=absolute_time(meta.get("created_at")),
                       id=f"{P}-created")]
    if meta.get("finished_at"):
        times += [html.Span(" · finished "),
                  html.Span(relative_time(meta.get("finished_at")), title=absolute_time(meta.get("finished_at"))),
                  html.Span(f" · took {run_duration(meta)}")]
    return html.Div([
        html.H1(heading(meta), id=f"{P}-title"),
        html.P([
            html.Span(f"trace {short_id(meta.get('id'))} · model {model.get('name') or model.get('source') or '?'}"),
            *times,
            *[html.Span([" · ", html.Span(t, className="lt-tag")]) for t in meta.get("tags") or []],
            html.Span(" · "),
            dcc.Link("compare with other traces", href=rel("/compare") + build_search({"traces": meta.get("id")}),
                     id=f"{P}-compare"),
        ], className="lt-muted"),
        runs_view(runs, share),
        notes_view(meta),
        share_bar(P),
    ], className="lt-page-head")


def runs_view(runs: Optional[list], share: Optional[str]) -> html.P:
    """"Runs launched from this trace:" and a link to each trial / experiment (its name, kind, status)."""
    if runs is None:
        return html.P("The runs launched from this trace could not be listed.", className="lt-muted", id=f"{P}-runs")
    if not runs:
        return html.P("No trial or experiment has been launched from this trace yet.", className="lt-muted",
                      id=f"{P}-runs")
    links: list = [html.Strong("Runs launched from this trace: ")]
    for index, run in enumerate(runs):
        if index:
            links.append(", ")
        links.append(dcc.Link(f"{run_name(run)} ({run.get('kind') or 'run'}, {run.get('status') or '?'})",
                              href=rel(f"/experiments/{run['id']}") + build_search({"share": share}),
                              title=f"created {absolute_time(run.get('created_at'))}"))
    return html.P(links, id=f"{P}-runs")


def notes_view(meta: dict) -> html.Details:
    """The trace's name and notes, editable (Save PATCHes the trace: a write, an API token)."""
    return html.Details([
        html.Summary("Name and notes"),
        html.Div([
            html.Label("Name", htmlFor=f"{P}-name"),
            dcc.Input(id=f"{P}-name", value=meta.get("name") or "", maxLength=200, className="lt-input"),
            html.Label("Notes", htmlFor=f"{P}-notes"),
            dcc.Textarea(id=f"{P}-notes", value=meta.get("notes") or "", maxLength=10_000, className="lt-input"),
            html.Button("Save", id=f"{P}-save", className="lt-button"),
            html.Span(id=f"{P}-save-msg", className="lt-muted"),
        ], className="lt-notes-form"),
    ], id=f"{P}-notes-box", open=bool(meta.get("notes")))


def _runs(trace_id: str, token: Optional[str], share: Optional[str]) -> Optional[list]:
    try:
        return list(client(token, share).trace_runs(trace_id).get("data") or [])
    except ApiError:
        return None


def body_for(meta: dict, query: dict, token: Optional[str], share: Optional[str]) -> list:
    """The page body for a trace in any state: progress while it runs, the error when it failed, the
    figures when it succeeded."""
    status = meta.get("status")
    job = meta.get("job") or {"status": status}
    if status != "succeeded":
        parts = [progress_bar(job, id=f"{P}-progress")]
        if status in LIVE_STATUSES:
            parts.append(html.Button("Cancel the trace", id=f"{P}-cancel", className="lt-button lt-secondary"))
            parts.append(html.Span(id=f"{P}-cancel-msg", className="lt-muted"))
            parts.append(empty_box("The figures appear here when the trace finishes."))
        elif status == "cancelled":
            parts.append(empty_box("This trace was cancelled; there is nothing to show."))
        return parts
    try:
        overview = _overview(meta["id"], share, token, checked=True)  # meta was just read with them
        view = view_from_query(overview, query)
        result = _with_task(overview, meta["id"], view["task"], share, token)
    except ApiError as exc:
        return [api_error_box(exc, title="The result could not be loaded")]
    return figures_view(meta, result, view, source=_source(meta["id"], share, token))


def _option(value: str) -> dict:
    return {"label": value, "value": value}


def figures_view(meta: dict, result: dict, view: dict, source: Optional[tuple] = None) -> list:
    figures = Figures(result, source)
    L = tv.num_layers(result)
    tasks = tv.task_names(result)
    perts = tv.perturbation_names(result)
    plan = result.get("freeze_plan") or {}
    model = meta.get("model") or {}
    marks_step = max(1, L // 12)
    controls = html.Div([
        html.Div([html.Label("Task", htmlFor=f"{P}-task"),
                  dcc.Dropdown(id=f"{P}-task", options=[_option(t) for t in tasks], value=view["task"], clearable=False)],
                 className="lt-field lt-w-task"),
        html.Div([html.Label("Metric", id=f"{P}-metric-label"),
                  dcc.RadioItems(id=f"{P}-metric", options=[{"label": METRICS[m][0], "value": m} for m in
                                                            tv.PAGE_METRICS + tuple(m for m in [view["metric"]] if m not in tv.PAGE_METRICS)],
                                 value=view["metric"], inline=True)], className="lt-field"),
        html.Div([html.Label("Perturbations shown", id=f"{P}-pert-label"),
                  dcc.Checklist(id=f"{P}-pert", options=[_option(p) for p in perts], value=view["pert"], inline=True)],
                 className="lt-field"),
        html.Div([html.Label("Depth axis", id=f"{P}-norm-label"),
                  dcc.Checklist(id=f"{P}-norm", options=[{"label": "normalised depth (l+1)/L", "value": "norm"}],
                                value=["norm"] if view["norm"] else [], inline=True)], className="lt-field"),
        html.Div([html.Label("Layer window", id=f"{P}-window-label"),
                  dcc.RangeSlider(id=f"{P}-window", min=0, max=L - 1, step=1, value=view["layers"],
                                  marks={l: str(l) for l in range(0, L, marks_step)}, allowCross=False,
                                  tooltip={"placement": "bottom"})], className="lt-field lt-w-window"),
    ], className="lt-controls", role="group", **{"aria-label": "view settings"})
    norm, window = view["norm"], view["layers"]
    trial_href = rel("/new/trial") + build_search({
        "model": model.get("id"), "ranges": plan.get("train_ranges"), "trace": meta.get("id"),
    })
    summary = html.Div([
        html.P([html.Strong("Model: "), f"{result['model'].get('architecture', '?')} · {L} blocks "
                f"({kinds_caption(result.get('block_kinds') or [])}) · fingerprint {str(result['model'].get('fingerprint', '?'))[:12]}…"]),
        html.P([html.Strong("Vulnerable layer: "), str(result.get("vulnerable_layer")),
                html.Strong(" · Task particles: "),
                ", ".join(f"{n}: {t.get('task_particle') if t.get('task_particle') is not None else 'none'}"
                          for n, t in result["tasks"].items())]),
        html.P(tv.particle_legend(result), className="lt-legend", id=f"{P}-legend"),
        provenance(meta, result),
    ], className="lt-summary")
    plan_card = html.Div([
        figure_card(f"{P}-plan", figures.plan(norm, window), page=P, what="plan",
                    data_formats=("csv", "json")),
        html.Ul([html.Li(r) for r in plan.get("reasons") or []], className="lt-reasons"),
        dcc.Link("Launch a trial with this plan →", href=trial_href, id=f"{P}-launch", className="lt-button lt-primary"),
    ], className="lt-card")
    return [
        verdict(result, figures, norm),
        summary,
        controls,
        plan_card,
        figure_card(f"{P}-lines", figures.lines(view["metric"], norm, window), page=P, what="lines",
                    note="The metric chosen above, per task against depth (the heatmap below shows the same numbers)."),
        figure_card(f"{P}-tasks", figures.tasks(view["metric"], norm, window), page=P,
                    what="tasks"),
        figure_card(f"{P}-prompts", figures.prompts(view["task"], view["metric"], norm, window),
                    page=P, what="prompts", note="Hover a cell for the prompt, its target and the top lens tokens."),
        figure_card(f"{P}-stability", figures.stability(view["pert"], norm, window), page=P,
                    what="stability"),
        figure_card(f"{P}-position", figures.position(norm, window), page=P, what="position"),
        live_lens_panel(result),
        figure_card(f"{P}-similarity", figures.similarity(norm, window), page=P,
                    what="similarity"),
    ]


def verdict(result: dict, figures: Figures, norm: bool) -> html.Div:
    """The answer first: the plan, how much of the model it trains, how sure it is (the share of the
    bootstrap resamples that give it, the other plans they give), the particles that rest on too few
    prompts, and the one depth strip of plan, particles, sensitivity and vulnerable layer."""
    plan = result.get("freeze_plan") or {}
    L = tv.num_layers(result)
    share = trainable_share(plan)
    stability = plan.get("stability") or {}
    if stability:
        stable = stability.get("share", 0) >= PLAN_STABLE_SHARE
        badge = html.Span(f"{'stable' if stable else 'fragile'}: {stability['share']:.0%} of resamples",
                          className=f"lt-badge {'lt-badge-ok' if stable else 'lt-badge-bad'}", id=f"{P}-verdict-badge")
    else:
        badge = html.Span("stability unknown", className="lt-badge lt-badge-muted", id=f"{P}-verdict-badge")
    trained = len(plan.get("train_layers") or [])
    lines = [
        html.H2(["Verdict: train ", html.Strong(plan.get("train_ranges") or "nothing"), " · freeze ",
                 html.Strong(plan.get("freeze_ranges") or "nothing"), " ", badge], id=f"{P}-verdict-plan"),
        html.P(f"{trained} of {L} blocks trainable" + (f" ({share:.0%} of the blocks)" if share is not None else ""),
               id=f"{P}-verdict-share"),
        html.P(plan_stability_text(plan) or "This trace was written before the bootstrap over prompts existed: "
               "how often its prompts give this plan is not known.", id=f"{P}-verdict-stability"),
    ]
    warnings = [w for w in ((t.get("particle_bootstrap") or {}).get("warning") for t in result["tasks"].values()) if w]
    if warnings:
        lines.append(html.Ul([html.Li(w) for w in warnings], className="lt-legend", id=f"{P}-verdict-warnings"))
    rows = []
    for name, t in result["tasks"].items():
        boot = t.get("particle_bootstrap") or {}
        agreement = boot.get("agreement")
        rows.append((name, str(t.get("num_prompts", len(t.get("prompts") or []))),
                     "none" if t.get("task_particle") is None else str(t["task_particle"]), interval_text(boot),
                     "—" if agreement is None else f"{agreement:.0%}"))
    level = next((int(round(100 * t["particle_bootstrap"]["level"])) for t in result["tasks"].values()
                  if t.get("particle_bootstrap")), 95)
    lines.append(html.Details([
        html.Summary("Task particles and how sure each is"),
        table(["task", "prompts", "particle", f"{level}% interval", "same particle in resamples"], rows,
              id=f"{P}-verdict-particles"),
    ], open=bool(warnings)))
    lines.append(figure_card(f"{P}-verdict", figures.verdict(norm), page=P, what="verdict"))
    return html.Div(lines, className="lt-card", id=f"{P}-verdict-panel")


# -- the live lens ---------------------------------------------------------------------------------------

def live_lens_panel(result: dict) -> html.Div:
    """Type a prompt (and a target), or take one of the trace's, and see its layer x position lens; two
    prompts side by side. Each runs as a short ``lens`` job on the worker (never torch here)."""
    tasks = tv.task_names(result)
    traced_with = (result.get("lens") or {}).get("kind") or (result.get("options") or {}).get("lens") or "logit"
    sides = []
    for side in LENS_SIDES:
        sides.append(html.Div([
            html.H3(f"Prompt {side.upper()}"),
            html.Div([
                html.Label("Take a prompt of this trace: task and prompt number", htmlFor=f"{P}-lens-task-{side}"),
                html.Div([
                    dcc.Dropdown(id=f"{P}-lens-task-{side}", options=[_option(t) for t in tasks], placeholder="task",
                                 clearable=True, style={"minWidth": "180px", "flex": "1"}),
                    html.Label("#", htmlFor=f"{P}-lens-index-{side}"),
                    dcc.Input(id=f"{P}-lens-index-{side}", type="number", min=0, step=1, value=0, className="lt-input",
                              style={"width": "6em"}),
                ], style={"display": "flex", "gap": "8px", "alignItems": "center"}),
            ], className="lt-field"),
            html.Label("Prompt", htmlFor=f"{P}-lens-prompt-{side}"),
            dcc.Textarea(id=f"{P}-lens-prompt-{side}", value="", maxLength=LENS_MAX_PROMPT_CHARS, className="lt-input",
                         placeholder=f"any text, up to {LENS_MAX_TOKENS} tokens", style={"width": "100%", "height": "4.5em"}),
            html.Label("Target (optional: colours the grid by its probability)", htmlFor=f"{P}-lens-target-{side}"),
            dcc.Input(id=f"{P}-lens-target-{side}", value="", maxLength=LENS_MAX_TARGET_CHARS, className="lt-input"),
            html.Div([
                html.Button("Show the lens", id=f"{P}-lens-run-{side}", className="lt-button lt-primary"),
                html.Button("CSV", id=f"{P}-lens-dl-{side}", className="lt-small",
                            title="Download this lens (layer, position, tokens, probabilities) as CSV"),
                html.Span(id=f"{P}-lens-msg-{side}", className="lt-muted", role="status"),
            ], style={"display": "flex", "gap": "8px", "alignItems": "center", "margin": "6px 0"}),
            dcc.Store(id=f"{P}-lens-job-{side}"),
            dcc.Store(id=f"{P}-lens-label-{side}", data=side.upper()),
            dcc.Store(id=f"{P}-lens-result-{side}"),
            dcc.Download(id=f"{P}-lens-download-{side}"),
            dcc.Interval(id=f"{P}-lens-poll-{side}", interval=LENS_POLL_MS, disabled=True),
            dcc.Graph(id=f"{P}-lens-{side}", figure=tv.live_lens_figure(None), config=graph_config(f"{P}-lens-{side}")),
        ], className="lt-card", id=f"{P}-lens-side-{side}"))
    return html.Div([
        html.H2("Live logit lens"),
        html.P("The lens of any prompt on this trace's model, at every layer and position, computed by the "
               "worker in a second or two. Hover a cell for its top-1 token and the probabilities.",
               className="lt-note"),
        html.Div([
            html.Div([html.Label("Colour by", id=f"{P}-lens-colour-label"),
                      dcc.RadioItems(id=f"{P}-lens-colour", value="top1", inline=True,
                                     options=[{"label": "top-1 token's probability", "value": "top1"},
                                              {"label": "the target's probability", "value": "target"}])],
                     className="lt-field"),
            html.Div([html.Label("Lens", id=f"{P}-lens-kind-label"),
                      dcc.RadioItems(id=f"{P}-lens-kind", value=traced_with, inline=True,
                                     options=[{"label": "logit", "value": "logit"},
                                              {"label": "tuned (the model's translators)", "value": "tuned"}])],
                     className="lt-field", title=f"this trace was read with the {traced_with} lens"),
            html.Div([html.Label("Positions shown (the last ones)", htmlFor=f"{P}-lens-last"),
                      dcc.Input(id=f"{P}-lens-last", type="number", min=1, max=LENS_MAX_TOKENS, step=1,
                                value=tv.LIVE_LAST, debounce=True, className="lt-input", style={"width": "6em"})],
                     className="lt-field"),
        ], style={"display": "flex", "gap": "24px", "flexWrap": "wrap"}),
        html.Div(sides, style={"display": "grid", "gridTemplateColumns": "repeat(auto-fit, minmax(440px, 1fr))",
                               "gap": "12px"}),
    ], className="lt-card", id=f"{P}-lens-panel")


def lens_pick(task, index, trace_id, share, token):
    """A task and prompt number of the trace -> that prompt and its target in the fields, and a message."""
    if not task:
        return dash.no_update, dash.no_update, ""
    try:
        data = client(token, share).trace_task(trace_id, task)
    except ApiError as exc:
        return dash.no_update, dash.no_update, f"Could not read the task: {exc}"
    prompts, targets = data.get("prompts") or [], data.get("targets") or []
    if index is None or not 0 <= int(index) < len(prompts):
        return dash.no_update, dash.no_update, f"{task} has prompts 0-{len(prompts) - 1}"
    return prompts[int(index)], targets[int(index)] if int(index) < len(targets) else "", f"{task} prompt #{int(index)}"


def lens_submit(n_clicks, prompt, target, kind, trace_id, token):
    """Show the lens -> queue a ``lens`` job (the chosen lens; a write: the API token) and start polling it."""
    if not n_clicks:
        return dash.no_update, dash.no_update, dash.no_update
    if not (prompt or "").strip():
        return dash.no_update, True, "Type a prompt first."
    try:
        answer = client(token).submit_lens(trace_id, prompt, (target or None), kind or "logit")
    except ApiError as exc:
        return dash.no_update, True, f"Not run: {exc}"
    return answer["job"]["id"], False, "Queued…"


def lens_poll(n_intervals, job_id, trace_id, share, token):
    """While the lens job runs: its state; when it ends, its result (and the polling stops)."""
    if not job_id:
        return dash.no_update, True, dash.no_update
    try:
        answer = client(token, share).lens(trace_id, job_id)
    except ApiError as exc:
        return dash.no_update, True, f"Could not read the lens: {exc}"
    job = answer.get("job") or {}
    status = job.get("status")
    if status == "succeeded" and answer.get("result"):
        lens = answer["result"]
        return lens, True, (f"{len(lens['tokens'])} tokens × {lens['num_layers']} layers"
                            + (f" in {_seconds(job)}" if _seconds(job) else ""))
    if status in ("failed", "cancelled"):
        return dash.no_update, True, f"The lens {status}: {job.get('error') or status}"
    return dash.no_update, False, "Running…" if status == "running" else "Queued…"


def _seconds(job: dict) -> str:
    """How long a job took from its submission (what a person waited), as "1.2 s"; "" when unknown."""
    from frontend.viz.names import parse_time

    start, end = parse_time(job.get("created_at")), parse_time(job.get("finished_at"))
    return f"{(end - start).total_seconds():.1f} s" if start and end else ""


def lens_figure(lens, colour, norm, last, label):
    """The lens result, the colour, the depth axis or the positions shown -> this side's figure."""
    shown = int(last) if isinstance(last, (int, float)) and 1 <= last <= LENS_MAX_TOKENS else tv.LIVE_LAST
    return tv.live_lens_figure(lens, colour=colour or "top1", normalized=bool(norm), last=shown, label=label)


def lens_rows(lens: dict) -> tuple[list[str], list[list]]:
    """The live lens as a table: one row per layer x position."""
    header = ["layer", "position", "token", "top1_token", "top1_prob", "target_token", "target_prob"]
    rows = []
    for layer in range(int(lens["num_layers"])):
        for position, token in enumerate(lens["tokens"]):
            target = lens.get("target_prob")
            rows.append([layer, position, token, lens["top1_tokens"][layer][position], lens["top1_probs"][layer][position],
                         lens.get("target_token") or "", "" if target is None else target[layer][position]])
    return header, rows


def lens_download(n_clicks, lens, label, trace_id):
    """CSV -> the lens shown on this side, one row per layer x position."""
    if not n_clicks or not lens:
        return dash.no_update
    header, rows = lens_rows(lens)
    side = str(label or "lens").lower()
    return dict(content=to_csv(header, rows), filename=f"trace-{trace_id}-lens-{side}.csv", type="text/csv")


def save_notes(n_clicks, name, notes, trace_id, token):
    """Save -> PATCH the trace's name and notes (its tags stay); the heading shows the new name."""
    if not n_clicks:
        return dash.no_update, dash.no_update
    try:
        meta = client(token).update_run("trace", trace_id, {"name": (name or "").strip() or None, "notes": notes or ""})
    except ApiError as exc:
        return f"Not saved: {exc}", dash.no_update
    return "Saved.", heading(meta)


# Entries of the result's timings that count things rather than seconds.
TIMING_COUNTS = ("oom_batch_splits", "resumed_prompts")


def provenance(meta: dict, result: dict) -> html.Details:
    """Where every number on the page comes from: model hash, code version, seeds, options, spec."""
    prov = meta.get("provenance") or {}
    options = result.get("options") or {}
    timings = result.get("timings") or {}
    rows = [
        ("model", f"{result['model'].get('source', '?')} ({result['model'].get('architecture', '?')}, "
                  f"{result['model'].get('dtype', '?')} on {result['model'].get('device', '?')})"),
        ("model fingerprint (sha256)", str(prov.get("model_fingerprint") or result["model"].get("fingerprint", "—"))),
        ("code version", str(prov.get("code_version") or result.get("version", "—"))),
        ("seeds", ", ".join(str(x) for x in prov.get("seeds") or [options.get("seed", "—")])),
        ("perturbations", ", ".join(p if isinstance(p, str) else str(p.get("name", p))
                                    for p in options.get("perturbations") or []) or "—"),
        ("lens and particle rule", f"top-{options.get('top_k', '?')} tokens, particle delta {options.get('particle_delta', '?')}, "
                                   f"floor {options.get('particle_floor', '?')}; stability interval "
                                   f"{options.get('ci_level', '?')} over {options.get('bootstrap_resamples', '?')} resamples"),
        ("prompts", ", ".join(f"{n}: {t.get('num_prompts', len(t.get('prompts') or []))}" for n, t in result["tasks"].items())),
        ("timings (s)", ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k not in TIMING_COUNTS)),
        ("resumed", f"{int(timings.get('resumed_prompts') or 0)} prompts came from the checkpoint of a stopped attempt"
                    if timings.get("resumed_prompts") else "no (traced in one go)"),
    ]
    return html.Details([
        html.Summary("Provenance: model hash, code version, seeds, options"),
        table(["what", "value"], rows, id=f"{P}-provenance"),
        html.Pre(to_json({"spec": meta.get("spec"), "options": options}), className="lt-pre"),
    ], className="lt-provenance")


# -- callbacks (plain functions; attached by register_callbacks) -----------------------------------------

def poll(n_intervals, trace_id, query, share, token):
    """While the trace runs: refresh the progress; when it has finished, swap in the figures."""
    try:
        meta = client(token, share).trace(trace_id)
    except ApiError as exc:
        return [api_error_box(exc, title="The trace could not be loaded")], False
    finished = meta.get("status") in FINISHED
    return body_for(meta, query or {}, token, share), finished


def _overview(trace_id, share, token, checked: bool = False) -> dict:
    """The trace's overview: every figure but the layers x prompts one draws from it.

    The overview, the tasks and the figures come from caches; with a token or a share link, the API is
    asked first whether these credentials may still read the trace (a revoked link must stop working),
    unless the caller has just asked (``checked``)."""
    api = client(token, share)
    if not checked and (api.token or api.share):
        api.trace(trace_id)
    return api.trace_overview(trace_id)


def _with_task(overview: dict, trace_id, task, share, token) -> dict:
    """The overview with ``task``'s per-prompt arrays (for the layers x prompts figure and its export)."""
    if not task or task not in overview.get("tasks", {}):
        return overview
    return tv.with_task(overview, task, client(token, share).trace_task(trace_id, task))


def update_figures(metric, pert, window, norm, trace_id, share, token):
    """Metric / perturbations / window / normalisation -> the figures that depend on them."""
    figures = Figures(_overview(trace_id, share, token), _source(trace_id, share, token))
    normalized = bool(norm)
    return (
        figures.tasks(metric or "prob", normalized, window),
        figures.stability(pert or [], normalized, window),
        figures.similarity(normalized, window),
        figures.plan(normalized, window),
        figures.position(normalized, window),
    )


def update_lines(metric, window, norm, trace_id, share, token):
    """Metric / window / depth axis -> the line view."""
    return Figures(_overview(trace_id, share, token), _source(trace_id, share, token)).lines(metric or "prob", bool(norm), window)


def update_verdict(norm, trace_id, share, token):
    """The depth axis (layer index or normalised depth) -> the verdict strip."""
    return Figures(_overview(trace_id, share, token), _source(trace_id, share, token)).verdict(bool(norm))


def update_prompts(task, metric, window, norm, trace_id, share, token):
    result = _with_task(_overview(trace_id, share, token), trace_id, task, share, token)
    return Figures(result, _source(trace_id, share, token)).prompts(task, metric or "prob", bool(norm), window)


def sync_url(task, metric, pert, window, norm, trace_id, share, token):
    """The view state -> the address bar's query (without reloading the page)."""
    result = _overview(trace_id, share, token)
    return view_search(task, metric, pert, window, norm, tv.num_layers(result), tv.perturbation_names(result), share)


def download(n_clicks, task, metric, trace_id, share, token):
    trigger = ctx.triggered_id
    if not trigger or not any(n_clicks or []):
        return dash.no_update
    result = _overview(trace_id, share, token)
    if trigger["what"] == "prompts":
        result = _with_task(result, trace_id, task, share, token)
    return export(result, trigger["what"], trigger["fmt"], task=task, metric=metric or "prob", trace_id=trace_id)


def export(result: dict, what: str, fmt: str, *, task: Optional[str], metric: str, trace_id: str) -> dict:
    """dcc.Download data for one figure's data as CSV or JSON."""
    name = f"trace-{trace_id}-{what}" + (f"-{task}" if what == "prompts" and task else "")
    if fmt == "csv":
        header, rows = tx.rows_for(result, what, metric=metric, task=task)
        return dict(content=to_csv(header, rows), filename=f"{name}.csv", type="text/csv")
    return dict(content=to_json(tx.json_for(result, what, task=task)), filename=f"{name}.json", type="application/json")


def share(n_clicks, href, pathname, search, trace_id, token):
    if not n_clicks:
        return dash.no_update, dash.no_update
    return make_share("trace", trace_id, href, pathname, search, token)


def cancel(n_clicks, trace_id, share_token, token):
    if not n_clicks:
        return dash.no_update
    try:
        meta = client(token, share_token).trace(trace_id)
        client(token).cancel_job(meta["job"]["id"])
    except (ApiError, KeyError, TypeError) as exc:
        return f"Could not cancel: {exc}"
    return "Cancel requested."


def register_callbacks(app: dash.Dash) -> None:
    auth = State("auth-token", "data")
    ident = [State(f"{P}-id", "data"), State(f"{P}-share", "data"), auth]
    app.callback(Output(f"{P}-body", "children"), Output(f"{P}-interval", "disabled"),
                 Input(f"{P}-interval", "n_intervals"), State(f"{P}-id", "data"), State(f"{P}-query", "data"),
                 State(f"{P}-share", "data"), auth, prevent_initial_call=True)(poll)
    app.callback(Output(f"{P}-tasks", "figure"), Output(f"{P}-stability", "figure"), Output(f"{P}-similarity", "figure"),
                 Output(f"{P}-plan", "figure"), Output(f"{P}-position", "figure"),
                 Input(f"{P}-metric", "value"), Input(f"{P}-pert", "value"), Input(f"{P}-window", "value"),
                 Input(f"{P}-norm", "value"), *ident, prevent_initial_call=True)(update_figures)
    app.callback(Output(f"{P}-verdict", "figure"), Input(f"{P}-norm", "value"), *ident,
                 prevent_initial_call=True)(update_verdict)
    app.callback(Output(f"{P}-lines", "figure"), Input(f"{P}-metric", "value"), Input(f"{P}-window", "value"),
                 Input(f"{P}-norm", "value"), *ident, prevent_initial_call=True)(update_lines)
    app.callback(Output(f"{P}-prompts", "figure"),
                 Input(f"{P}-task", "value"), Input(f"{P}-metric", "value"), Input(f"{P}-window", "value"),
                 Input(f"{P}-norm", "value"), *ident, prevent_initial_call=True)(update_prompts)
    app.callback(Output(f"{P}-url", "search"),
                 Input(f"{P}-task", "value"), Input(f"{P}-metric", "value"), Input(f"{P}-pert", "value"),
                 Input(f"{P}-window", "value"), Input(f"{P}-norm", "value"), *ident, prevent_initial_call=True)(sync_url)
    app.callback(Output(f"{P}-download", "data"),
                 Input({"type": f"{P}-dl", "what": ALL, "fmt": ALL}, "n_clicks"),
                 State(f"{P}-task", "value"), State(f"{P}-metric", "value"), *ident, prevent_initial_call=True)(download)
    app.callback(Output(f"{P}-share-url", "value"), Output(f"{P}-share-msg", "children"),
                 Input(f"{P}-share-btn", "n_clicks"), State(f"{P}-url", "href"), State(f"{P}-url", "pathname"),
                 State(f"{P}-url", "search"), State(f"{P}-id", "data"), auth, prevent_initial_call=True)(share)
    app.callback(Output(f"{P}-cancel-msg", "children"), Input(f"{P}-cancel", "n_clicks"),
                 *ident, prevent_initial_call=True)(cancel)
    app.callback(Output(f"{P}-save-msg", "children"), Output(f"{P}-title", "children"),
                 Input(f"{P}-save", "n_clicks"), State(f"{P}-name", "value"), State(f"{P}-notes", "value"),
                 State(f"{P}-id", "data"), auth, prevent_initial_call=True)(save_notes)
    for side in LENS_SIDES:
        app.callback(Output(f"{P}-lens-prompt-{side}", "value"), Output(f"{P}-lens-target-{side}", "value"),
                     Output(f"{P}-lens-msg-{side}", "children", allow_duplicate=True),
                     Input(f"{P}-lens-task-{side}", "value"), Input(f"{P}-lens-index-{side}", "value"), *ident,
                     prevent_initial_call=True)(lens_pick)
        app.callback(Output(f"{P}-lens-job-{side}", "data"), Output(f"{P}-lens-poll-{side}", "disabled", allow_duplicate=True),
                     Output(f"{P}-lens-msg-{side}", "children", allow_duplicate=True),
                     Input(f"{P}-lens-run-{side}", "n_clicks"), State(f"{P}-lens-prompt-{side}", "value"),
                     State(f"{P}-lens-target-{side}", "value"), State(f"{P}-lens-kind", "value"), State(f"{P}-id", "data"), auth,
                     prevent_initial_call=True)(lens_submit)
        app.callback(Output(f"{P}-lens-result-{side}", "data"), Output(f"{P}-lens-poll-{side}", "disabled"),
                     Output(f"{P}-lens-msg-{side}", "children"),
                     Input(f"{P}-lens-poll-{side}", "n_intervals"), State(f"{P}-lens-job-{side}", "data"), *ident,
                     prevent_initial_call=True)(lens_poll)
        app.callback(Output(f"{P}-lens-{side}", "figure"), Input(f"{P}-lens-result-{side}", "data"),
                     Input(f"{P}-lens-colour", "value"), Input(f"{P}-norm", "value"), Input(f"{P}-lens-last", "value"),
                     State(f"{P}-lens-label-{side}", "data"),
                     prevent_initial_call=True)(lens_figure)
        app.callback(Output(f"{P}-lens-download-{side}", "data"), Input(f"{P}-lens-dl-{side}", "n_clicks"),
                     State(f"{P}-lens-result-{side}", "data"), State(f"{P}-lens-label-{side}", "data"),
                     State(f"{P}-id", "data"), prevent_initial_call=True)(lens_download)
