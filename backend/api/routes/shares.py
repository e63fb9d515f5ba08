"""Shares: signed, revocable, optionally expiring read-only links to one trace or experiment."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from backend import security
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.resources import get_or_404, page
from backend.api.schemas import ShareCreate, SharePublic, SharesPublic
from backend.db.models import Experiment, Share, Trace, new_id
from backend.settings import Settings

router = APIRouter(prefix="/shares", tags=["shares"])
TABLES = {"trace": Trace, "experiment": Experiment}


def share_public(share: Share, settings: Settings) -> dict:
    token = security.share_token(settings.secret_key, share.id)
    now = security.now()
    return {
        "id": share.id, "kind": share.kind, "resource_id": share.resource_id, "token": token,
        "url": f"{settings.api_url.rstrip('/')}/api/v1/{share.kind}s/{share.resource_id}?share={token}",
        "dashboard_path": f"/{share.kind}s/{share.resource_id}?share={token}",
        "created_at": share.created_at, "expires_at": share.expires_at, "revoked": share.revoked_at is not None,
        "expired": share.expires_at is not None and share.expires_at <= now,
    }


@router.post("", response_model=SharePublic, status_code=201)
def create_share(body: ShareCreate, session: SessionDep, settings: SettingsDep):
    """Create a read-only link to one trace or experiment."""
    get_or_404(session, TABLES[body.kind], body.id, body.kind)
    expires = security.now() + timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    share = Share(id=new_id(), kind=body.kind, resource_id=body.id, expires_at=expires)
    session.add(share)
    session.commit()
    return share_public(share, settings)


@router.get("", response_model=SharesPublic)
def list_shares(session: SessionDep, settings: SettingsDep, paging: PagingDep,
                kind: Annotated[Optional[Literal["trace", "experiment"]], Query()] = None,
                resource_id: Annotated[Optional[str], Query(max_length=64)] = None):
    """Share links, newest first (filters: kind, resource_id)."""
    query = select(Share)
    if kind:
        query = query.where(Share.kind == kind)
    if resource_id:
        query = query.where(Share.resource_id == resource_id)
    rows, count = page(session, query, paging, order=(Share.created_at.desc(), Share.id))
    return {"data": [share_public(s, settings) for s in rows], "count": count}


@router.delete("/{share_id}", status_code=204)
def revoke_share(share_id: str, session: SessionDep):
    """Revoke a share link (it stops working at once)."""
    share = get_or_404(session, Share, share_id, "share")
    if share.revoked_at is None:
        share.revoked_at = security.now()
        session.commit()
    return Response(status_code=204)
