"""Early money: payments held for a loan that is not repayable yet, and payments under review.

- caas_payments.status gains `held` (paid before the loan is ACTIVE: applied when it is) and
  `review` (nothing to apply it to: the loan is closed; an operator refunds or re-matches it);
- caas_payments.held_posting / applied_posting: the ledger postings that put the money into the
  loan's held account and that apply it from there (a chargeback and a refusal undo them);
- caas_ledger_accounts.kind gains `loan_held` (`loan:<id>:held`).

Revision ID: 0014_edges_early_money
Revises: 0013_trust_intent_caller
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_edges_early_money"
down_revision: str | Sequence[str] | None = "0013_trust_intent_caller"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = (
    "received",
    "unmatched",
    "pending_chain",
    "recorded",
    "credited",
    "reversal_pending",
    "reversed",
)
_NEW_STATUSES = (*_OLD_STATUSES, "held", "review")
_OLD_KINDS = (
    "loan_receivable",
    "loan_unearned_income",
    "borrower_credit",
    "partner_funding",
    "rail_clearing",
    "suspense",
    "fee_income",
    "interest_income",
    "credit_losses",
    "rail_fees",
    "rail_fees_recovered",
)
_NEW_KINDS = (*_OLD_KINDS[:2], "loan_held", *_OLD_KINDS[2:])


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_caas_payments_status_known"), "caas_payments", type_="check")
    op.create_check_constraint(
        op.f("ck_caas_payments_status_known"), "caas_payments", _in("status", _NEW_STATUSES)
    )
    op.add_column("caas_payments", sa.Column("held_posting", sa.String(200), nullable=True))
    op.add_column("caas_payments", sa.Column("applied_posting", sa.String(200), nullable=True))
    # the sweep and the activation look up a loan's held payments
    op.create_index(
        op.f("ix_caas_payments_held"),
        "caas_payments",
        ["loan_id", "created_at"],
        postgresql_where=sa.text("status = 'held'"),
    )
    op.drop_constraint(op.f("ck_caas_ledger_accounts_kind_known"), "caas_ledger_accounts", type_="check")
    op.create_check_constraint(
        op.f("ck_caas_ledger_accounts_kind_known"), "caas_ledger_accounts", _in("kind", _NEW_KINDS)
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_caas_ledger_accounts_kind_known"), "caas_ledger_accounts", type_="check")
    op.create_check_constraint(
        op.f("ck_caas_ledger_accounts_kind_known"), "caas_ledger_accounts", _in("kind", _OLD_KINDS)
    )
    op.drop_index(op.f("ix_caas_payments_held"), table_name="caas_payments")
    op.drop_column("caas_payments", "applied_posting")
    op.drop_column("caas_payments", "held_posting")
    op.drop_constraint(op.f("ck_caas_payments_status_known"), "caas_payments", type_="check")
    op.create_check_constraint(
        op.f("ck_caas_payments_status_known"), "caas_payments", _in("status", _OLD_STATUSES)
    )
