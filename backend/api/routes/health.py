"""GET /health: liveness and the database check (never needs a token)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import text

from backend.api.deps import SessionDep, SettingsDep
from backend.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(session: SessionDep, settings: SettingsDep):
    """Service liveness: answers once the database does."""
    from backend import __version__

    try:
        session.execute(text("select 1"))
    except Exception:  # noqa: BLE001 - report, do not crash
        raise HTTPException(503, "the database does not answer") from None
    return {"status": "ok", "version": __version__, "database": session.get_bind().dialect.name,
            "auth": settings.auth}
