"""The LayerTracer dashboard: a multi-page Dash app that talks to the API over HTTP only.

``create_dash(api_url=..., requests_pathname_prefix="/")`` builds the app; ``service/app.py``
mounts it at ``/`` next to the API, or alone (``layertracer dashboard``, behind its exposure guard).

Pages (``frontend/pages``) register themselves with ``dash.register_page`` and are imported here once
the app exists; each page module has a ``register_callbacks(app)`` that attaches its module-level
callback functions to the app (so several apps in one process each get them).
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

import dash
from dash import MATCH, Input, Output, State, dcc, html

from frontend import plotly_bundle, warmup
from frontend.components import DEFAULT_API_URL

PAGE_MODULES = (
    "frontend.pages.runs",
    "frontend.pages.trace",
    "frontend.pages.compare",
    "frontend.pages.new_trace",
    "frontend.pages.new_trial",
    "frontend.pages.new_experiment",
    "frontend.pages.experiment",
    "frontend.pages.report",
    "frontend.pages.not_found_404",
)

NAV = [
    ("Runs", "/"),
    ("New trace", "/new/trace"),
    ("New trial", "/new/trial"),
    ("New experiment", "/new/experiment"),
    ("Compare", "/compare"),
]


def shell(prefix: str = "/") -> html.Div:
    """Header (navigation, API token), the page container and the shared stores."""
    base = prefix.rstrip("/")
    return html.Div([
        dcc.Store(id="auth-token", storage_type="session"),
        html.Header([
            dcc.Link("LayerTracer", href=base + "/", className="lt-brand"),
            html.Nav([dcc.Link(name, href=base + path, className="lt-nav-link") for name, path in NAV],
                     className="lt-nav", **{"aria-label": "main"}),
            html.Details([
                html.Summary("API token", className="lt-token-summary"),
                html.Div([
                    html.Label("Token (kept for this browser tab only)", htmlFor="auth-token-input"),
                    dcc.Input(id="auth-token-input", type="password", debounce=True, placeholder="paste a token",
                              className="lt-input"),
                    html.Span(id="auth-token-msg", className="lt-muted"),
                ]),
            ], className="lt-token"),
        ], className="lt-header"),
        html.Main(dash.page_container, className="lt-main"),
        html.Div(id="img-export-sink", style={"display": "none"}),
        # A tiny graph off-screen in the shell makes the browser fetch and evaluate plotly.js while the
        # server is still building the page's layout, instead of after it (0.3 s on a warm browser, ~0.6 s
        # on a fresh one). Off-screen rather than display:none: plotly retries resizing a hidden graph.
        html.Div(dcc.Graph(id="plotly-preload", figure={"data": [], "layout": {"height": 10, "width": 10}},
                           config={"staticPlot": True, "responsive": False}, style={"height": "10px", "width": "10px"}),
                 style={"position": "absolute", "left": "-10000px", "top": "0", "width": "10px", "height": "10px",
                        "overflow": "hidden"}, **{"aria-hidden": "true"}),
    ])


def save_token(value: Optional[str]) -> tuple[Optional[str], str]:
    """The token input -> (session store value, message)."""
    value = (value or "").strip()
    if not value:
        return None, "no token: reads use share links, writes need auth off"
    return value, "token saved for this tab"


def create_dash(api_url: Optional[str] = None, requests_pathname_prefix: str = "/", **kwargs) -> dash.Dash:
    """The dashboard app. api_url: where the API runs (default ``LAYERTRACER_API_URL`` or
    http://127.0.0.1:8000); requests_pathname_prefix: where the app is mounted."""
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",
        requests_pathname_prefix=requests_pathname_prefix,
        suppress_callback_exceptions=True,
        title="LayerTracer",
        update_title=None,
        # The layouts get the session's API token (to load data when auth is on).
        routing_callback_inputs={"token": State("auth-token", "data")},
        **kwargs,
    )
    app.layertracer_api_url = (api_url or os.environ.get("LAYERTRACER_API_URL") or DEFAULT_API_URL).rstrip("/")
    plotly_bundle.install(app)  # the 1.5 MB cartesian plotly.js when fetched, else Dash's full 4.8 MB one
    for name in PAGE_MODULES:
        module = importlib.import_module(name)
        page = dash.page_registry.get(name)
        if page is not None and not page.get("layout"):
            page["layout"] = module.layout  # pages_folder="": Dash does not look the layout up itself
        module.register_callbacks(app)
    app.layout = shell(requests_pathname_prefix)
    warmup.start_warm_up()  # the figure code's first-use cost, off the first visitor's wait
    app.callback(Output("auth-token", "data"), Output("auth-token-msg", "children"),
                 Input("auth-token-input", "value"), prevent_initial_call=True)(save_token)
    # PNG / SVG export of any figure card (Plotly.downloadImage in the browser).
    app.clientside_callback(
        """
        function(n, id) {
            if (!n) { return window.dash_clientside.no_update; }
            var holder = document.getElementById(id.graph);
            var gd = holder && (holder.classList.contains('js-plotly-plot') ? holder : holder.querySelector('.js-plotly-plot'));
            if (gd && window.Plotly) {
                // A figure still waiting to be drawn (assets/lazy_figures.js) is drawn first.
                var drawn = window.LayerTracerFigures ? window.LayerTracerFigures.drawNow(gd) : Promise.resolve();
                drawn.then(function () {
                    window.Plotly.downloadImage(gd, {format: id.fmt, filename: id.graph, scale: id.fmt === 'png' ? 2 : 1});
                });
            }
            return window.dash_clientside.no_update;
        }
        """,
        Output({"type": "img-export", "graph": MATCH, "fmt": MATCH}, "title"),
        Input({"type": "img-export", "graph": MATCH, "fmt": MATCH}, "n_clicks"),
        State({"type": "img-export", "graph": MATCH, "fmt": MATCH}, "id"),
        prevent_initial_call=True,
    )
    return app
