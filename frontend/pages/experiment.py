"""Trial / experiment page (``/experiments/<experiment_id>?bench=``): live progress and loss curves
while it trains; then before/after scores per allocation with intervals and significance, the results
table, per-subject accuracy, weight drift per layer, the re-trace comparison and the provenance of every
number."""

from __future__ import annotations

from typing import Any, Optional

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html

from frontend.api_client import ApiError
from frontend.components import (
    LIVE_STATUSES,
    api_error_box,
    build_search,
    client,
    empty_box,
    error_box,
    figure_card,
    make_share,
    parse_search,
    progress_bar,
    rel,
    share_bar,
    table,
    to_csv,
    to_json,
)
from frontend.viz import experiment as ev
from frontend.viz.names import absolute_time, relative_time, run_duration, run_name, short_id

dash.register_page(__name__, path_template="/experiments/<experiment_id>", name="Experiment",
                   title="Experiment · LayerTracer")

P = "exp"
POLL_MS = 2000
FINISHED = ("succeeded", "failed", "cancelled")


def layout(experiment_id: Optional[str] = None, token: Optional[str] = None, **query: Any) -> html.Div:
    share = query.get("share")
    head = [
        dcc.Store(id=f"{P}-id", data=experiment_id),
        dcc.Store(id=f"{P}-share", data=share),
        dcc.Location(id=f"{P}-url", refresh=False),
        dcc.Download(id=f"{P}-download"),
    ]
    if not experiment_id or experiment_id == "none":
        return html.Div(head + [error_box("No experiment id in the address.", title="Not found")])
    try:
        exp = client(token, share).experiment(experiment_id)
    except ApiError as exc:
        return html.Div(head + [html.H1(f"Experiment {experiment_id}"),
                                api_error_box(exc, title="The experiment could not be loaded")])
    metrics = _metrics(experiment_id, token, share)
    finished = exp.get("status") in FINISHED
    return html.Div(head + [
        html.Div([
            html.H1(heading(exp), id=f"{P}-title"),
            html.P([f"{(exp.get('kind') or 'experiment')} {short_id(exp.get('id'))} · model "
                    f"{(exp.get('model') or {}).get('name') or (exp.get('model') or {}).get('source') or '?'} · created ",
                    html.Span(relative_time(exp.get("created_at")), title=absolute_time(exp.get("created_at"))),
                    f" · took {run_duration(exp)} · " if exp.get("finished_at") else " · ",
                    dcc.Link("Report", href=rel(f"/experiments/{experiment_id}/report") + build_search({"share": share}),
                             id=f"{P}-report-link", title="The results table, significance and an export as one HTML file"),
                    *lineage_link(exp, share)],
                   className="lt-muted"),
            notes_view(exp),
            share_bar(P),
        ], className="lt-page-head"),
        dcc.Interval(id=f"{P}-interval", interval=POLL_MS, disabled=finished),
        html.Div(status_view(exp), id=f"{P}-status"),
        html.Div(finding_view(exp, query.get("old"), query.get("new")), id=f"{P}-finding-box"),
        figure_card(f"{P}-loss", ev.loss_figure(metrics, exp.get("result"), exp.get("spec")), page=P, what="loss"),
        html.Div(results_view(exp, query.get("bench")), id=f"{P}-results"),
    ])


def heading(exp: dict) -> str:
    """The page's title: the run's name (its short id when it has none) and its kind."""
    kind = (exp.get("kind") or "experiment").capitalize()
    return f"{run_name(exp)}" if exp.get("name") else f"{kind} {run_name(exp)}"


def lineage_link(exp: dict, share: Optional[str]) -> list:
    """" · from trace <id>": the trace whose freeze plan this run trains, linked (nothing without one)."""
    source = exp.get("source_trace_id")
    if not source:
        return []
    return [" · plan from ", dcc.Link(f"trace {short_id(source)}", href=rel(f"/traces/{source}") + build_search({"share": share}),
                                       id=f"{P}-source-trace", title=f"the trace whose freeze plan this run trains ({source})")]


def notes_view(exp: dict) -> html.Details:
    """The run's name, tags and notes, editable (Save needs an API token when the API checks them)."""
    tags = exp.get("tags") or []
    summary = [html.Span("Name, tags and notes")] + [html.Span(t, className="lt-tag") for t in tags]
    return html.Details([
        html.Summary(summary),
        html.Div([
            html.Label("Name", htmlFor=f"{P}-name"),
            dcc.Input(id=f"{P}-name", value=exp.get("name") or "", maxLength=200, className="lt-input"),
            html.Label("Tags (comma-separated)", htmlFor=f"{P}-tags"),
            dcc.Input(id=f"{P}-tags", value=", ".join(tags), className="lt-input"),
            html.Label("Notes", htmlFor=f"{P}-notes"),
            dcc.Textarea(id=f"{P}-notes", value=exp.get("notes") or "", maxLength=10_000, className="lt-input"),
            html.Button("Save", id=f"{P}-save", className="lt-button"),
            html.Span(id=f"{P}-save-msg", className="lt-muted"),
        ], className="lt-notes-form"),
    ], id=f"{P}-notes-box", open=bool(exp.get("notes")))


