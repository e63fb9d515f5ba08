"""Report page (``/experiments/<experiment_id>/report``): the experiment laid out like the papers'
results table (one row per allocation, scores with intervals, change from the base model, trainable
share and compute), the significance of every difference, a bar figure, and what the run does and does
not show. "Export HTML" downloads the same report as one self-contained file
(:func:`frontend.viz.report.experiment_report_html`)."""

from __future__ import annotations

from typing import Any, Optional

import dash
from dash import Input, Output, State, dcc, html

from frontend.api_client import ApiError
from frontend.components import api_error_box, build_search, client, empty_box, error_box, rel, table
from frontend.viz import experiment as ev
from frontend.viz import report as rv
from frontend.viz.common import graph_config

# order: numeric orders are matched before the experiment page, whose ``<experiment_id>`` would
# otherwise also match ``<id>/report`` (Dash path templates are fnmatch patterns).
dash.register_page(__name__, path_template="/experiments/<experiment_id>/report", name="Report",
                   title="Report · LayerTracer", order=5)

P = "report"
FINISHED = ("succeeded", "failed", "cancelled")


def experiment_href(experiment_id: str, share: Optional[str] = None) -> str:
    return rel(f"/experiments/{experiment_id}") + build_search({"share": share})


def layout(experiment_id: Optional[str] = None, token: Optional[str] = None, **query: Any) -> html.Div:
    share = query.get("share")
    head = [dcc.Store(id=f"{P}-id", data=experiment_id), dcc.Store(id=f"{P}-share", data=share),
            dcc.Download(id=f"{P}-download")]
    if not experiment_id or experiment_id == "none":
        return html.Div(head + [error_box("No experiment id in the address.", title="Not found")])
    try:
        detail = client(token, share).experiment(experiment_id)
    except ApiError as exc:
        return html.Div(head + [html.H1(f"Report {experiment_id}"),
                                api_error_box(exc, title="The experiment could not be loaded")])
    source, source_error = load_source(detail, token, share)
    return html.Div(head + report_view(detail, share, source, source_error))


def load_source(detail: dict, token: Optional[str], share: Optional[str]) -> tuple[Optional[dict], Optional[str]]:
    """(the source trace's overview, None) when the run records one and it reads; (None, why) when it does
    not read; (None, None) without a source trace."""
    trace_id = rv.source_trace_id(detail)
    if not trace_id:
        return None, None
    try:
        return client(token, share).trace_overview(trace_id), None
    except ApiError as exc:
        return None, exc.message


def trace_evidence_view(detail: dict, source: Optional[dict], error: Optional[str], share: Optional[str]) -> html.Div:
    """The source trace's plan strip, heatmap and stability curve (the trace page's figures), or a line
    saying why there are none."""
    trace_id = rv.source_trace_id(detail)
    note = [rv.trace_evidence_note(detail, source, error)]
    if trace_id:
        note += [" ", dcc.Link("Open the trace", href=rel(f"/traces/{trace_id}") + build_search({"share": share}),
                              id=f"{P}-trace-link")]
    graphs = [html.Div([html.H3(caption), dcc.Graph(id=f"{P}-trace-{key}", figure=fig,
                                                    config=graph_config(f"report-trace-{key}"))])
              for key, caption, fig in rv.trace_evidence(source)]
    return html.Div([html.H2("Trace evidence"), html.P(note, className="lt-note", id=f"{P}-trace-note"), *graphs],
                    className="lt-card", id=f"{P}-trace-evidence")


