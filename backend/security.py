"""Path confinement, API tokens (sha256 hashes, constant-time compare) and signed share tokens.

No request state here: plain functions the API and the admin CLI share.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import ApiToken, new_id
from backend.db.types import utcnow

class PathError(ValueError):
    """A path the service will not touch; the message is one line."""


def _exists(source: "str | Path") -> bool:
    # Path.exists raises for names too long, "~unknownuser" and NUL: all mean "not a usable path".
    try:
        return Path(source).expanduser().exists()
    except (RuntimeError, OSError, ValueError):
        return False


def confine_path(path: str, roots: Sequence[Path], what: str = "path", *, must_exist: bool = True,
                 kind: Optional[str] = None) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside one of ``roots``; else PathError.

    A relative path is taken under each root in turn (the first where it exists wins; else the first
    root). ``kind``: ``"dir"`` or ``"file"`` to require one. The check runs on the fully resolved path,
    so ``..`` segments and symlinks pointing out of the roots are refused.
    """
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise PathError(f"{what} is empty or not a valid path")
    if not roots:
        raise PathError(f"no roots are configured for local {what}s")
    try:
        candidate = Path(path.strip()).expanduser()
    except RuntimeError:  # "~someone" for a user this machine does not know
        raise PathError(f"{what} {path!r}: cannot expand '~' there") from None
    if not candidate.is_absolute():
        for root in roots:
            if _exists(Path(root) / candidate):
                candidate = Path(root) / candidate
                break
        else:
            candidate = Path(roots[0]) / candidate
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError):
        raise PathError(f"{what} {path!r} cannot be resolved") from None
    resolved_roots = [Path(r).resolve() for r in roots]
    if not any(resolved == r or resolved.is_relative_to(r) for r in resolved_roots):
        raise PathError(f"{what} {path!r} is outside the allowed roots")
    exists = _exists(resolved)
    if must_exist and not exists:
        raise PathError(f"{what} {path!r} does not exist")
    if kind == "dir" and exists and not resolved.is_dir():
        raise PathError(f"{what} {path!r} is not a folder")
    if kind == "file" and exists and not resolved.is_file():
        raise PathError(f"{what} {path!r} is not a file")
    return resolved


# -- API tokens --------------------------------------------------------------------------------------
def hash_token(token: str) -> str:
    """sha256 hex of a token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, *, admin: bool = False) -> str:
    """Create an API token called ``name`` (an admin token with ``admin``); returns the token text
    (shown once, only its hash is kept)."""
    if not name or len(name) > 200:
        raise ValueError("a token needs a name of 1-200 characters")
    if session.execute(select(ApiToken.id).where(ApiToken.name == name)).first():
        raise ValueError(f"a token named {name!r} exists already (revoke it first)")
    token = "lt_" + secrets.token_urlsafe(32)
    session.add(ApiToken(id=new_id(), name=name, token_hash=hash_token(token), is_admin=admin))
    session.commit()
    return token


def revoke_token(session: Session, name: str) -> bool:
    """Revoke (delete) the token called ``name``; False if there is none."""
    row = session.execute(select(ApiToken).where(ApiToken.name == name)).scalar_one_or_none()
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True


def token_principal(session: Session, token: str) -> Optional[str]:
    """``"admin"`` or ``"token"`` for a live API token, None for anything else. Hashes are compared with
    hmac.compare_digest against every live token, so timing says nothing about how much of a guess
    matched."""
    wanted = hash_token(token)
    principal = None
    rows = session.execute(select(ApiToken.token_hash, ApiToken.is_admin).where(ApiToken.revoked_at.is_(None)))
    for stored, is_admin in rows:
        if hmac.compare_digest(stored, wanted):
            principal = "admin" if is_admin else "token"
    return principal


def check_token(session: Session, token: str) -> bool:
    """Whether ``token`` is a live API token (of either kind)."""
    return token_principal(session, token) is not None


# -- share tokens ------------------------------------------------------------------------------------
def _signature(secret_key: str, share_id: str) -> str:
    digest = hmac.new(secret_key.encode("utf-8"), f"share:{share_id}".encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def share_token(secret_key: str, share_id: str) -> str:
    """``<share_id>.<base64url HMAC-SHA256(secret_key, share_id)>``: unforgeable without the secret."""
    return f"{share_id}.{_signature(secret_key, share_id)}"


def share_id_from_token(secret_key: str, token: str) -> Optional[str]:
    """The share id of a correctly signed token, else None (the row still decides revocation/expiry)."""
    share_id, sep, signature = (token or "").partition(".")
    if not sep or not re.fullmatch(r"[0-9a-f]{32}", share_id):
        return None
    if not hmac.compare_digest(signature, _signature(secret_key, share_id)):
        return None
    return share_id


def now():
    return utcnow()