def parse_tags(text: Optional[str]) -> list[str]:
    """``"a, b,,a"`` -> ["a", "b"] (the API keeps each once, in order)."""
    return list(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))


def save_notes(n_clicks, name, tags, notes, experiment_id, token):
    """Save -> PATCH the run; the heading shows the new name."""
    if not n_clicks:
        return dash.no_update, dash.no_update
    try:
        exp = client(token).update_run("experiment", experiment_id,
                                       {"name": (name or "").strip() or None, "tags": parse_tags(tags), "notes": notes or ""})
    except ApiError as exc:
        return f"Not saved: {exc}", dash.no_update
    return "Saved.", heading(exp)


def _metrics(experiment_id, token, share) -> Optional[dict]:
    try:
        return client(token, share).experiment_metrics(experiment_id)
    except ApiError:
        return None


def status_view(exp: dict) -> list:
    job = exp.get("job") or {"status": exp.get("status")}
    parts = [progress_bar(job, id=f"{P}-progress")]
    if exp.get("status") in LIVE_STATUSES:
        parts.append(html.Button("Cancel", id={"type": f"{P}-cancel", "job": str(job.get("id"))},
                                 className="lt-button lt-secondary"))
    return parts


def finding_view(exp: dict, old: Optional[str] = None, new: Optional[str] = None) -> list:
    """What the page leads with once the run has its result: the finding in one sentence and, with two
    benchmarks or more, the retention-vs-acquisition scatter (nothing before the result exists). ``old`` /
    ``new`` (the URL's ``?old=&new=``): the retention and acquisition benchmarks, by spec or by the last
    component of their folder; by default the spec's first and second."""
    result = exp.get("result")
    if not result or not result.get("table"):
        return []
    old, new = benchmark_by_name(result, old), benchmark_by_name(result, new)
    parts = [html.H2("Finding"),
             html.P(ev.finding_sentence(result, old, new), className="lt-finding", id=f"{P}-finding")]
    if len(ev.benchmarks(result)) >= 2:
        parts.append(figure_card(f"{P}-tradeoff", ev.tradeoff_figure(result, old, new), page=P, what="tradeoff",
                                 note=ev.TRADEOFF_NOTE))
    return parts


def benchmark_by_name(result: dict, name: Optional[str]) -> Optional[str]:
    """The run's benchmark spec that ``name`` names: the spec itself or its folder's last component
    (``old-facts``); None for no or an unknown name (the default order then holds)."""
    for bench in ev.benchmarks(result):
        if name and name in (bench, bench.rstrip("/").rsplit("/", 1)[-1]):
            return bench
    return None


def results_view(exp: dict, bench: Optional[str] = None) -> list:
    """Everything that needs the finished result (a 'not yet' box until then)."""
    result = exp.get("result")
    if not result:
        done = partial_view(exp)
        if exp.get("status") in ("failed", "cancelled"):
            return [empty_box(f"This {exp.get('kind', 'experiment')} {exp.get('status')}; it has no final results.")] + done
        return [empty_box("The comparison of the allocations appears here when every trial has finished.")] + done
    benches = ev.benchmarks(result)
    bench = bench if bench in benches else (benches[0] if benches else None)
    header, rows = ev.results_table(result)
    parts = [
        html.H2("Results"),
        figure_card(f"{P}-scores", ev.scores_figure(result), page=P, what="scores",
                    note="Dotted line: chance, one over the number of options of each question."),
        html.Div([table(header, rows, id=f"{P}-table",
                        caption="One row per allocation: accuracy mean over seeds [Student-t 95% interval], change from the base model"),
                  html.Div([html.Button("CSV", id={"type": f"{P}-dl", "what": "table", "fmt": "csv"}, className="lt-small"),
                            html.Button("JSON", id={"type": f"{P}-dl", "what": "result", "fmt": "json"}, className="lt-small")],
                           className="lt-export")], className="lt-card lt-scroll"),
    ]
    if benches:
        s_header, s_rows = ev.significance_table(result, bench)
        j_header, j_rows = ev.subject_table(result, bench)
        parts += [
            html.Div([html.Label("Benchmark", htmlFor=f"{P}-bench"),
                      dcc.Dropdown(id=f"{P}-bench", options=[{"label": ev.bench_label(b), "value": b} for b in benches],
                                   value=bench, clearable=False)], className="lt-field lt-w-task"),
            html.Div([
                html.H3("Significance (pairwise, same questions)"),
                html.P("Difference of accuracy a − b with a paired bootstrap interval over questions; p-values of the "
                       "bootstrap, McNemar and sign-flip permutation tests, Holm-adjusted across pairs in brackets.",
                       className="lt-note"),
                html.Div(table(s_header, s_rows), id=f"{P}-significance"),
                html.H3("Accuracy per subject"),
                html.Div(table(j_header, j_rows), id=f"{P}-subjects"),
            ], className="lt-card lt-scroll"),
        ]
    c_header, c_rows = ev.particle_change_table(result)
    parts += [
        figure_card(f"{P}-drift", ev.drift_figure(result), page=P, what="drift"),
        *([figure_card(f"{P}-retrace", ev.retrace_figure(result), page=P, what="retrace"),
           html.Div([html.H3("Task particles and vulnerable layer before → after"), table(c_header, c_rows)],
                    className="lt-card")] if c_rows else
          [empty_box("No re-trace: this run had no trace tasks, so particles and sensitivity were not measured again.")]),
        html.Div([html.H2("Provenance"), table(["what", "value"], ev.provenance_rows(exp), id=f"{P}-provenance"),
                  html.Details([html.Summary("Full spec (JSON)"), html.Pre(to_json(exp.get("spec") or result.get("spec")))])],
                 className="lt-card"),
    ]
    return parts


