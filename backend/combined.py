"""One ASGI app for one port: the API at ``/api/v1`` (and its docs) and the Dash dashboard at ``/``.

``layertracer up`` serves ``create_app`` with uvicorn; ``layertracer api`` serves ``create_api_app`` and
``layertracer dashboard`` serves ``create_dashboard_app`` (the parts of a team deployment). The Dash
app is a WSGI (Flask) app; a2wsgi's WSGIMiddleware runs it in a thread pool beside the async API. The
dashboard still reaches the API over HTTP (``LAYERTRACER_API_URL``), exactly as when it runs alone.
"""

from __future__ import annotations

import logging
from typing import Optional

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from backend.settings import Settings, get_settings

log = logging.getLogger("layertracer.combined")
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

    # An unknown /api/... path is the API's 404 (JSON), never a dashboard page.
    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def api_not_found(rest: str) -> JSONResponse:
        return JSONResponse({"detail": f"not found: /api/{rest}"}, status_code=404)

    dashboard = dash_wsgi(settings)
    if dashboard is not None:
        # Mounted last: Starlette tries routes in order, so every API route (and /docs) wins over it.
        app.mount("/", dashboard, name="dashboard")
    return app


def create_dashboard_app(settings: Optional[Settings] = None) -> FastAPI:
    """The dashboard alone at ``/`` (``layertracer dashboard``); it calls the API at ``api_url``."""
    settings = settings or get_settings()
    app = FastAPI(title="LayerTracer dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    dashboard = dash_wsgi(settings)
    if dashboard is None:
        raise RuntimeError("the dashboard needs the 'dashboard' extra: pip install 'layertracer[dashboard]'")
    app.mount("/", dashboard, name="dashboard")
    return app
