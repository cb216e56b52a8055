"""Notifications: partner webhook endpoints, events, deliveries and attempts; borrower messages.

Revision ID: 0006_notifications
Revises: 0005_credit_api
Create Date: 2026-11-27

Partner-owned tables, isolated by `caas.partner_id` like the rest (offchain.persistence.security).
`caas_webhook_events.outbox_id` is unique: one partner event per outbox event, however often the
bus delivers it. The partial index on due deliveries is what the delivery workers scan.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from offchain.persistence import security

revision: str = "0006_notifications"
down_revision: str | Sequence[str] | None = "0005_credit_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
NOW = sa.text("now()")
PARTNER_TABLES = {
    "caas_webhook_endpoints": "partner_id",
    "caas_webhook_events": "partner_id",
    "caas_webhook_deliveries": "partner_id",
    "caas_webhook_attempts": "partner_id",
    "caas_borrower_notifications": "partner_id",
}


def upgrade() -> None:
    op.create_table(
        "caas_webhook_endpoints",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("event_types", postgresql.ARRAY(sa.String(100)), nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        sa.Column("previous_secret_ciphertext", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_webhook_endpoints")),
    )
    op.create_index(
        op.f("ix_caas_webhook_endpoints_partner_id_created_at"),
        "caas_webhook_endpoints",
        ["partner_id", "created_at"],
    )

    op.create_table(
        "caas_webhook_events",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("stored_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_webhook_events")),
        sa.UniqueConstraint("outbox_id", name=op.f("uq_caas_webhook_events_outbox_id")),
    )
    op.create_index(
        op.f("ix_caas_webhook_events_partner_id_created_at_id"),
        "caas_webhook_events",
        ["partner_id", "created_at", "id"],
    )
    op.create_index(op.f("ix_caas_webhook_events_created_at"), "caas_webhook_events", ["created_at"])

    op.create_table(
        "caas_webhook_deliveries",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("window_started_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, server_default=NOW, nullable=True),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("last_status_code", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("dead_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead', 'cancelled')",
            name=op.f("ck_caas_webhook_deliveries_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["caas_webhook_endpoints.id"],
            name=op.f("fk_caas_webhook_deliveries_endpoint_id_caas_webhook_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["caas_webhook_events.id"],
            name=op.f("fk_caas_webhook_deliveries_event_id_caas_webhook_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_webhook_deliveries")),
        sa.UniqueConstraint(
            "event_id", "endpoint_id", name=op.f("uq_caas_webhook_deliveries_event_id_endpoint_id")
        ),
    )
    op.create_index(
        "ix_caas_webhook_deliveries_due",
        "caas_webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_caas_webhook_deliveries_endpoint_id"), "caas_webhook_deliveries", ["endpoint_id"]
    )
    op.create_index(op.f("ix_caas_webhook_deliveries_partner_id"), "caas_webhook_deliveries", ["partner_id"])

    op.create_table(
        "caas_webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("attempted_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["caas_webhook_deliveries.id"],
            name=op.f("fk_caas_webhook_attempts_delivery_id_caas_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_webhook_attempts")),
    )
    op.create_index(
        op.f("ix_caas_webhook_attempts_delivery_id_attempted_at"),
        "caas_webhook_attempts",
        ["delivery_id", "attempted_at"],
    )

    op.create_table(
        "caas_borrower_notifications",
        sa.Column("notification_id", sa.String(200), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("loan_id", sa.String(100), nullable=True),
        sa.Column("sme_user_id", sa.String(200), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), server_default="sending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("provider_ref", sa.String(200), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('sending', 'sent', 'failed', 'rejected')",
            name=op.f("ck_caas_borrower_notifications_status_known"),
        ),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_caas_borrower_notifications")),
    )
    op.create_index(
        op.f("ix_caas_borrower_notifications_partner_id_created_at"),
        "caas_borrower_notifications",
        ["partner_id", "created_at"],
    )
    op.create_index(
        op.f("ix_caas_borrower_notifications_loan_id"), "caas_borrower_notifications", ["loan_id"]
    )

    for table, column in PARTNER_TABLES.items():
        op.execute(security.grant_table(table))
        for statement in security.partner_policies(table, column):
            op.execute(statement)


def downgrade() -> None:
    for table in reversed(list(PARTNER_TABLES)):
        op.drop_table(table)