def partial_view(exp: dict) -> list:
    """Trials that have finished while the rest still run (the API's ``partial.trials``): their scores
    before and after and their weight drift."""
    trials = list(((exp.get("partial") or {}).get("trials") or {}).values())
    trials = [t for t in trials if isinstance(t, dict) and t.get("slug")]
    if not trials:
        return []
    header, rows = ev.finished_trials_table(trials, exp.get("spec"))
    return [
        html.H2(f"Finished so far: {len(trials)} trial{'s' if len(trials) != 1 else ''}"),
        html.Div(table(header, rows, id=f"{P}-partial"), className="lt-card lt-scroll"),
        figure_card(f"{P}-partial-drift", ev.drift_figure({"trials": trials}), page=P, what="drift"),
    ]


# -- callbacks -------------------------------------------------------------------------------------------

def poll(n_intervals, experiment_id, share, token, search):
    """Progress, loss curves and (once finished) the results; stops polling when the run has finished."""
    bench = parse_search(search).get("bench")
    api = client(token, share)
    try:
        exp = api.experiment(experiment_id)
    except ApiError as exc:
        return ([api_error_box(exc, title="The experiment could not be loaded")], dash.no_update, dash.no_update,
                dash.no_update, False)
    metrics = _metrics(experiment_id, token, share)
    finished = exp.get("status") in FINISHED
    query = parse_search(search)
    return (status_view(exp), finding_view(exp, query.get("old"), query.get("new")),
            ev.loss_figure(metrics, exp.get("result"), exp.get("spec")), results_view(exp, bench), finished)


def choose_bench(bench, experiment_id, share, token, search=None):
    """A benchmark choice -> its significance and subject tables, and the URL (its ``old`` / ``new`` kept)."""
    exp = client(token, share).experiment(experiment_id)
    result = exp.get("result") or {}
    s_header, s_rows = ev.significance_table(result, bench)
    j_header, j_rows = ev.subject_table(result, bench)
    query = parse_search(search)
    return table(s_header, s_rows), table(j_header, j_rows), build_search(
        {"bench": bench, "old": query.get("old"), "new": query.get("new"), "share": share})


