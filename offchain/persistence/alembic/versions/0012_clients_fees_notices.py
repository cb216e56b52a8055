"""Paystack's fees apart from the borrower's repayment, and notices the provider did not confirm.

- caas_payments.provider_fee / payer_fee: the provider's fee on a charge and the part of the
  charge the payer paid on top of the repayment (Paystack's `amount` vs `requested_amount`);
- the ledger's chart gains `rail:<rail>:fees` (expense) and `rail:<rail>:fees_recovered` (income);
- caas_payment_notices: "charge X succeeded" notices the provider's own verify did not confirm
  (not found, not successful): an outcome operators list, not a dead letter.

Revision ID: 0012_clients_fees_notices
Revises: 0011_one_head
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from offchain.persistence import security

revision: str = "0012_clients_fees_notices"
down_revision: str | Sequence[str] | None = "0011_one_head"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the chart of accounts' kinds (offchain.domain.ledger.AccountKind) as of this revision
KINDS_BEFORE = (
    "loan_receivable",
    "loan_unearned_income",
    "borrower_credit",
    "partner_funding",
    "rail_clearing",
    "suspense",
    "fee_income",
    "interest_income",
    "credit_losses",
)
KINDS = (*KINDS_BEFORE, "rail_fees", "rail_fees_recovered")
KIND_CHECK = "ck_caas_ledger_accounts_kind_known"


def upgrade() -> None:
    op.add_column(
        "caas_payments",
        sa.Column(
            "provider_fee", sa.Numeric(precision=78, scale=0), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column(
        "caas_payments",
        sa.Column(
            "payer_fee", sa.Numeric(precision=78, scale=0), server_default=sa.text("0"), nullable=False
        ),
    )
    op.drop_constraint(op.f(KIND_CHECK), "caas_ledger_accounts", type_="check")
    op.create_check_constraint(op.f(KIND_CHECK), "caas_ledger_accounts", f"kind IN {KINDS}")

    op.create_table(
        "caas_payment_notices",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="not_confirmed", nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "claimed",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("notices", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column(
            "first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('not_confirmed', 'confirmed')", name=op.f("ck_caas_payment_notices_status_known")
        ),
        sa.CheckConstraint(
            "reason IN ('not_found', 'not_successful', 'unusable_reference')",
            name=op.f("ck_caas_payment_notices_reason_known"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["caas_payments.id"],
            name=op.f("fk_caas_payment_notices_payment_id_caas_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_payment_notices")),
        sa.UniqueConstraint("provider", "reference", name=op.f("uq_caas_payment_notices_provider_reference")),
    )
    op.create_index(
        op.f("ix_caas_payment_notices_status_last_seen_at"),
        "caas_payment_notices",
        ["status", "last_seen_at"],
        unique=False,
    )
    op.execute(security.grant_table("caas_payment_notices"))


def downgrade() -> None:
    op.drop_index(op.f("ix_caas_payment_notices_status_last_seen_at"), table_name="caas_payment_notices")
    op.drop_table("caas_payment_notices")
    op.execute("DELETE FROM caas_ledger_accounts WHERE kind IN ('rail_fees', 'rail_fees_recovered')")
    op.drop_constraint(op.f(KIND_CHECK), "caas_ledger_accounts", type_="check")
    op.create_check_constraint(op.f(KIND_CHECK), "caas_ledger_accounts", f"kind IN {KINDS_BEFORE}")
    op.drop_column("caas_payments", "payer_fee")
    op.drop_column("caas_payments", "provider_fee")
