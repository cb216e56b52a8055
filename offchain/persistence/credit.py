"""Models of the partner credit API: applications, offers, originations, approvals, idempotency.

Partner-owned, so every table here is in PARTNER_SCOPED and isolated by row-level security.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from offchain.domain.applications import ApplicationStatus, OfferStatus
from offchain.persistence.base import (
    AddressHex,
    Base,
    Bytes32Hex,
    Uint256,
    bytes32_check,
    created_at,
    updated_at,
)
from offchain.persistence.models import PARTNER_SCOPED

PARTNER_SCOPED.update(
    {
        "caas_applications": "partner_id",
        "caas_offers": "partner_id",
        "caas_originations": "partner_id",
        "caas_approval_signatures": "partner_id",
        "caas_approval_rounds": "partner_id",
        "caas_idempotency_keys": "partner_id",
    }
)

APPLICATION_STATUSES = tuple(status.value for status in ApplicationStatus)
OFFER_STATUSES = tuple(status.value for status in OfferStatus)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))


def _partner() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("caas_partners.id"), index=True)


class Application(Base):
    __tablename__ = "caas_applications"
    __table_args__ = (
        UniqueConstraint("partner_id", "external_id"),
        CheckConstraint(f"status IN {APPLICATION_STATUSES}", name="status_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("tenor_months BETWEEN 1 AND 60", name="tenor_range"),
        Index(None, "partner_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    partner_id: Mapped[uuid.UUID] = _partner()
    external_id: Mapped[str] = mapped_column(String(200))
    sme_user_id: Mapped[str] = mapped_column(String(200))
    borrower_ref: Mapped[str] = mapped_column(Bytes32Hex)
    amount: Mapped[int] = mapped_column(Uint256)
    currency: Mapped[str] = mapped_column(String(3))
    tenor_months: Mapped[int] = mapped_column(SmallInteger)
    purpose: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), server_default=ApplicationStatus.SUBMITTED.value)
    # score, risk_rating, pd, reasons, model_version, max_amount: the underwriting decision
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Offer(Base):
    __tablename__ = "caas_offers"
    __table_args__ = (CheckConstraint(f"status IN {OFFER_STATUSES}", name="status_known"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    partner_id: Mapped[uuid.UUID] = _partner()
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_applications.id"), index=True)
    amount: Mapped[int] = mapped_column(Uint256)
    currency: Mapped[str] = mapped_column(String(3))
    tenor_months: Mapped[int] = mapped_column(SmallInteger)
    apr_bps: Mapped[int] = mapped_column(Integer)
    total_due: Mapped[int] = mapped_column(Uint256)
    # the whole quote as priced: fees, frequency, installments, EAR, schedule
    terms: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(32), server_default=OfferStatus.OPEN.value)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class Origination(Base):
    """How a loan came to be: its offer, agreement and payout destination (one per loan)."""

    __tablename__ = "caas_originations"
    __table_args__ = (CheckConstraint(bytes32_check("terms_hash"), name="terms_hash_hex"),)

    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"), primary_key=True)
    partner_id: Mapped[uuid.UUID] = _partner()
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_applications.id"), unique=True)
    offer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_offers.id"), unique=True)
    payout_method: Mapped[str] = mapped_column(String(32))
    payout_bank_code: Mapped[str | None] = mapped_column(String(16))
    payout_account_number: Mapped[str] = mapped_column(String(32))
    agreement: Mapped[dict[str, Any]] = mapped_column(JSONB)
    terms_hash: Mapped[str] = mapped_column(Bytes32Hex)
    created_at: Mapped[datetime] = created_at()


class ApprovalSignature(Base):
    """EIP-712 approvals collected from signers until the threshold is reached."""

    __tablename__ = "caas_approval_signatures"
    __table_args__ = (PrimaryKeyConstraint("loan_id", "epoch", "signer"),)

    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"))
    epoch: Mapped[int] = mapped_column(BigInteger)
    signer: Mapped[str] = mapped_column(AddressHex)
    partner_id: Mapped[uuid.UUID] = _partner()
    signature: Mapped[str] = mapped_column(String(132))
    deadline: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at()


class ApprovalRound(Base):
    """The approval state machine of one loan: its row serializes every approval post for the
    loan (SELECT ... FOR UPDATE), and counts the `approve_with_signatures` submissions.

    Each submission has its own tx intent, keyed `approve_with_signatures:<chain loan id>:<epoch>:
    <attempt>`, so a failed one (reverted, or refused at estimation) leaves the loan approvable: the
    next submission is a new intent. Whether one is in flight is the status of `tx_intent_key`'s
    intent; there is no second copy of it here.
    """

    __tablename__ = "caas_approval_rounds"
    __table_args__ = (CheckConstraint("attempts >= 0", name="attempts_not_negative"),)

    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"), primary_key=True)
    partner_id: Mapped[uuid.UUID] = _partner()
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    epoch: Mapped[int | None] = mapped_column(BigInteger)  # of the latest submission
    tx_intent_key: Mapped[str | None] = mapped_column(String(200))  # of the latest submission
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class IdempotencyKey(Base):
    """A partner's Idempotency-Key: the request it named and, once done, the response it got."""

    __tablename__ = "caas_idempotency_keys"
    __table_args__ = (
        PrimaryKeyConstraint("partner_id", "key"),
        CheckConstraint("state IN ('in_flight', 'completed')", name="state_known"),
        Index(None, "expires_at"),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), server_default="in_flight")
    response_status: Mapped[int | None] = mapped_column(SmallInteger)
    response_body: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
