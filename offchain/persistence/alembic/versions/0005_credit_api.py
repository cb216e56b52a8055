"""Partner credit API: applications, offers, originations, approval signatures, idempotency keys.

Revision ID: 0005_credit_api
Revises: 0003_sender
Create Date: 2026-11-27

Every table is partner-owned: row-level security isolates it by `caas.partner_id` exactly as the
base schema does for its partner tables (offchain.persistence.security).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from offchain.persistence import security

revision: str = "0005_credit_api"
down_revision: str | Sequence[str] | None = "0003_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UINT256 = sa.Numeric(78, 0)
TIMESTAMP = sa.DateTime(timezone=True)
NOW = sa.text("now()")
PARTNER_TABLES = {
    "caas_applications": "partner_id",
    "caas_offers": "partner_id",
    "caas_originations": "partner_id",
    "caas_approval_signatures": "partner_id",
    "caas_idempotency_keys": "partner_id",
}


def upgrade() -> None:
    op.create_table(
        "caas_applications",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("sme_user_id", sa.String(200), nullable=False),
        sa.Column("borrower_ref", sa.String(66), nullable=False),
        sa.Column("amount", UINT256, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("tenor_months", sa.SmallInteger(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), server_default="submitted", nullable=False),
        sa.Column("decision", sa.dialects.postgresql.JSONB(), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("decided_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('submitted', 'underwriting', 'offered', 'declined', 'accepted', 'referred')",
            name=op.f("ck_caas_applications_status_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_caas_applications_amount_positive")),
        sa.CheckConstraint("tenor_months BETWEEN 1 AND 60", name=op.f("ck_caas_applications_tenor_range")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["caas_partners.id"], name=op.f("fk_caas_applications_partner_id_caas_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_applications")),
        sa.UniqueConstraint(
            "partner_id", "external_id", name=op.f("uq_caas_applications_partner_id_external_id")
        ),
    )
    op.create_index(op.f("ix_caas_applications_partner_id"), "caas_applications", ["partner_id"])
    op.create_index(
        op.f("ix_caas_applications_partner_id_created_at_id"),
        "caas_applications",
        ["partner_id", "created_at", "id"],
    )

    op.create_table(
        "caas_offers",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("amount", UINT256, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("tenor_months", sa.SmallInteger(), nullable=False),
        sa.Column("apr_bps", sa.Integer(), nullable=False),
        sa.Column("total_due", UINT256, nullable=False),
        sa.Column("terms", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(32), server_default="open", nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'accepted', 'expired', 'withdrawn')", name=op.f("ck_caas_offers_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["caas_applications.id"],
            name=op.f("fk_caas_offers_application_id_caas_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["caas_partners.id"], name=op.f("fk_caas_offers_partner_id_caas_partners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_offers")),
    )
    op.create_index(op.f("ix_caas_offers_partner_id"), "caas_offers", ["partner_id"])
    op.create_index(op.f("ix_caas_offers_application_id"), "caas_offers", ["application_id"])

    op.create_table(
        "caas_originations",
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("offer_id", sa.Uuid(), nullable=False),
        sa.Column("payout_method", sa.String(32), nullable=False),
        sa.Column("payout_bank_code", sa.String(16), nullable=True),
        sa.Column("payout_account_number", sa.String(32), nullable=False),
        sa.Column("agreement", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column("terms_hash", sa.String(66), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "terms_hash ~ '^0x[0-9a-f]{64}$'", name=op.f("ck_caas_originations_terms_hash_hex")
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["caas_applications.id"],
            name=op.f("fk_caas_originations_application_id_caas_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["caas_loans.id"], name=op.f("fk_caas_originations_loan_id_caas_loans")
        ),
        sa.ForeignKeyConstraint(
            ["offer_id"], ["caas_offers.id"], name=op.f("fk_caas_originations_offer_id_caas_offers")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["caas_partners.id"], name=op.f("fk_caas_originations_partner_id_caas_partners")
        ),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_caas_originations")),
        sa.UniqueConstraint("application_id", name=op.f("uq_caas_originations_application_id")),
        sa.UniqueConstraint("offer_id", name=op.f("uq_caas_originations_offer_id")),
    )
    op.create_index(op.f("ix_caas_originations_partner_id"), "caas_originations", ["partner_id"])

    op.create_table(
        "caas_approval_signatures",
        sa.Column("loan_id", sa.Uuid(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("signer", sa.String(42), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("signature", sa.String(132), nullable=False),
        sa.Column("deadline", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["loan_id"], ["caas_loans.id"], name=op.f("fk_caas_approval_signatures_loan_id_caas_loans")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["caas_partners.id"],
            name=op.f("fk_caas_approval_signatures_partner_id_caas_partners"),
        ),
        sa.PrimaryKeyConstraint("loan_id", "epoch", "signer", name=op.f("pk_caas_approval_signatures")),
    )
    op.create_index(
        op.f("ix_caas_approval_signatures_partner_id"), "caas_approval_signatures", ["partner_id"]
    )

    op.create_table(
        "caas_idempotency_keys",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), server_default="in_flight", nullable=False),
        sa.Column("response_status", sa.SmallInteger(), nullable=True),
        sa.Column("response_body", sa.dialects.postgresql.JSONB(), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "state IN ('in_flight', 'completed')", name=op.f("ck_caas_idempotency_keys_state_known")
        ),
        sa.PrimaryKeyConstraint("partner_id", "key", name=op.f("pk_caas_idempotency_keys")),
    )
    op.create_index(op.f("ix_caas_idempotency_keys_expires_at"), "caas_idempotency_keys", ["expires_at"])

    for table, column in PARTNER_TABLES.items():
        op.execute(security.grant_table(table))
        for statement in security.partner_policies(table, column):
            op.execute(statement)


def downgrade() -> None:
    for table in reversed(list(PARTNER_TABLES)):
        op.drop_table(table)
