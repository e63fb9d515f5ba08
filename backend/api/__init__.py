"""The FastAPI app: ``create_app(settings)`` -> routes under ``/api/v1``, OpenAPI docs at ``/docs``.

Errors are ``{"detail": "one line"}`` with a 4xx (validation errors included); an unexpected error is a
500 with a generic line (details go to the log, not to the client).
"""

from __future__ import annotations

import json
import logging
from typing import Optional

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend import __version__
from backend.api.cache import ResultCache
from backend.api.deps import API_PREFIX, authorize
from backend.api.routes import experiments, health, jobs, models, paths, shares, tasksets, traces
from backend.api.schemas import ERROR_RESPONSES
from backend.db.migrate import upgrade
from backend.db.session import make_engine, make_sessionmaker
from backend.exposure import ExposureGuard
from backend.settings import Settings, get_settings

log = logging.getLogger("layertracer.api")


def _one_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return " ".join(f"{where}: {message}{more}".split())


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (by Content-Length or while streaming) and URLs
    with NUL characters with 400."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Postgres text cannot hold NUL: refuse it in the path and query string before any handler.
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        query = scope.get("query_string", b"")
        if b"%00" in raw.lower() or b"\x00" in raw or b"%00" in query or b"\x00" in query \
                or "\x00" in scope.get("path", ""):
            return await _send_error(send, 400, "NUL characters are not allowed in the URL")
        # Multipart framing adds a little to the file itself; allow 64 KiB of it.
        limit = self.limit + 64 * 1024
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    return await _send_error(send, 413, f"the request body is larger than {self.limit} bytes")
        received = 0
        rejected = False

        async def limited_receive():
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await _send_error(send, 413, f"the request body is larger than {self.limit} bytes")


class _TooLarge(Exception):
    pass


async def _send_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _document_without_credentials(app: FastAPI) -> None:
    """Local mode takes no credentials: its OpenAPI document declares no security schemes and no 401,
    so that it describes the API as it answers (token mode documents both)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.get("components", {}).pop("securitySchemes", None)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if isinstance(operation, dict):
                        operation.pop("security", None)
                        operation.get("responses", {}).pop("401", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Optional[Settings] = None, *, migrate: bool = True) -> FastAPI:
    """The API app for ``settings`` (default: from the environment); applies migrations first."""
    settings = settings or get_settings()
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    app = FastAPI(
        title="LayerTracer API", version=__version__,
        description="Layer diagnostics for causal LMs: traces, freeze plans, trials and experiments.",
        docs_url="/docs", openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.result_cache = ResultCache()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": " ".join(detail.split())}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (see the API log)"}, status_code=500)

    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    api.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(authorize)])
    for module in (models, tasksets, traces, experiments, jobs, shares, paths):
        protected.include_router(module.router)
    api.include_router(protected)
    app.include_router(api)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=[str(o) for o in settings.cors_origins],
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Share-Token", "Idempotency-Key"])
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    if settings.auth != "token":
        _document_without_credentials(app)
    # Outermost: a request from an unexpected host or peer is refused before anything else reads it.
    app.add_middleware(ExposureGuard, allowed_hosts=settings.allowed_hosts, local_only=settings.local_only)
    if settings.auth == "none" and settings.insecure_expose_without_auth:
        log.warning("LAYERTRACER_INSECURE_EXPOSE_WITHOUT_AUTH is set: this API has no authentication and answers "
                    "any peer; only an authenticating gateway in front of it keeps it private")
    return app
