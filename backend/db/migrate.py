"""Apply the Alembic migrations in ``backend/db/migrations`` (at API and worker start).

The API and the workers start at the same time (``layertracer up``) and each migrates: a Postgres
advisory lock, or a lock file next to the SQLite database, lets one process migrate while the others
wait, then find the database at head.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import pool, text

from backend.settings import normalize_database_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_LOCK_KEY = 0x4C54_4D49_4752  # "LTMIGR": any fixed 64-bit key shared by every LayerTracer process


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # '%' must be doubled for configparser interpolation.
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return cfg


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``; idempotent and safe to call from several processes
    at once (creates the SQLite folder if needed)."""
    url = normalize_database_url(url)
    cfg = alembic_config(url)
    if url.startswith("sqlite"):
        database = url.split(":///", 1)[1] if ":///" in url else ""
        if not database or database.startswith(":memory:"):
            command.upgrade(cfg, revision)
            return
        with _file_lock(Path(database).with_name(Path(database).name + ".migrate.lock")):
            command.upgrade(cfg, revision)
        return
    from backend.db.session import make_engine

    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
            conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()
