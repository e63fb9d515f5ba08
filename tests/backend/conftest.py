"""Real databases for the backend tests: a SQLite file per test and a fresh Postgres database per
session (dropped afterwards; tables emptied between tests). Postgres tests skip only if the server at
127.0.0.1:5432 does not answer."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from backend.db.migrate import upgrade
from backend.db.models import Base
from backend.db.session import make_engine

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LOCAL_BASE_URL = "http://127.0.0.1:8000"


def _pg_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure to connect means "not available here"
        return False


@pytest.fixture(scope="session")
def pg_url():
    """URL of a fresh, migrated Postgres database for this test session (dropped at the end)."""
    if not _pg_available():
        pytest.skip("Postgres at 127.0.0.1:5432 does not answer")
    name = f"lt_backend_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(engine) -> None:
    with engine.begin() as conn:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path: Path):
    """A migrated, empty database URL: SQLite (a file in tmp_path) or Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    _truncate(engine)
    yield url
    _truncate(engine)
    engine.dispose()


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    """A model root with a model folder, a corpus, a benchmark folder and a trace file in it."""
    root = tmp_path / "roots"
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text("{}")
    (root / "corpus.txt").write_text("some text\n")
    (root / "bench" / "cmmlu").mkdir(parents=True)
    (root / "trace.json").write_text("{}")
    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "config.json").write_text("{}")
    (root / "escape").symlink_to(outside / "model", target_is_directory=True)
    return root


@pytest.fixture
def make_client(db_url, tmp_path: Path, roots: Path):
    """make_client(**settings) -> a TestClient over create_app with a real database and broker folder."""
    from fastapi.testclient import TestClient

    from backend.api import create_app
    from backend.settings import Settings

    clients = []

    def make(**overrides):
        values = dict(data_dir=tmp_path / "data", database_url=db_url, model_roots=[roots])
        values.update(overrides)
        app = create_app(Settings(**values))
        # A loopback Host, as a browser on this machine sends it (local mode answers loopback names only).
        client = TestClient(app, base_url=LOCAL_BASE_URL)
        clients.append((client, app))
        return client

    yield make
    for client, app in clients:
        client.close()
        app.state.engine.dispose()


@pytest.fixture
def client(make_client):
    return make_client()
