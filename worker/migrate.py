"""``python -m worker.migrate``: bring the configured database to the latest schema (used by ``up``
before it starts the API and the worker, so the two never race to create the same tables)."""

from backend.db.migrate import upgrade
from backend.settings import get_settings

if __name__ == "__main__":
    upgrade(get_settings().database_url)
