"""Models of money movement: loan payouts, incoming payments and the keys that route money to loans.

Partner-owned (row-level security by partner); the services' workers act for every partner
through the worker role. Unmatched payments have no partner yet, so partners never see them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from offchain.persistence.base import Base, Bytes32Hex, Uint256, bytes32_check, created_at, updated_at
from offchain.persistence.models import PARTNER_SCOPED

PARTNER_SCOPED.update(
    {
        "caas_payouts": "partner_id",
        "caas_payments": "partner_id",
        "caas_payment_routes": "partner_id",
        "caas_monitoring_flags": "partner_id",
    }
)

# queued: a hold is placed and the transfer is (re)initiated by the worker
# initiated: the rail accepted the transfer; its outcome is not known yet
# succeeded: the rail says paid; the hold is posted and record_disbursement is on its way
# (a conclusive failure voids the hold and queues the next attempt under the same reference)
# abandoned: failed too often; an operator decides
# review: held by transaction monitoring or refused by the chain; an operator decides
PAYOUT_STATUSES = ("queued", "initiated", "succeeded", "abandoned", "review")
# received: verified with the provider, not yet routed; unmatched: in suspense
# pending_chain: a record_repayment is on its way; recorded: on chain, hold posted
# credited: nothing applicable (e.g. loan already repaid): all of it is the borrower's credit
# (credited: what a payment to a closed loan became before `review`; no longer written)
# reversal_pending / reversed: a chargeback on its way to / recorded on the chain
# held: paid for a loan that is not repayable yet (PENDING, APPROVED): kept in the loan's held
#   account and applied, under its own payment_ref, when the loan becomes ACTIVE
# review: nothing to apply it to (the loan is repaid, written off or cancelled): kept in the
#   loan's held account until an operator matches it to another loan or refunds it
PAYMENT_STATUSES = (
    "received",
    "unmatched",
    "pending_chain",
    "recorded",
    "credited",
    "reversal_pending",
    "reversed",
    "held",
    "review",
)


def _known(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Payout(Base):
    """A loan's payout through a rail: one per loan, one transfer reference for all its attempts."""

    __tablename__ = "caas_payouts"
    __table_args__ = (
        CheckConstraint(_known("status", PAYOUT_STATUSES), name="status_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(bytes32_check("chain_loan_id"), name="chain_loan_id_hex"),
        Index(None, "status", "next_attempt_at"),
    )

    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    chain_loan_id: Mapped[str] = mapped_column(Bytes32Hex)
    rail: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    method: Mapped[str] = mapped_column(String(32))
    bank_code: Mapped[str | None] = mapped_column(String(16))
    account_number: Mapped[str] = mapped_column(String(32))
    account_name: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[int] = mapped_column(Uint256)
    total_due: Mapped[int] = mapped_column(Uint256)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    # transfers initiated so far; the hold of attempt n is posting "payout:<loan>:<n>"
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    recipient_code: Mapped[str | None] = mapped_column(String(64))
    transfer_code: Mapped[str | None] = mapped_column(String(64))
    provider_status: Mapped[str | None] = mapped_column(String(32))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    last_error: Mapped[str | None] = mapped_column(Text)
    # record_disbursement is asked for once, whatever happens to later attempts
    chain_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    disbursed_tx: Mapped[str | None] = mapped_column(String(66))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class Payment(Base):
    """Money a borrower paid, as its provider confirmed it, and where it went."""

    __tablename__ = "caas_payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_reference"),
        CheckConstraint(_known("status", PAYMENT_STATUSES), name="status_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("applied >= 0 AND excess >= 0 AND applied + excess <= amount", name="parts_fit"),
        CheckConstraint(bytes32_check("payment_ref"), name="payment_ref_hex"),
        Index(None, "loan_id", "status"),
        Index(None, "status", "created_at"),
        Index("ix_caas_payments_held", "loan_id", "created_at", postgresql_where=text("status = 'held'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))
    provider: Mapped[str] = mapped_column(String(16))
    provider_reference: Mapped[str] = mapped_column(String(200))
    payment_ref: Mapped[str] = mapped_column(Bytes32Hex, unique=True)
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    loan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("caas_loans.id"))
    amount: Mapped[int] = mapped_column(Uint256)
    currency: Mapped[str] = mapped_column(String(3))
    applied: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    excess: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    # the provider's fee on the charge, and the part of the charge the payer paid on top of
    # `amount` (the borrower's repayment); posted to the rail's fee accounts, never to the loan
    provider_fee: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    payer_fee: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), server_default="received")
    match_method: Mapped[str | None] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(32))
    # the provider's verified record, as it answered (amount, currency, status, payer, metadata)
    provider_record: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    detail: Mapped[str | None] = mapped_column(Text)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_tx: Mapped[str | None] = mapped_column(String(66))
    # early money and money under review: the posting that put it into the loan's held account,
    # and the one that applies it from there (both undone by a chargeback)
    held_posting: Mapped[str | None] = mapped_column(String(200))
    applied_posting: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


NOTICE_STATUSES = ("not_confirmed", "confirmed")
NOTICE_REASONS = ("not_found", "not_successful", "unusable_reference")


class PaymentNotice(Base):
    """A provider's notice of a payment that the provider itself did not confirm.

    Not money: an outcome. Paystack (or the SME platform) said "charge X succeeded", and its own
    verify answered definitely that there is no such charge, or that it did not succeed. One row
    per (provider, reference), however often the notice came; operators list them
    (`GET /v1/payment-notices`) and may ask the provider again (`.../reverify`), which takes the
    payment in if it is confirmed by then. No partner owns a notice (nothing matched it), so it
    is not partner-scoped; it keeps the notice's figures and reference, not the payer's identity.
    """

    __tablename__ = "caas_payment_notices"
    __table_args__ = (
        UniqueConstraint("provider", "reference"),
        CheckConstraint(_known("status", NOTICE_STATUSES), name="status_known"),
        CheckConstraint(_known("reason", NOTICE_REASONS), name="reason_known"),
        Index(None, "status", "last_seen_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))
    provider: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default="not_confirmed")
    reason: Mapped[str] = mapped_column(String(32))
    provider_status: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    # what the notice claimed: amount, currency, channel (no payer identity)
    claimed: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    notices: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    payment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("caas_payments.id"))
    first_seen_at: Mapped[datetime] = created_at()
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))


class PaymentRoute(Base):
    """A key that routes incoming money to a loan: its dedicated virtual account or an issued reference."""

    __tablename__ = "caas_payment_routes"
    __table_args__ = (
        PrimaryKeyConstraint("kind", "value"),
        CheckConstraint("kind IN ('virtual_account', 'reference')", name="kind_known"),
        Index(None, "loan_id"),
    )

    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(100))
    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_partners.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = created_at()


class MonitoringFlag(Base):
    """A transaction-monitoring rule that fired on a payout or a payment, until someone clears it."""

    __tablename__ = "caas_monitoring_flags"
    __table_args__ = (
        UniqueConstraint("subject_kind", "subject_id", "rule"),
        CheckConstraint("subject_kind IN ('payout', 'payment')", name="subject_kind_known"),
        CheckConstraint("status IN ('open', 'cleared')", name="status_known"),
        Index(None, "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    loan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("caas_loans.id"))
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at()
