"""Run and check the `caas_` migrations from code (`caas migrate`, `caas up`, tests), from any cwd.

The database may be shared with the SME platform (DESIGN: "extend existing PostgreSQL"), so
alembic only ever looks at `caas_` tables and keeps its own version table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, pool

import offchain.persistence.collections  # COB runs, actions, promises, write-offs
import offchain.persistence.credit  # registers the credit API tables on Base.metadata
import offchain.persistence.ledger  # registers the ledger tables on Base.metadata
import offchain.persistence.money  # payouts, payments, payment routes
import offchain.persistence.notifications  # noqa: F401 - webhooks and borrower messages
from offchain.persistence.models import Base
from offchain.platform.db import sync_url

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
VERSION_TABLE = "caas_alembic_version"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    if type_ == "table":
        return bool(name) and str(name).startswith("caas_") and name != VERSION_TABLE
    return True


def context_options() -> dict[str, Any]:
    """What env.py and `schema_diff` both configure alembic with."""
    return {
        "target_metadata": Base.metadata,
        "version_table": VERSION_TABLE,
        "include_name": include_name,
        "compare_type": True,
    }


def alembic_config(url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def heads() -> list[str]:
    """The tree's head revisions: exactly one while migrations are chained as they should be."""
    return list(ScriptDirectory.from_config(alembic_config("")).get_heads())


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def schema_diff(url: str, metadata: MetaData | None = None) -> list[Any]:
    """Differences between the models and the migrated database; empty when they agree."""
    metadata = Base.metadata if metadata is None else metadata
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=context_options())
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()
