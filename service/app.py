"""The ASGI apps uvicorn serves: the composition root, the one place that imports both the API and
the dashboard (``backend`` never imports ``frontend``, nor ``frontend`` ``backend``).

``layertracer up`` serves ``create_app`` (the API at ``/api/v1`` with its docs, and the dashboard at
``/``, on one port); ``layertracer api`` serves ``create_api_app`` and ``layertracer dashboard``
``create_dashboard_app`` (the parts of a team deployment). The Dash app is a WSGI (Flask) app;
a2wsgi's WSGIMiddleware runs it in a thread pool beside the async API. The dashboard still reaches the
API over HTTP (``LAYERTRACER_API_URL``), exactly as when it runs alone.
"""

from __future__ import annotations

import logging
import re
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


from backend.exposure import ExposureGuard, dashboard_exposure_problem
from backend.settings import Settings, get_settings
from service.supervisor import api_auth_mode

log = logging.getLogger("layertracer.service")
# Threads for Dash requests (page loads, callbacks, which call the API back over HTTP).
DASH_THREADS = 8


def create_api_app(settings: Optional[Settings] = None) -> FastAPI:
    """The backend's API app (routes under ``/api/v1``, OpenAPI docs at ``/docs``)."""
    from backend.api import create_app as create_backend_app

    return create_backend_app(settings or get_settings())


def dash_wsgi(settings: Settings, prefix: str = "/"):
    """The dashboard as an ASGI app (Dash's Flask server in a2wsgi's WSGIMiddleware), or None when the
    dashboard package is not there (an API-only install)."""
    try:
        from frontend.app import create_dash
    except ImportError as exc:  # an image without the dashboard extra
        log.warning("dashboard not available (%s): serving the API only", exc)
        return None
    from a2wsgi import WSGIMiddleware

    dash_app = create_dash(api_url=settings.api_url, requests_pathname_prefix=prefix)
    return WSGIMiddleware(dash_app.server, workers=DASH_THREADS)


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    """API at ``/api/v1`` and the dashboard at ``/`` in one app (``layertracer up``)."""
    settings = settings or get_settings()
    app = create_api_app(settings)

    # Every /api/... request the API's routes do not take is answered here, never by the dashboard: a
    # known path with another method is 405 with Allow, an unknown path 404 (JSON).
    @app.api_route("/api/{rest:path}", methods=list(CATCH_ALL_METHODS), include_in_schema=False)
    async def api_not_found(request: Request, rest: str) -> JSONResponse:
        allowed = methods_for_path(app, request.url.path)
        if allowed:
            return JSONResponse({"detail": f"method {request.method} is not allowed on /api/{rest}"}, status_code=405,
                                headers={"Allow": ", ".join(sorted(allowed))})
        return JSONResponse({"detail": f"not found: /api/{rest}"}, status_code=404)

    dashboard = dash_wsgi(settings)
    if dashboard is not None:
        # Mounted last: Starlette tries routes in order, so every API route (and /docs) wins over it.
        app.mount("/", dashboard, name="dashboard")
    return app


CATCH_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def methods_for_path(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI document (the contract) lists for ``path``, upper-case; empty when it
    lists no such path. Path templates are matched segment by segment (``{id}`` is one segment)."""
    table = getattr(app.state, "path_methods", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            table.append((re.compile(pattern), {m.upper() for m in operations if m.lower() in HTTP_METHODS}))
        app.state.path_methods = table
    allowed: set[str] = set()
    for pattern, methods in table:
        if pattern.match(path):
            allowed |= methods
    return allowed


def create_dashboard_app(settings: Optional[Settings] = None) -> FastAPI:
    """The dashboard alone at ``/`` (``layertracer dashboard``); it calls the API at ``api_url``.

    It answers other machines only when the API it drives checks tokens (asked once, at start, on the
    API's ``/health``; ``backend.exposure.dashboard_exposure_problem``), else this machine only, like
    the API in local mode, whatever address uvicorn was told to bind.
    """
    settings = settings or get_settings()
    app = FastAPI(title="LayerTracer dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    dashboard = dash_wsgi(settings)
    if dashboard is None:
        raise RuntimeError("the dashboard needs the 'dashboard' extra: pip install 'layertracer[dashboard]'")
    app.mount("/", dashboard, name="dashboard")
    api_auth = api_auth_mode(settings.api_url)
    problem = dashboard_exposure_problem(settings.api_url, api_auth, settings.insecure_expose_without_auth)
    if problem:
        log.warning("the dashboard answers this machine only: %s", problem)
    app.add_middleware(ExposureGuard, allowed_hosts=settings.hosts_for("none" if problem else "token"),
                       local_only=problem is not None)
    return app
