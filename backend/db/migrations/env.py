"""Alembic environment: runs migrations against ``sqlalchemy.url`` (set by backend.db.migrate)."""

from alembic import context
from sqlalchemy import pool

from backend.db.models import Base
from backend.db.session import make_engine

config = context.config
target_metadata = Base.metadata
if not config.get_main_option("sqlalchemy.url"):  # the alembic CLI: the service's own settings
    from backend.settings import get_settings

    config.set_main_option("sqlalchemy.url", get_settings().database_url.replace("%", "%%"))
if config.config_file_name is not None and config.get_section("loggers"):
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Foreign keys off on SQLite: batch mode re-creates tables, and DROP TABLE would cascade to children.
    engine = make_engine(config.get_main_option("sqlalchemy.url"), foreign_keys=False, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
