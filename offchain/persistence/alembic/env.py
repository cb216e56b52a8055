"""Alembic environment for the `caas_` schema (options shared with offchain.persistence.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from offchain.persistence.migrate import context_options
from offchain.platform.db import sync_url

# Replicas may all run `caas migrate` at start-up: one at a time.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('caas:migrate'))"

config = context.config


def _database_url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        from offchain.platform.settings import Settings

        url = Settings().database.url
    if not url:
        raise RuntimeError("no database URL: set DATABASE_URL or pass -x url=...")
    return str(url)


def run_offline() -> None:
    context.configure(url=sync_url(_database_url()), literal_binds=True, **context_options())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(sync_url(_database_url()), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, **context_options())
            with context.begin_transaction():
                conn.execute(text(MIGRATION_LOCK))
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
