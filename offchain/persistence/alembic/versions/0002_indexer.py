"""Chain indexer: a complete mirror of LoanBook.loans(), event-chain bookkeeping, block times.

Revision ID: 0002_indexer
Revises: 0001
Create Date: 2025-11-28

- `caas_loans` gains the remaining fields of `LoanBook.loans()` that events carry
  (`scheduled_repaid`, `late_fees_paid`, `ever_defaulted`), so the mirror can be compared with
  the contract field by field; `event_count` and `event_chain_checked_block` say how many events
  the running `event_chain` folds and at which block it was last compared with the contract.
- Partial indexes list the loans whose event chain disagrees with the contract (few, watched)
  and those not compared yet (indexed deeper than the node keeps state; checked once caught up).
- `caas_chain_events.block_timestamp`: the block's time, kept after the block leaves the reorg
  window of `caas_indexed_blocks` (consumers and analytics date events by it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_indexer"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UINT256 = sa.Numeric(78, 0)
ZERO = sa.text("0")


def upgrade() -> None:
    op.add_column("caas_loans", sa.Column("scheduled_repaid", UINT256, server_default=ZERO, nullable=False))
    op.add_column("caas_loans", sa.Column("late_fees_paid", UINT256, server_default=ZERO, nullable=False))
    op.add_column(
        "caas_loans",
        sa.Column("ever_defaulted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("caas_loans", sa.Column("event_count", sa.Integer(), server_default=ZERO, nullable=False))
    op.add_column("caas_loans", sa.Column("event_chain_checked_block", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_caas_loans_event_chain_mismatch",
        "caas_loans",
        ["chain_loan_id"],
        postgresql_where=sa.text("event_chain_mismatch"),
    )
    op.create_index(
        "ix_caas_loans_event_chain_unchecked",
        "caas_loans",
        ["last_block_number"],
        postgresql_where=sa.text(
            "event_count > 0 AND (event_chain_checked_block IS NULL "
            "OR event_chain_checked_block < last_block_number)"
        ),
    )
    op.add_column("caas_chain_events", sa.Column("block_timestamp", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("caas_chain_events", "block_timestamp")
    op.drop_index("ix_caas_loans_event_chain_unchecked", table_name="caas_loans")
    op.drop_index("ix_caas_loans_event_chain_mismatch", table_name="caas_loans")
    for column in (
        "event_chain_checked_block",
        "event_count",
        "ever_defaulted",
        "late_fees_paid",
        "scheduled_repaid",
    ):
        op.drop_column("caas_loans", column)