def export(exp: dict, metrics: Optional[dict], what: str, fmt: str) -> dict:
    result = exp.get("result") or {}
    name = f"experiment-{exp.get('id')}-{what}"
    if what == "table" and fmt == "csv":
        header, rows = ev.results_table(result)
        return dict(content=to_csv(header, rows), filename=f"{name}.csv", type="text/csv")
    if what == "loss" and fmt == "csv":
        rows = [[slug, r.get("step"), r.get("loss"), r.get("lr"), r.get("tokens_per_s"), r.get("grad_norm"), r.get("eval_loss")]
                for slug, rs in ((metrics or {}).get("trials") or {}).items() for r in rs]
        return dict(content=to_csv(["trial", "step", "loss", "lr", "tokens_per_s", "grad_norm", "eval_loss"], rows),
                    filename=f"{name}.csv", type="text/csv")
    if what == "drift" and fmt == "csv":
        rows = [[t["slug"], t["allocation_spec"], t["seed"], l, v] for t in result.get("trials") or []
                for l, v in enumerate((t.get("drift") or {}).get("blocks") or [])]
        return dict(content=to_csv(["trial", "allocation", "seed", "layer", "relative_drift"], rows),
                    filename=f"{name}.csv", type="text/csv")
    if what == "retrace" and fmt == "csv":
        rows = [[t["slug"], l, v] for t in result.get("trials") or []
                for l, v in enumerate((((t.get("retrace") or {}).get("change") or {}).get("mean_js_change") or []))]
        return dict(content=to_csv(["trial", "layer", "mean_js_change_nats"], rows), filename=f"{name}.csv", type="text/csv")
    if what == "tradeoff" and fmt == "csv":  # the default roles (the URL's old / new are the view's)
        keys = ["allocation", "label", "share", "x", "x_low", "x_high", "y", "y_low", "y_high"]
        rows = [[p[k] for k in keys] for p in ev.tradeoff_points(result)]
        return dict(content=to_csv(["allocation", "label", "trainable_share", "acquisition_change", "acquisition_ci_low",
                                    "acquisition_ci_high", "retention_change", "retention_ci_low", "retention_ci_high"], rows),
                    filename=f"{name}.csv", type="text/csv")
    if what == "scores" and fmt == "csv":
        rows = [[r["allocation"], b, s.get("mean"), s.get("ci_low"), s.get("ci_high"), s.get("n")]
                for r in result.get("table") or [] for b, s in (r.get("benchmarks") or {}).items()]
        return dict(content=to_csv(["allocation", "benchmark", "mean", "ci_low", "ci_high", "seeds"], rows),
                    filename=f"{name}.csv", type="text/csv")
    data = {"loss": metrics, "drift": [t.get("drift") for t in result.get("trials") or []],
            "retrace": [t.get("retrace") for t in result.get("trials") or []],
            "scores": {"table": result.get("table"), "statistics": result.get("statistics")},
            "tradeoff": {"retention, acquisition": ev.roles(result), "points": ev.tradeoff_points(result),
                         "finding": ev.finding_sentence(result)}}.get(what, exp)
    return dict(content=to_json(data), filename=f"{name}.json", type="application/json")


def download(n_clicks, experiment_id, share, token):
    trigger = ctx.triggered_id
    if not trigger or not any(n_clicks or []):
        return dash.no_update
    api = client(token, share)
    exp = api.experiment(experiment_id)
    metrics = _metrics(experiment_id, token, share) if trigger["what"] == "loss" else None
    return export(exp, metrics, trigger["what"], trigger["fmt"])


def share(n_clicks, href, pathname, search, experiment_id, token):
    if not n_clicks:
        return dash.no_update, dash.no_update
    return make_share("experiment", experiment_id, href, pathname, search, token)


def cancel(n_clicks, token):
    if not any(n_clicks or []):
        return [dash.no_update] * len(n_clicks or [])
    job_id = ctx.triggered_id["job"]
    try:
        client(token).cancel_job(job_id)
    except ApiError as exc:
        return [f"Could not cancel: {exc}"] * len(n_clicks)
    return ["Cancel requested"] * len(n_clicks)


def register_callbacks(app: dash.Dash) -> None:
    auth = State("auth-token", "data")
    ident = [State(f"{P}-id", "data"), State(f"{P}-share", "data"), auth]
    app.callback(Output(f"{P}-status", "children"), Output(f"{P}-finding-box", "children"), Output(f"{P}-loss", "figure"),
                 Output(f"{P}-results", "children"),
                 Output(f"{P}-interval", "disabled"), Input(f"{P}-interval", "n_intervals"), *ident,
                 State(f"{P}-url", "search"), prevent_initial_call=True)(poll)
    app.callback(Output(f"{P}-significance", "children"), Output(f"{P}-subjects", "children"), Output(f"{P}-url", "search"),
                 Input(f"{P}-bench", "value"), *ident, State(f"{P}-url", "search"), prevent_initial_call=True)(choose_bench)
    app.callback(Output(f"{P}-download", "data"), Input({"type": f"{P}-dl", "what": ALL, "fmt": ALL}, "n_clicks"),
                 *ident, prevent_initial_call=True)(download)
    app.callback(Output(f"{P}-share-url", "value"), Output(f"{P}-share-msg", "children"),
                 Input(f"{P}-share-btn", "n_clicks"), State(f"{P}-url", "href"), State(f"{P}-url", "pathname"),
                 State(f"{P}-url", "search"), State(f"{P}-id", "data"), auth, prevent_initial_call=True)(share)
    app.callback(Output(f"{P}-save-msg", "children"), Output(f"{P}-title", "children"),
                 Input(f"{P}-save", "n_clicks"), State(f"{P}-name", "value"), State(f"{P}-tags", "value"),
                 State(f"{P}-notes", "value"), State(f"{P}-id", "data"), auth, prevent_initial_call=True)(save_notes)
    app.callback(Output({"type": f"{P}-cancel", "job": ALL}, "children"),
                 Input({"type": f"{P}-cancel", "job": ALL}, "n_clicks"), auth, prevent_initial_call=True)(cancel)
