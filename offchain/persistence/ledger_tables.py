"""The ledger's tables (migration 0006_ledger): accounts, postings, entries, the slotted
balances and the reconciliation runs. The API over them is offchain.persistence.ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
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

from offchain.domain.ledger import AccountKind, PostingStatus
from offchain.persistence.base import Base, created_at
from offchain.persistence.models import PARTNER_SCOPED

# accounts of a partner (its funding account) are visible to that partner's sessions; the rest
# of the ledger is platform data, read and written by workers only
PARTNER_SCOPED.update({"caas_ledger_accounts": "partner_id"})

SLOTS = 16
STATUSES = tuple(status.value for status in PostingStatus)
SIDES = ("debit", "credit")
ACCOUNT_CODE = String(200)
POSTING_ID = String(200)


class LedgerAccount(Base):
    __tablename__ = "caas_ledger_accounts"
    __table_args__ = (
        PrimaryKeyConstraint("code", "currency"),
        CheckConstraint(f"kind IN {tuple(k.value for k in AccountKind)}", name="kind_known"),
        CheckConstraint(f"normal_side IN {SIDES}", name="normal_side_known"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        Index(None, "loan_id", postgresql_where=text("loan_id IS NOT NULL")),
    )

    code: Mapped[str] = mapped_column(ACCOUNT_CODE)
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(32))
    normal_side: Mapped[str] = mapped_column(String(6))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    loan_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = created_at()


class LedgerPosting(Base):
    __tablename__ = "caas_ledger_postings"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES}", name="status_known"),
        CheckConstraint("(status = 'posted') = (posted_at IS NOT NULL)", name="posted_at_iff_posted"),
        CheckConstraint("(status = 'voided') = (voided_at IS NOT NULL)", name="voided_at_iff_voided"),
        CheckConstraint("legs >= 2", name="two_legs_or_more"),
        # what entries point at: a posting's number of legs travels with every entry
        UniqueConstraint("seq", "legs"),
        # a posting is corrected once; a second correction would count the money back twice
        Index(None, "reverses", unique=True, postgresql_where=text("reverses IS NOT NULL")),
        Index("ix_caas_ledger_postings_pending", "seq", postgresql_where=text("status = 'pending'")),
    )

    # insertion order, and the compact key entries point at
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    posting_id: Mapped[str] = mapped_column(POSTING_ID, unique=True)
    status: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text)
    # entries fill exactly slots 0..legs-1 (checked at COMMIT), so none can be added later
    legs: Mapped[int] = mapped_column(SmallInteger)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default=text("'{}'::jsonb"))
    reverses: Mapped[str | None] = mapped_column(POSTING_ID, ForeignKey("caas_ledger_postings.posting_id"))
    created_at: Mapped[datetime] = created_at()
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    voided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    __tablename__ = "caas_ledger_entries"
    __table_args__ = (
        PrimaryKeyConstraint("posting_seq", "leg"),
        ForeignKeyConstraint(
            ["posting_seq", "legs"], ["caas_ledger_postings.seq", "caas_ledger_postings.legs"]
        ),
        ForeignKeyConstraint(
            ["account", "currency"],
            ["caas_ledger_accounts.code", "caas_ledger_accounts.currency"],
        ),
        CheckConstraint(f"side IN {SIDES}", name="side_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("leg >= 0 AND leg < legs", name="leg_in_posting"),
        # an account's statement, in posting order
        Index(None, "account", "currency", "posting_seq"),
    )

    posting_seq: Mapped[int] = mapped_column(BigInteger)
    leg: Mapped[int] = mapped_column(SmallInteger)
    legs: Mapped[int] = mapped_column(SmallInteger)
    account: Mapped[str] = mapped_column(ACCOUNT_CODE)
    currency: Mapped[str] = mapped_column(String(3))
    side: Mapped[str] = mapped_column(String(6))
    amount: Mapped[int] = mapped_column(BigInteger)


class LedgerBalance(Base):
    """Running totals per account, currency and slot; written only by the ledger's triggers."""

    __tablename__ = "caas_ledger_balances"
    __table_args__ = (
        PrimaryKeyConstraint("account", "currency", "slot"),
        ForeignKeyConstraint(
            ["account", "currency"],
            ["caas_ledger_accounts.code", "caas_ledger_accounts.currency"],
        ),
        CheckConstraint(f"slot >= 0 AND slot < {SLOTS}", name="slot_range"),
    )

    account: Mapped[str] = mapped_column(ACCOUNT_CODE)
    currency: Mapped[str] = mapped_column(String(3))
    slot: Mapped[int] = mapped_column(SmallInteger)
    posted_debits: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    posted_credits: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pending_debits: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pending_credits: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ReconciliationRun(Base):
    __tablename__ = "caas_ledger_recon_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'consistent', 'mismatches', 'failed')", name="status_known"),
        Index(None, "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(32))  # "schedule" or "manual"
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = created_at()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    chain_block: Mapped[int | None] = mapped_column(BigInteger)
    loans_checked: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    mismatch_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)


class ReconciliationMismatch(Base):
    __tablename__ = "caas_ledger_mismatches"
    __table_args__ = (PrimaryKeyConstraint("run_id", "n"), Index(None, "subject"))

    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("caas_ledger_recon_runs.id"))
    n: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    # JSON so a figure keeps its type: amounts as numbers (uint256-safe), states as strings
    expected: Mapped[Any] = mapped_column(JSONB, nullable=True)
    actual: Mapped[Any] = mapped_column(JSONB, nullable=True)
    detail: Mapped[str] = mapped_column(Text, server_default=text("''"))
