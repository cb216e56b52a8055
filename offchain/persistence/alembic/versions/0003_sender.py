"""Transaction sender: submission order, unclaimed intents, status checks, bump bookkeeping.

Revision ID: 0003_sender
Revises: 0002_indexer
Create Date: 2025-11-28

- `seq` (identity) orders intents as they were submitted; a partial index serves the worker's
  "next pending intents" scan.
- `chain_id` / `from_address` become nullable: a use case submits without knowing which sending
  key will carry the transaction; the key's worker fills them when it claims the intent.
- CHECKs: known statuses only, and nothing past `pending` without nonce, raw tx and hash (the
  sender persists those before it broadcasts).
- `fee_bumps`, `signed_at`: bookkeeping of re-signed transactions.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_sender"
down_revision: str | Sequence[str] | None = "0002_indexer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "caas_tx_intents"
STATUSES = "('pending', 'signed', 'broadcast', 'mined', 'confirmed', 'reverted', 'failed')"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False))
    op.add_column(TABLE, sa.Column("fee_bumps", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column(TABLE, sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
    op.alter_column(TABLE, "chain_id", existing_type=sa.BigInteger(), nullable=True)
    op.alter_column(TABLE, "from_address", existing_type=sa.String(42), nullable=True)
    op.create_index(
        "ix_caas_tx_intents_pending_seq",
        TABLE,
        ["seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_check_constraint(op.f("ck_caas_tx_intents_status_known"), TABLE, f"status IN {STATUSES}")
    op.create_check_constraint(
        op.f("ck_caas_tx_intents_signed_has_nonce"),
        TABLE,
        "status IN ('pending', 'failed') OR (nonce IS NOT NULL AND raw_tx IS NOT NULL "
        "AND tx_hash IS NOT NULL AND from_address IS NOT NULL AND chain_id IS NOT NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_caas_tx_intents_signed_has_nonce"), TABLE, type_="check")
    op.drop_constraint(op.f("ck_caas_tx_intents_status_known"), TABLE, type_="check")
    op.drop_index("ix_caas_tx_intents_pending_seq", table_name=TABLE)
    # Fails (on purpose) while unclaimed intents exist: they have no sender to put back.
    op.alter_column(TABLE, "from_address", existing_type=sa.String(42), nullable=False)
    op.alter_column(TABLE, "chain_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column(TABLE, "signed_at")
    op.drop_column(TABLE, "fee_bumps")
    op.drop_column(TABLE, "seq")