def report_view(detail: dict, share: Optional[str] = None, source: Optional[dict] = None,
                source_error: Optional[str] = None) -> list:
    """The report as Dash components (the same rows and sentences as the exported HTML file): the finding
    first (the sentence and the retention / acquisition scatter), then the tables and the trace evidence."""
    exp_id = str(detail.get("id") or "")
    back = dcc.Link(f"Back to the {detail.get('kind') or 'experiment'} page", href=experiment_href(exp_id, share),
                    id=f"{P}-back")
    head = html.Div([
        html.H1(f"Report · {rv.title(detail)}"),
        html.P([rv.subtitle(detail), " · ", back], className="lt-muted"),
    ], className="lt-page-head")
    result = detail.get("result")
    provenance = html.Div([html.H2("Model and data"), table(["what", "value"], rv.provenance_rows(detail), id=f"{P}-provenance")],
                          className="lt-card")
    if not result:
        status = detail.get("status")
        if status in ("failed", "cancelled"):
            message = f"This {detail.get('kind') or 'experiment'} {status}; it has no results to report."
        else:
            message = f"The {detail.get('kind') or 'experiment'} is still running; the report appears when every trial has finished."
        return [head, html.Div([empty_box(message), dcc.Link("Follow its progress", href=experiment_href(exp_id, share),
                                                              className="lt-button")], id=f"{P}-empty"), provenance]
    if not result.get("table"):
        return [head, html.Div(empty_box("The result holds no results table (no trial finished)."), id=f"{P}-empty"),
                provenance]
    header, rows = rv.results_table(result)
    sig = []
    for b in rv.benchmarks(result):
        s_header, s_rows = rv.significance_table(result, b)
        sig += [html.H3(rv.bench_name(b, rv.benchmarks(result))), table(s_header, s_rows, id={"type": f"{P}-significance", "bench": b})]
    return [
        head,
        html.Div([
            html.Button("Export HTML", id=f"{P}-export", className="lt-button lt-primary",
                        title="Download this report as one self-contained HTML file (opens offline)"),
            dcc.Loading(html.Span(id=f"{P}-export-msg", className="lt-muted"), type="dot", delay_show=300),
        ], className="lt-export"),
        html.Div([html.H2("Finding"), html.P(rv.finding(result), className="lt-finding", id=f"{P}-finding"),
                  dcc.Graph(id=f"{P}-tradeoff", figure=rv.tradeoff_figure(result),
                            config=graph_config(f"report-{exp_id}-tradeoff")),
                  html.P(ev.TRADEOFF_NOTE, className="lt-note")], className="lt-card"),
        provenance,
        html.Div([html.H2("Results"), table(header, rows, id=f"{P}-table", caption=rv.RESULTS_CAPTION)],
                 className="lt-card lt-scroll"),
        html.Div([html.H2("What this run shows"), *[html.P(s) for s in rv.findings(result)],
                  html.H2("What it does not show"), *[html.P(s) for s in rv.limitations(detail)]],
                 className="lt-card", id=f"{P}-honest"),
        html.Div(dcc.Graph(id=f"{P}-figure", figure=rv.accuracy_figure(result), config=graph_config(f"report-{exp_id}")),
                 className="lt-card"),
        trace_evidence_view(detail, source, source_error, share),
        html.Div([html.H2("Significance of the differences"), html.P(rv.SIGNIFICANCE_NOTE, className="lt-note"), *sig],
                 className="lt-card lt-scroll", id=f"{P}-significance"),
        html.Div([html.H2("Methods"), html.Ul([html.Li(m) for m in rv.methods(result)])], className="lt-card"),
    ]


# -- callbacks -------------------------------------------------------------------------------------------

def export(n_clicks, experiment_id, share, token):
    """The Export HTML button -> the self-contained report file (and a line saying what happened)."""
    if not n_clicks:
        return dash.no_update, dash.no_update
    try:
        detail = client(token, share).experiment(experiment_id)
    except ApiError as exc:
        return dash.no_update, f"The report could not be made: {exc}"
    source, source_error = load_source(detail, token, share)
    return (dict(content=rv.experiment_report_html(detail, source, source_error), filename=f"layertracer-report-{experiment_id}.html",
                 type="text/html"), "Report downloaded.")


def register_callbacks(app: dash.Dash) -> None:
    app.callback(Output(f"{P}-download", "data"), Output(f"{P}-export-msg", "children"),
                 Input(f"{P}-export", "n_clicks"), State(f"{P}-id", "data"), State(f"{P}-share", "data"),
                 State("auth-token", "data"), prevent_initial_call=True)(export)
