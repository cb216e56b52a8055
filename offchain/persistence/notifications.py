"""Models of the notifications service: webhook endpoints, partner events, deliveries and their
attempts, and borrower messages. All partner-owned, so isolated by row-level security."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from offchain.persistence.base import Base, updated_at
from offchain.persistence.base import created_at as now_default
from offchain.persistence.models import PARTNER_SCOPED

PARTNER_SCOPED.update(
    {
        "caas_webhook_endpoints": "partner_id",
        "caas_webhook_events": "partner_id",
        "caas_webhook_deliveries": "partner_id",
        "caas_webhook_attempts": "partner_id",
        "caas_borrower_notifications": "partner_id",
    }
)

DELIVERY_STATUSES = ("pending", "delivered", "dead", "cancelled")
NOTIFICATION_STATUSES = ("sending", "sent", "failed", "rejected")


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))


class WebhookEndpoint(Base):
    __tablename__ = "caas_webhook_endpoints"
    __table_args__ = (Index(None, "partner_id", "created_at"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(500))
    # event types, or ["*"] for all
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    # Fernet ciphertexts (offchain.services.notifications.secrets); never the plain secret
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = now_default()
    updated_at: Mapped[datetime] = updated_at()
    # deleted endpoints stay for the delivery history that points at them
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookEvent(Base):
    """A partner event as partners see it: `{id, type, created_at, data}`; one per outbox row."""

    __tablename__ = "caas_webhook_events"
    __table_args__ = (
        UniqueConstraint("outbox_id"),
        Index(None, "partner_id", "created_at", "id"),
        Index(None, "created_at"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # the outbox row it came from: duplicates of one outbox event are one partner event
    outbox_id: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # when the change happened (the outbox row's time), which is what partners order by
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stored_at: Mapped[datetime] = now_default()


class WebhookDelivery(Base):
    """One event to one endpoint: retried until delivered, or dead once the window has passed."""

    __tablename__ = "caas_webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        CheckConstraint(f"status IN {DELIVERY_STATUSES}", name="status_known"),
        # what the workers scan: only the deliveries still to be made
        Index(
            "ix_caas_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")
        ),
        Index(None, "endpoint_id"),
        Index(None, "partner_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # failures since the window started (a replay starts a new window)
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    window_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = now_default()
    updated_at: Mapped[datetime] = updated_at()


class WebhookAttempt(Base):
    """Every POST made, for support and for partners debugging their endpoint."""

    __tablename__ = "caas_webhook_attempts"
    __table_args__ = (Index(None, "delivery_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("caas_webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = now_default()
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


class BorrowerNotification(Base):
    """One borrower message per `notification_id` (the producer's idempotency key).

    Neither the recipient's address nor the rendered text is kept: personal data stays with the
    SME platform and the producer's payload.
    """

    __tablename__ = "caas_borrower_notifications"
    __table_args__ = (
        CheckConstraint(f"status IN {NOTIFICATION_STATUSES}", name="status_known"),
        Index(None, "partner_id", "created_at"),
        Index(None, "loan_id"),
    )

    notification_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    loan_id: Mapped[str | None] = mapped_column(String(100))
    sme_user_id: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), server_default="sending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = now_default()
    updated_at: Mapped[datetime] = updated_at()
