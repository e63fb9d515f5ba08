"""Request dependencies: settings, a database session per request, authorisation, paging."""

from typing import Annotated, Iterator, Literal, Optional

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend import security
from backend.api.common import STALE_AFTER_KEY
from backend.db.models import Share
from backend.settings import Settings

API_PREFIX = "/api/v1"
# A URL can carry no NUL character (BodyLimit answers 400); the schema says so for text parameters.
NO_NUL = "^[^\\u0000]*$"
SHARE_HEADER = "X-Share-Token"


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; the routes commit their own writes."""
    session = request.app.state.sessionmaker()
    # Two missed heartbeats make a running job "stalled" in what the API shows (backend.api.common).
    session.info[STALE_AFTER_KEY] = 2 * request.app.state.settings.heartbeat_seconds
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


class Paging:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="rows per page")] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")] = 0,
        status: Annotated[Optional[Literal["", "queued", "running", "succeeded", "failed", "cancelled"]],
                          Query(description="job status filter ('' = any)")] = None,
        q: Annotated[Optional[str], Query(max_length=200, description="text in the name or model",
                                          json_schema_extra={"pattern": NO_NUL})] = None,
    ) -> None:
        self.limit, self.offset, self.status, self.q = limit, offset, status or None, q or None


PagingDep = Annotated[Paging, Depends()]


def _api_path(request: Request) -> str:
    path = request.scope.get("path", "")
    index = path.find(API_PREFIX + "/")
    return path[index + len(API_PREFIX):] if index >= 0 else path


def _share_grants(share: Share, method: str, path: str) -> bool:
    base = f"/{share.kind}s/{share.resource_id}"
    return path == base or path.startswith(base + "/")


# The credentials token mode takes, declared with fastapi.security so that the OpenAPI document has
# securitySchemes (and /docs an Authorize button); authorize() below decides what each one allows.
bearer_token = HTTPBearer(auto_error=False, scheme_name="token",
                          description="An API token (python -m backend.admin create-token NAME): reads and writes.")
share_header = APIKeyHeader(name=SHARE_HEADER, auto_error=False, scheme_name="share-header",
                            description="A share link's token: read-only access to one result.")
share_query = APIKeyQuery(name="share", auto_error=False, scheme_name="share-query",
                          description="A share link's token in the URL (?share=...): read-only access to one result.")


def authorize(request: Request, session: SessionDep, settings: SettingsDep,
              _token: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer_token)] = None,
              _share_header: Annotated[Optional[str], Depends(share_header)] = None,
              _share_query: Annotated[Optional[str], Depends(share_query)] = None) -> None:
    """In token mode: a live API token (``Authorization: Bearer``) allows everything; a share token
    (``?share=`` or ``X-Share-Token``) allows GET of its one resource and its sub-resources only."""
    if settings.auth != "token":
        request.state.principal = "local"  # local mode: the one user of this machine (loopback only)
        return
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        principal = security.token_principal(session, credential.strip())
        if principal is not None:
            request.state.principal = principal
            return
        raise HTTPException(401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"})
    share_text = request.query_params.get("share") or request.headers.get(SHARE_HEADER)
    if share_text:
        share_id = security.share_id_from_token(settings.secret_key, share_text)
        share = session.get(Share, share_id) if share_id else None
        if share is None:
            raise HTTPException(401, "invalid share link")
        if share.revoked_at is not None:
            raise HTTPException(403, "this share link has been revoked")
        if share.expires_at is not None and share.expires_at <= security.now():
            raise HTTPException(403, "this share link has expired")
        if request.method not in ("GET", "HEAD"):
            raise HTTPException(403, "a share link is read-only")
        if not _share_grants(share, request.method, _api_path(request)):
            raise HTTPException(403, "this share link does not grant access to this resource")
        request.state.principal = f"share:{share.id}"
        return
    raise HTTPException(
        401, "authentication required: send 'Authorization: Bearer <token>' or a share link",
        headers={"WWW-Authenticate": "Bearer"},
    )
