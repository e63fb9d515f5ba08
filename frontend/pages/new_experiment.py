"""New experiment (``/new/experiment?model=&ranges=`` or ``?clone=<job or run id>``): several allocations x seeds, compared."""

from __future__ import annotations

from typing import Any, Optional

import dash

from frontend import run_form

dash.register_page(__name__, path="/new/experiment", name="New experiment", title="New experiment · LayerTracer", order=3)

P = "newexp"


def layout(token: Optional[str] = None, **query: Any):
    return run_form.form_layout(P, "experiment", token, query)


def register_callbacks(app: dash.Dash) -> None:
    run_form.register(app, P, "experiment")
