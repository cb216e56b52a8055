"""Join the five heads that areas built side by side left behind into one.

`alembic upgrade head` (singular) refused the tree while it had five heads, and a new migration
had no one revision to follow. From here on every migration revises exactly one parent and the
tree keeps one head (tests/offchain/integration/test_migrations.py checks it).

Revision ID: 0011_one_head
Revises: 0006_collections, 0006_ledger, 0006_notifications, 0008_intent_trace,
         0010_partner_reads_plpgsql
Create Date: 2026-12-07
"""

from collections.abc import Sequence

revision: str = "0011_one_head"
down_revision: str | Sequence[str] | None = (
    "0006_collections",
    "0006_ledger",
    "0006_notifications",
    "0008_intent_trace",
    "0010_partner_reads_plpgsql",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to change: a merge point only."""


def downgrade() -> None:
    """Nothing to change: a merge point only."""
