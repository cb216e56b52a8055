"""Base caas_ schema: partners, chain index, loans mirror, tx intents, outbox, audit log; RLS.

Revision ID: 0001
Revises:
Create Date: 2025-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from offchain.persistence import security

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BYTES32 = "^0x[0-9a-f]{64}$"
NOW = sa.text("now()")
UINT256 = sa.Numeric(78, 0)

TABLES = (
    "caas_partners",
    "caas_chain_events",
    "caas_indexer_checkpoints",
    "caas_indexed_blocks",
    "caas_loans",
    "caas_tx_intents",
    "caas_outbox",
    "caas_consumed_events",
    "caas_audit_log",
)
# table -> (partner column, NULL rows shared)
PARTNER_SCOPED = {
    "caas_partners": ("id", False),
    "caas_loans": ("partner_id", False),
    "caas_outbox": ("partner_id", True),
    "caas_audit_log": ("partner_id", True),
}


def _hex_check(table: str, column: str, name: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} ~ '{BYTES32}'", name=op.f(f"ck_{table}_{name}"))


def _ts(name: str, *, nullable: bool = False, default: bool = True) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=NOW if default else None,
    )


def upgrade() -> None:
    for role in security.ROLES:
        op.execute(security.create_role(role))
    op.execute(security.grant_schema_usage())
    op.execute(security.CURRENT_PARTNER_FUNCTION)

    op.create_table(
        "caas_partners",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("chain_ref", sa.String(66), nullable=True),
        sa.Column("status", sa.String(32), server_default="active", nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_partners")),
        sa.UniqueConstraint("chain_ref", name=op.f("uq_caas_partners_chain_ref")),
        _hex_check("caas_partners", "chain_ref", "chain_ref_hex"),
    )

    op.create_table(
        "caas_chain_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("contract", sa.String(64), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("loan_id", sa.String(66), nullable=True),
        sa.Column(
            "args",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("topics", postgresql.ARRAY(sa.String(66)), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_chain_events")),
        sa.UniqueConstraint(
            "chain_id",
            "block_hash",
            "tx_hash",
            "log_index",
            name=op.f("uq_caas_chain_events_chain_id_block_hash_tx_hash_log_index"),
        ),
        _hex_check("caas_chain_events", "block_hash", "block_hash_hex"),
        _hex_check("caas_chain_events", "tx_hash", "tx_hash_hex"),
        _hex_check("caas_chain_events", "loan_id", "loan_id_hex"),
    )
    op.create_index(
        op.f("ix_caas_chain_events_chain_id_block_number"),
        "caas_chain_events",
        ["chain_id", "block_number"],
    )
    op.create_index(
        op.f("ix_caas_chain_events_loan_id_block_number_log_index"),
        "caas_chain_events",
        ["loan_id", "block_number", "log_index"],
    )

    op.create_table(
        "caas_indexer_checkpoints",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("name", "chain_id", name=op.f("pk_caas_indexer_checkpoints")),
    )

    op.create_table(
        "caas_indexed_blocks",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(66), nullable=False),
        sa.Column("parent_hash", sa.String(66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        _ts("indexed_at"),
        sa.PrimaryKeyConstraint("chain_id", "number", name=op.f("pk_caas_indexed_blocks")),
    )

    op.create_table(
        "caas_loans",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        sa.Column("chain_loan_id", sa.String(66), nullable=False),
        sa.Column("borrower_ref", sa.String(66), nullable=True),
        sa.Column("partner_ref", sa.String(66), nullable=True),
        sa.Column("currency", sa.Integer(), nullable=True),
        sa.Column("principal", UINT256, nullable=True),
        sa.Column("total_due", UINT256, nullable=True),
        sa.Column("installment_count", sa.Integer(), nullable=True),
        sa.Column("installment_interval", sa.BigInteger(), nullable=True),
        sa.Column("grace_period", sa.BigInteger(), nullable=True),
        sa.Column("max_late_fees", UINT256, nullable=True),
        sa.Column("payout_ref", sa.String(66), nullable=True),
        sa.Column("terms_hash", sa.String(66), nullable=True),
        sa.Column("chain_state", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("repaid", UINT256, server_default=sa.text("0"), nullable=False),
        sa.Column("late_fees_assessed", UINT256, server_default=sa.text("0"), nullable=False),
        sa.Column("outstanding", UINT256, server_default=sa.text("0"), nullable=False),
        _ts("created_on_chain_at", nullable=True, default=False),
        _ts("approved_at", nullable=True, default=False),
        _ts("disbursed_at", nullable=True, default=False),
        _ts("closed_at", nullable=True, default=False),
        sa.Column("event_chain", sa.String(66), nullable=True),
        sa.Column("event_chain_mismatch", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_block_number", sa.BigInteger(), nullable=True),
        sa.Column("last_log_index", sa.Integer(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_loans")),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["caas_partners.id"],
            name=op.f("fk_caas_loans_partner_id_caas_partners"),
        ),
        sa.UniqueConstraint("chain_loan_id", name=op.f("uq_caas_loans_chain_loan_id")),
        _hex_check("caas_loans", "chain_loan_id", "chain_loan_id_hex"),
        sa.CheckConstraint("chain_state BETWEEN 0 AND 7", name=op.f("ck_caas_loans_chain_state_range")),
    )
    op.create_index(op.f("ix_caas_loans_partner_id"), "caas_loans", ["partner_id"])

    op.create_table(
        "caas_tx_intents",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("from_address", sa.String(42), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("value", UINT256, server_default=sa.text("0"), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("gas_limit", sa.BigInteger(), nullable=True),
        sa.Column("max_fee_per_gas", UINT256, nullable=True),
        sa.Column("max_priority_fee_per_gas", UINT256, nullable=True),
        sa.Column("raw_tx", sa.Text(), nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column(
            "previous_tx_hashes",
            postgresql.ARRAY(sa.String(66)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("status", sa.String(32), server_default="pending", nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("effective_gas_price", UINT256, nullable=True),
        sa.Column("revert_reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("broadcast_at", nullable=True, default=False),
        _ts("confirmed_at", nullable=True, default=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_tx_intents")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_caas_tx_intents_idempotency_key")),
        sa.UniqueConstraint(
            "chain_id",
            "from_address",
            "nonce",
            name=op.f("uq_caas_tx_intents_chain_id_from_address_nonce"),
        ),
    )
    op.create_index(op.f("ix_caas_tx_intents_status"), "caas_tx_intents", ["status"])
    op.create_index(op.f("ix_caas_tx_intents_tx_hash"), "caas_tx_intents", ["tx_hash"])

    op.create_table(
        "caas_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("headers", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        _ts("created_at"),
        _ts("published_at", nullable=True, default=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_outbox")),
    )
    op.create_index(
        "ix_caas_outbox_unpublished",
        "caas_outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    op.create_table(
        "caas_consumed_events",
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        _ts("consumed_at"),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_caas_consumed_events")),
    )

    op.create_table(
        "caas_audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        _ts("occurred_at"),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("subject_type", sa.String(100), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("details", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_audit_log")),
    )
    op.create_index(
        op.f("ix_caas_audit_log_subject_type_subject_id"),
        "caas_audit_log",
        ["subject_type", "subject_id"],
    )
    op.create_index(
        op.f("ix_caas_audit_log_partner_id_occurred_at"),
        "caas_audit_log",
        ["partner_id", "occurred_at"],
    )

    for table in TABLES:
        op.execute(security.grant_table(table, append_only=table == "caas_audit_log"))
    for table, (column, shared) in PARTNER_SCOPED.items():
        for statement in security.partner_policies(table, column, shared_rows=shared):
            op.execute(statement)
    for statement in security.append_only("caas_audit_log"):
        op.execute(statement)


def downgrade() -> None:
    op.execute(security.drop_append_only("caas_audit_log"))
    for table in reversed(TABLES):
        op.drop_table(table)  # drops its indexes, policies and grants with it
    op.execute("DROP FUNCTION IF EXISTS caas_current_partner()")
    op.execute(security.revoke_schema_usage())
    # The roles stay: they are cluster-wide and other databases on this server may use them.
