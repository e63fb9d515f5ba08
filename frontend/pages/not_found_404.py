"""Any address the dashboard does not know: say so and offer the way back."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from frontend.components import rel

dash.register_page(__name__, path="/404", name="Not found", title="Not found · LayerTracer")


def layout(**_: Any) -> html.Div:
    return html.Div([
        html.H1("Page not found"),
        html.P("The dashboard has no page at this address. Traces live at /traces/<id>, trials and experiments at "
               "/experiments/<id>.", className="lt-muted"),
        dcc.Link("Back to the runs", href=rel("/"), className="lt-button lt-primary"),
    ])


def register_callbacks(app: dash.Dash) -> None:
    """No callbacks."""
