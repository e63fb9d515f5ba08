"""Services for the end-to-end tests: a tiny saved model under a model root, a fresh Postgres database
and a dedicated Redis database for the session, and the service in embedded and in served mode."""

from __future__ import annotations

import uuid

import pytest

import hub_cache
import tiny_models
from harness import HUB_COMMIT, HUB_REPO, Service

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_DB = 13  # a database of its own, flushed before and after


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """A folder holding ``tiny`` (a 4-block Qwen3 with its tokenizer): the service's model root."""
    root = tmp_path_factory.mktemp("models")
    tiny_models.save_tiny_model("qwen3", root / "tiny", tiny_models.build_tokenizer())
    return root


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory, model_root):
    """A Hugging Face cache in the hub's layout holding ``acme/tiny`` (the tiny model; main and tag v1)."""
    root = tmp_path_factory.mktemp("hf") / "hub"
    hub_cache.lay_out(root, HUB_REPO, model_root / "tiny", commit=HUB_COMMIT, refs={"main": HUB_COMMIT, "v1": HUB_COMMIT})
    return root


@pytest.fixture(scope="session")
def new_pg_database():
    """A function returning the URL of a new, empty Postgres database; all are dropped at session end."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("Postgres at 127.0.0.1:5432 does not answer")
    names: list[str] = []

    def create() -> str:
        name = f"lt_e2e_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    yield create
    for name in names:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def pg_url(new_pg_database):
    return new_pg_database()


def _redis(db: int):
    redis = pytest.importorskip("redis")
    url = f"redis://127.0.0.1:6379/{db}"
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pytest.skip("Redis at 127.0.0.1:6379 does not answer")
    return url, client


@pytest.fixture(scope="session")
def redis_url():
    """Redis database 13 (flushed before and after) for the ``served`` service."""
    url, client = _redis(REDIS_DB)
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def other_redis_url():
    """Redis database 12, for a second served deployment beside ``served`` (flushed before and after)."""
    url, client = _redis(REDIS_DB - 1)
    yield url
    client.flushdb()
    client.close()


def _service(tmp_path_factory, name, model_root, hub_root, **urls) -> Service:
    service = Service(tmp_path_factory.mktemp(name), model_roots=(model_root,),
                      extra_env={"HF_HUB_CACHE": str(hub_root)}, **urls)
    try:
        service.start_api()
        service.start_worker()
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture(scope="session")
def embedded(tmp_path_factory, model_root, hub_root):
    """SQLite + the filesystem broker under the data folder, one worker."""
    service = _service(tmp_path_factory, "embedded", model_root, hub_root)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def served(tmp_path_factory, model_root, hub_root, pg_url, redis_url):
    """Postgres + Redis, one worker."""
    service = _service(tmp_path_factory, "served", model_root, hub_root, database_url=pg_url, broker_url=redis_url)
    yield service
    service.stop()


@pytest.fixture(params=["embedded", "served"])
def service(request) -> Service:
    """Each mode in turn, with exactly one live worker when the test starts."""
    svc: Service = request.getfixturevalue(request.param)
    for process in list(svc.workers):
        if process.poll() is not None:
            svc.workers.remove(process)
    while len(svc.workers) < 1:
        svc.start_worker()
    return svc
