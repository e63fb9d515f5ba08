"""Engines and sessions. One engine per process and URL; ``session_scope`` commits, rolls back, closes."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from backend.settings import normalize_database_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, foreign_keys: bool = True, **kwargs) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql://...``, normalised to psycopg 3).

    SQLite gets WAL (readers never block the writer), a 30 s busy timeout (writers queue instead of
    failing) and foreign keys on (``foreign_keys=False`` for migrations: Alembic's batch mode re-creates
    tables, and with foreign keys on SQLite's DROP TABLE would cascade-delete the child rows); Postgres
    gets pre-ping so a restarted server does not break a worker.
    """
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        connect_args.update(kwargs.pop("connect_args", {}))
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects returned by job functions stay readable after their commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """``with session_scope(engine) as s:`` commits on success, rolls back on error, always closes."""
    session = Session(bind=engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
