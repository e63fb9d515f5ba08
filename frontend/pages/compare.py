"""Compare (``/compare?traces=a,b&task=``): two or more traces on the normalised depth axis, one small
panel per task, the difference of each trace from the first, and their freeze plans side by side."""

from __future__ import annotations

from typing import Any, Optional

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from frontend.api_client import ApiError
from frontend.components import (build_search, client, empty_box, error_box, figure_card, make_share, share_bar, table,
                                 to_json)
from frontend.viz import compare as cv

dash.register_page(__name__, path="/compare", name="Compare", title="Compare · LayerTracer", order=4)

P = "compare"


def _ids(value) -> list[str]:
    """Trace ids from the query text (``a,b``) or the dropdown's list."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    return [str(t).strip() for t in items if str(t).strip()]


def label(trace_id: str, result: dict) -> str:
    """A short legend label: the id's first 8 characters and the model folder's name."""
    source = str((result.get("model") or {}).get("source") or "").rstrip("/").rsplit("/", 1)[-1]
    return f"{trace_id[:8]} · {source}" if source else trace_id[:8]


def load(ids: list[str], token: Optional[str], share: Optional[str]) -> tuple[dict, list[str]]:
    """{label: result} of the finished traces, and one message per trace that could not be loaded."""
    results, problems = {}, []
    api = client(token, share)
    for trace_id in ids:
        try:
            result = api.trace_overview(trace_id)
        except ApiError as exc:
            problems.append(f"{trace_id}: {exc.message}")
            continue
        results[label(trace_id, result)] = result
    return results, problems


def trace_options(token: Optional[str], share: Optional[str], chosen: list[str]) -> list[dict]:
    """Finished traces to pick from (and the chosen ones, even when the list does not reach them)."""
    try:
        items = client(token, share).traces(status="succeeded", limit=200).get("data") or []
    except ApiError:
        items = []
    options = [{"label": f"{t['id'][:8]} · {(t.get('model') or {}).get('name', '?')} · {', '.join(t.get('tasks') or [])}",
                "value": t["id"]} for t in items]
    known = {o["value"] for o in options}
    return options + [{"label": c, "value": c} for c in chosen if c not in known]


def layout(token: Optional[str] = None, traces: str = "", task: str = "", **query: Any) -> html.Div:
    share = query.get("share")
    ids = _ids(traces)
    results, problems = load(ids, token, share)
    tasks = cv.shared_tasks(results)
    task = task if task in tasks else ""
    return html.Div([
        dcc.Store(id=f"{P}-share", data=share),
        dcc.Location(id=f"{P}-url", refresh=False),
        dcc.Location(id=f"{P}-go", refresh="callback-nav"),
        dcc.Download(id=f"{P}-download"),
        html.Div([html.H1("Compare traces"), share_bar(P)], className="lt-page-head"),
        html.Div([
            html.Div([html.Label("Traces", htmlFor=f"{P}-ids"),
                      dcc.Dropdown(id=f"{P}-ids", options=trace_options(token, share, ids), value=ids, multi=True,
                                   placeholder="choose two or more finished traces")], className="lt-field lt-w-traces"),
            html.Button("Compare", id=f"{P}-apply", type="button", className="lt-button lt-primary"),
            html.Div([html.Label("Task", htmlFor=f"{P}-task"),
                      dcc.Dropdown(id=f"{P}-task", options=[{"label": "every shared task", "value": ""}] +
                                   [{"label": t, "value": t} for t in tasks], value=task, clearable=False)],
                     className="lt-field lt-w-task"),
        ], className="lt-controls"),
        *[error_box(p, title="Not loaded") for p in problems],
        html.Div(figures_view(results, task or None, chosen=len(ids)), id=f"{P}-figures"),
    ])


def empty_message(results: dict, chosen: int) -> str:
    """What the page says when it has nothing to draw: which traces are missing and what to do."""
    if chosen and not results:
        return "None of the chosen traces could be loaded (see above); choose finished traces to compare."
    return "Choose two or more finished traces above and press Compare: each task gets its own panel, with the difference between the traces and their freeze plans side by side."


def figures_view(results: dict, task: Optional[str] = None, *, chosen: int = 0) -> list:
    """The figures of the comparison: small multiples per task, the difference (each trace minus the
    first), the stability curves and plan against plan. Only figures with data get a card (and export
    buttons); without traces, one message says what to do."""
    if not results:
        return [empty_box(empty_message(results, chosen))]
    cards = [figure_card(f"{P}-curves", cv.small_multiples_figure(results, task), page=P, what="curves",
                         data_formats=("json",),
                         note="One panel per task, one colour per trace; ◆ the task particle.")]
    if len(results) >= 2:
        first = next(iter(results))
        cards.append(figure_card(f"{P}-difference", cv.difference_figure(results, task), page=P, what="difference",
                                 data_formats=("json",),
                                 note=f"Each trace minus the first ({first}, A): above zero, the answer is more likely at "
                                      "that depth than in A (B read at A's layers on the normalised depth)."))
    else:
        cards.append(empty_box("Add a second trace to see the difference view and the plans side by side."))
    if any(r.get("sensitivity") for r in results.values()):
        cards.append(figure_card(f"{P}-stability", cv.stability_compare_figure(results), page=P, what="stability",
                                 data_formats=("json",)))
    if len(results) >= 2 and any(r.get("freeze_plan") for r in results.values()):
        cards += [figure_card(f"{P}-plans", cv.plan_diff_figure(results), page=P, what="plans", data_formats=("json",)),
                  html.Div(table(*cv.plan_diff_rows(results), id=f"{P}-plan-table"), className="lt-card lt-scroll")]
    cards.append(html.Div(table(*cv.summary_rows(results), id=f"{P}-summary"), className="lt-card lt-scroll"))
    return cards


def apply(n_clicks, ids, share):
    if not n_clicks:
        return dash.no_update
    return build_search({"traces": ",".join(_ids(ids)), "share": share})


def choose_task(task, ids, share, token):
    """A task choice -> the figures for that task (every task: all panels) and the URL."""
    ids = _ids(ids)
    results, _ = load(ids, token, share)
    return figures_view(results, task or None, chosen=len(ids)), build_search({"traces": ",".join(_ids(ids)), "task": task, "share": share})


def download(n_clicks, ids, share, token):
    trigger = ctx.triggered_id
    if not trigger or not any(n_clicks or []):
        return dash.no_update
    results, _ = load(_ids(ids), token, share)
    if trigger["what"] == "curves":
        data = {tid: {n: {"mean_target_prob": t["mean_target_prob"], "task_particle": t.get("task_particle")}
                      for n, t in r["tasks"].items()} | {"num_layers": r["num_layers"]} for tid, r in results.items()}
    elif trigger["what"] == "difference":
        fig = cv.difference_figure(results)
        data = [{"series": tr.name, "depth": list(tr.x), "difference": list(tr.y)} for tr in fig.data if tr.y is not None]
    elif trigger["what"] == "plans":
        header, rows = cv.plan_diff_rows(results)
        data = {"plans": [dict(zip(header, row)) for row in rows],
                "train_layers": {tid: (r.get("freeze_plan") or {}).get("train_layers") for tid, r in results.items()}}
    else:
        data = {tid: {"sensitivity": r.get("sensitivity"), "vulnerable_layer": r.get("vulnerable_layer"),
                      "num_layers": r["num_layers"]} for tid, r in results.items()}
    return dict(content=to_json(data), filename=f"compare-{trigger['what']}.json", type="application/json")


def share(n_clicks, href, pathname, search, ids, token):
    if not n_clicks:
        return dash.no_update, dash.no_update
    ids = _ids(ids)
    if len(ids) == 1:
        return make_share("trace", ids[0], href, pathname, search, token)
    # A share token grants one resource, so a comparison of several traces is shared as its plain URL.
    link, _ = make_share("trace", "", href, pathname, search, None)
    note = " With auth on, the reader needs a token (a share link covers one trace)." if token else ""
    return link, "Link to this comparison; copy it with the icon." + note


def register_callbacks(app: dash.Dash) -> None:
    auth = State("auth-token", "data")
    # A new list of traces reloads the page through the router (the layout loads the results).
    app.callback(Output(f"{P}-go", "search"), Input(f"{P}-apply", "n_clicks"), State(f"{P}-ids", "value"),
                 State(f"{P}-share", "data"), prevent_initial_call=True)(apply)
    app.callback(Output(f"{P}-figures", "children"), Output(f"{P}-url", "search"), Input(f"{P}-task", "value"),
                 State(f"{P}-ids", "value"), State(f"{P}-share", "data"), auth, prevent_initial_call=True)(choose_task)
    app.callback(Output(f"{P}-download", "data"), Input({"type": f"{P}-dl", "what": ALL, "fmt": ALL}, "n_clicks"),
                 State(f"{P}-ids", "value"), State(f"{P}-share", "data"), auth, prevent_initial_call=True)(download)
    app.callback(Output(f"{P}-share-url", "value"), Output(f"{P}-share-msg", "children"),
                 Input(f"{P}-share-btn", "n_clicks"), State(f"{P}-url", "href"), State(f"{P}-url", "pathname"),
                 State(f"{P}-url", "search"), State(f"{P}-ids", "value"), auth, prevent_initial_call=True)(share)
