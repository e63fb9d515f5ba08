"""New trial (``/new/trial?model=&ranges=&trace=`` or ``?clone=<job or run id>``): one allocation over seeds; the freeze plan's
"Launch a trial" button opens this page with the plan's ranges in the URL."""

from __future__ import annotations

from typing import Any, Optional

import dash

from frontend import run_form

dash.register_page(__name__, path="/new/trial", name="New trial", title="New trial · LayerTracer", order=2)

P = "newtrial"


def layout(token: Optional[str] = None, **query: Any):
    return run_form.form_layout(P, "trial", token, query)


def register_callbacks(app: dash.Dash) -> None:
    run_form.register(app, P, "trial")
