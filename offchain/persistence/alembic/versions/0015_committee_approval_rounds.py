"""Approvals as a state machine per loan: `caas_approval_rounds` serializes a loan's approval
posts and counts its `approve_with_signatures` submissions (one tx intent per attempt).

Revision ID: 0015_committee_approval_rounds
Revises: 0014_edges_early_money
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from offchain.persistence import security

revision: str = "0015_committee_approval_rounds"
down_revision: str | Sequence[str] | None = "0014_edges_early_money"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "caas_approval_rounds"
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=True),
        sa.Column("tx_intent_key", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_caas_approval_rounds_attempts_not_negative")),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["caas_loans.id"], name=op.f("fk_caas_approval_rounds_loan_id_caas_loans")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["caas_partners.id"],
            name=op.f("fk_caas_approval_rounds_partner_id_caas_partners"),
        ),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_caas_approval_rounds")),
    )
    op.create_index(op.f("ix_caas_approval_rounds_partner_id"), TABLE, ["partner_id"])
    op.execute(security.grant_table(TABLE))
    for statement in security.partner_policies(TABLE, "partner_id"):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table(TABLE)
