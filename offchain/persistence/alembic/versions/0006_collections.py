"""Collections: close-of-business runs, per-loan daily results, actions, promises to pay,
write-off proposals.

Revision ID: 0006_collections
Revises: 0005_credit_api
Create Date: 2026-11-27

`caas_cob_runs` is platform-wide; the other tables are partner-owned and isolated by row-level
security exactly like 0005's (offchain.persistence.security).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from offchain.persistence import security

revision: str = "0006_collections"
down_revision: str | Sequence[str] | None = "0005_credit_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UINT256 = sa.Numeric(78, 0)
TIMESTAMP = sa.DateTime(timezone=True)
NOW = sa.text("now()")
JSON_EMPTY = sa.text("'{}'::jsonb")
PARTNER_TABLES = {
    "caas_collection_days": "partner_id",
    "caas_collection_actions": "partner_id",
    "caas_promises_to_pay": "partner_id",
    "caas_write_off_proposals": "partner_id",
}


def _loan_and_partner(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(["loan_id"], ["caas_loans.id"], name=op.f(f"fk_{table}_loan_id_caas_loans")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["caas_partners.id"], name=op.f(f"fk_{table}_partner_id_caas_partners")
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "caas_cob_runs",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), server_default="running", nullable=False),
        sa.Column("evaluated_at", sa.BigInteger(), nullable=True),
        sa.Column("loans_processed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("summary", postgresql.JSONB(), server_default=JSON_EMPTY, nullable=False),
        sa.Column("started_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("status IN ('running', 'completed')", name=op.f("ck_caas_cob_runs_status_known")),
        sa.PrimaryKeyConstraint("business_date", name=op.f("pk_caas_cob_runs")),
    )

    op.create_table(
        "caas_collection_days",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("chain_state", sa.SmallInteger(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("cbn_class", sa.String(32), nullable=False),
        sa.Column("currency", sa.Integer(), nullable=False),
        sa.Column("outstanding", UINT256, nullable=False),
        sa.Column("amount_due", UINT256, nullable=False),
        sa.Column("provision", UINT256, nullable=False),
        sa.Column("dunning_paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        *_loan_and_partner("caas_collection_days"),
        sa.PrimaryKeyConstraint("business_date", "loan_id", name=op.f("pk_caas_collection_days")),
    )
    op.create_index(op.f("ix_caas_collection_days_partner_id"), "caas_collection_days", ["partner_id"])
    op.create_index(
        op.f("ix_caas_collection_days_loan_id_business_date"),
        "caas_collection_days",
        ["loan_id", "business_date"],
    )

    op.create_table(
        "caas_collection_actions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("action_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(200), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("template", sa.String(64), nullable=True),
        sa.Column("notification_id", sa.String(64), nullable=True),
        sa.Column("tx_idempotency_key", sa.String(200), nullable=True),
        sa.Column("details", postgresql.JSONB(), server_default=JSON_EMPTY, nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        *_loan_and_partner("caas_collection_actions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_collection_actions")),
        sa.UniqueConstraint(
            "loan_id", "action_key", name=op.f("uq_caas_collection_actions_loan_id_action_key")
        ),
    )
    op.create_index(op.f("ix_caas_collection_actions_partner_id"), "caas_collection_actions", ["partner_id"])
    op.create_index(
        op.f("ix_caas_collection_actions_business_date"), "caas_collection_actions", ["business_date"]
    )

    op.create_table(
        "caas_promises_to_pay",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("amount", UINT256, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=False),
        sa.Column("repaid_baseline", UINT256, nullable=False),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("resolved_on", sa.Date(), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'kept', 'broken')", name=op.f("ck_caas_promises_to_pay_status_known")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_caas_promises_to_pay_amount_positive")),
        *_loan_and_partner("caas_promises_to_pay"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_promises_to_pay")),
    )
    op.create_index(op.f("ix_caas_promises_to_pay_partner_id"), "caas_promises_to_pay", ["partner_id"])
    op.create_index(
        op.f("ix_caas_promises_to_pay_loan_id_status"), "caas_promises_to_pay", ["loan_id", "status"]
    )

    op.create_table(
        "caas_write_off_proposals",
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("chain_loan_id", sa.String(66), nullable=False),
        sa.Column("committee", sa.String(42), nullable=False),
        sa.Column("action", sa.SmallInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("calldata", sa.Text(), nullable=False),
        sa.Column("outstanding", UINT256, nullable=False),
        sa.Column("currency", sa.Integer(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("tx_idempotency_key", sa.String(200), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('awaiting_signers', 'submitted')",
            name=op.f("ck_caas_write_off_proposals_status_known"),
        ),
        *_loan_and_partner("caas_write_off_proposals"),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_caas_write_off_proposals")),
    )
    op.create_index(
        op.f("ix_caas_write_off_proposals_partner_id"), "caas_write_off_proposals", ["partner_id"]
    )

    op.execute(security.grant_table("caas_cob_runs"))
    for table, column in PARTNER_TABLES.items():
        op.execute(security.grant_table(table))
        for statement in security.partner_policies(table, column):
            op.execute(statement)


def downgrade() -> None:
    for table in reversed(list(PARTNER_TABLES)):
        op.drop_table(table)
    op.drop_table("caas_cob_runs")
