"""Transaction intents keep the trace context of the request or event that asked for them.

Revision ID: 0008_intent_trace
Revises: 0007_monitoring
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_intent_trace"
down_revision: str | Sequence[str] | None = "0007_monitoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("caas_tx_intents", sa.Column("trace_context", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("caas_tx_intents", "trace_context")
