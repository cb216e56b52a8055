"""Storage: SQLAlchemy 2 models of the `caas_` tables and their Alembic migrations."""
