"""Models of collections: close-of-business runs, per-loan daily results, actions taken, promises
to pay and write-off proposals for the committee.

`caas_cob_runs` is platform-wide (one close of business for every partner); the others are
partner-owned and isolated by row-level security.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
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

from offchain.domain.collections import PromiseStatus
from offchain.persistence.base import AddressHex, Base, Bytes32Hex, Uint256, created_at, updated_at
from offchain.persistence.models import PARTNER_SCOPED

PARTNER_SCOPED.update(
    {
        "caas_collection_days": "partner_id",
        "caas_collection_actions": "partner_id",
        "caas_promises_to_pay": "partner_id",
        "caas_write_off_proposals": "partner_id",
    }
)

COB_STATUSES = ("running", "completed")
PROMISE_STATUSES = tuple(status.value for status in PromiseStatus)
PROPOSAL_STATUSES = ("awaiting_signers", "submitted")


class CobRun(Base):
    """One business date's close of business (platform-wide)."""

    __tablename__ = "caas_cob_runs"
    __table_args__ = (CheckConstraint(f"status IN {COB_STATUSES}", name="status_known"),)

    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    # unix time the book was evaluated at (the date's last second, or the chain's head if earlier)
    evaluated_at: Mapped[int | None] = mapped_column(BigInteger)
    loans_processed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    started_at: Mapped[datetime] = created_at()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CollectionDay(Base):
    """What the close of business of a date found for one loan; its presence means "done"."""

    __tablename__ = "caas_collection_days"
    __table_args__ = (
        PrimaryKeyConstraint("business_date", "loan_id"),
        Index(None, "loan_id", "business_date"),
    )

    business_date: Mapped[date] = mapped_column(Date)
    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    chain_state: Mapped[int] = mapped_column(SmallInteger)
    days_past_due: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[str] = mapped_column(String(16))
    cbn_class: Mapped[str] = mapped_column(String(32))
    currency: Mapped[int] = mapped_column(Integer)  # ISO 4217 numeric
    outstanding: Mapped[int] = mapped_column(Uint256)
    amount_due: Mapped[int] = mapped_column(Uint256)
    provision: Mapped[int] = mapped_column(Uint256)
    dunning_paused: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at()


class CollectionAction(Base):
    """Something collections did for a loan, once: `action_key` is unique per loan."""

    __tablename__ = "caas_collection_actions"
    __table_args__ = (
        UniqueConstraint("loan_id", "action_key"),
        Index(None, "business_date"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    business_date: Mapped[date] = mapped_column(Date)
    action_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(16))
    template: Mapped[str | None] = mapped_column(String(64))
    notification_id: Mapped[str | None] = mapped_column(String(64))
    tx_idempotency_key: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = created_at()


class PromiseToPay(Base):
    __tablename__ = "caas_promises_to_pay"
    __table_args__ = (
        CheckConstraint(f"status IN {PROMISE_STATUSES}", name="status_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index(None, "loan_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))
    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    amount: Mapped[int] = mapped_column(Uint256)
    currency: Mapped[str] = mapped_column(String(3))
    promised_date: Mapped[date] = mapped_column(Date)
    # the loan's on-chain `repaid` when the promise was made: payments after it count towards it
    repaid_baseline: Mapped[int] = mapped_column(Uint256)
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    created_by: Mapped[str] = mapped_column(String(200))
    resolved_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class WriteOffProposal(Base):
    """A defaulted loan's write-off, ready for a committee signer to propose
    (`DisbursementCommittee.propose(ACTION_WRITE_OFF, 0x0, loan_id, 0, expires_at)`)."""

    __tablename__ = "caas_write_off_proposals"
    __table_args__ = (CheckConstraint(f"status IN {PROPOSAL_STATUSES}", name="status_known"),)

    loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_loans.id"), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    chain_loan_id: Mapped[str] = mapped_column(Bytes32Hex)
    committee: Mapped[str] = mapped_column(AddressHex)
    action: Mapped[int] = mapped_column(SmallInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)  # unix seconds, the proposal's expiry
    calldata: Mapped[str] = mapped_column(Text)
    outstanding: Mapped[int] = mapped_column(Uint256)
    currency: Mapped[int] = mapped_column(Integer)
    days_past_due: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    tx_idempotency_key: Mapped[str | None] = mapped_column(String(200))
    business_date: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = created_at()
