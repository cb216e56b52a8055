"""SQLAlchemy models of the `caas_` tables (schema owned by alembic migration 0001 onwards).

`PARTNER_SCOPED` lists the tables row-level security isolates by partner; the migration test
checks the database agrees, so a new partner-owned table cannot quietly skip its policy.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from offchain.persistence.base import (
    AddressHex,
    Base,
    Bytes32Hex,
    Uint256,
    bytes32_check,
    created_at,
    updated_at,
)

# table -> the column holding the owning partner's id
PARTNER_SCOPED: dict[str, str] = {
    "caas_partners": "id",
    "caas_loans": "partner_id",
    "caas_outbox": "partner_id",
    "caas_audit_log": "partner_id",
}


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))


class Partner(Base):
    __tablename__ = "caas_partners"
    __table_args__ = (CheckConstraint(bytes32_check("chain_ref"), name="chain_ref_hex"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(200))
    # keyed hash of the partner used as `partner_ref` on chain (no names on chain)
    chain_ref: Mapped[str | None] = mapped_column(Bytes32Hex, unique=True)
    status: Mapped[str] = mapped_column(String(32), server_default="active")
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class ChainEvent(Base):
    """Every decoded LoanBook / DisbursementCommittee log, exactly once per (block, tx, log)."""

    __tablename__ = "caas_chain_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "block_hash", "tx_hash", "log_index"),
        Index(None, "chain_id", "block_number"),
        Index(None, "loan_id", "block_number", "log_index"),
        CheckConstraint(bytes32_check("block_hash"), name="block_hash_hex"),
        CheckConstraint(bytes32_check("tx_hash"), name="tx_hash_hex"),
        CheckConstraint(bytes32_check("loan_id"), name="loan_id_hex"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(Bytes32Hex)
    tx_hash: Mapped[str] = mapped_column(Bytes32Hex)
    tx_index: Mapped[int] = mapped_column(Integer)
    log_index: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(AddressHex)
    contract: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    loan_id: Mapped[str | None] = mapped_column(Bytes32Hex)
    args: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    topics: Mapped[list[str]] = mapped_column(ARRAY(String(66)))
    data: Mapped[str] = mapped_column(Text)
    block_timestamp: Mapped[int | None] = mapped_column(BigInteger)  # unix seconds
    created_at: Mapped[datetime] = created_at()


class IndexerCheckpoint(Base):
    """How far an indexer got; written in the same transaction as the rows it indexed."""

    __tablename__ = "caas_indexer_checkpoints"
    __table_args__ = (PrimaryKeyConstraint("name", "chain_id"),)

    name: Mapped[str] = mapped_column(String(64))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(Bytes32Hex)
    updated_at: Mapped[datetime] = updated_at()


class IndexedBlock(Base):
    """Headers of recently indexed blocks: the window reorgs are detected and unwound in."""

    __tablename__ = "caas_indexed_blocks"
    __table_args__ = (PrimaryKeyConstraint("chain_id", "number"),)

    chain_id: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(Bytes32Hex)
    parent_hash: Mapped[str] = mapped_column(Bytes32Hex)
    timestamp: Mapped[int] = mapped_column(BigInteger)  # block timestamp, unix seconds
    indexed_at: Mapped[datetime] = created_at()


class Loan(Base):
    """The backend's copy of a LoanBook entry, projected from chain events, plus its partner."""

    __tablename__ = "caas_loans"
    __table_args__ = (
        CheckConstraint(bytes32_check("chain_loan_id"), name="chain_loan_id_hex"),
        CheckConstraint("chain_state BETWEEN 0 AND 7", name="chain_state_range"),
        # the loans an auditor must look at: their indexed events disagree with the contract
        Index(
            "ix_caas_loans_event_chain_mismatch",
            "chain_loan_id",
            postgresql_where=text("event_chain_mismatch"),
        ),
        # loans with events not yet compared with the contract (indexed too deep for the node's
        # state): the indexer's deferred check works through them once caught up
        Index(
            "ix_caas_loans_event_chain_unchecked",
            "last_block_number",
            postgresql_where=text(
                "event_count > 0 AND (event_chain_checked_block IS NULL "
                "OR event_chain_checked_block < last_block_number)"
            ),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    # Nullable: a loan seen on chain before the backend links it stays invisible to partners.
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("caas_partners.id"), index=True)
    chain_loan_id: Mapped[str] = mapped_column(Bytes32Hex, unique=True)
    borrower_ref: Mapped[str | None] = mapped_column(Bytes32Hex)
    partner_ref: Mapped[str | None] = mapped_column(Bytes32Hex)
    currency: Mapped[int | None] = mapped_column(Integer)  # ISO 4217 numeric
    principal: Mapped[int | None] = mapped_column(Uint256)
    total_due: Mapped[int | None] = mapped_column(Uint256)
    installment_count: Mapped[int | None] = mapped_column(Integer)
    installment_interval: Mapped[int | None] = mapped_column(BigInteger)  # seconds
    grace_period: Mapped[int | None] = mapped_column(BigInteger)  # seconds
    max_late_fees: Mapped[int | None] = mapped_column(Uint256)
    payout_ref: Mapped[str | None] = mapped_column(Bytes32Hex)
    terms_hash: Mapped[str | None] = mapped_column(Bytes32Hex)
    # LoanBook state: 0 NONE, 1 PENDING, 2 APPROVED, 3 ACTIVE, 4 REPAID, 5 DEFAULTED,
    # 6 WRITTEN_OFF, 7 CANCELLED
    chain_state: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    repaid: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    late_fees_assessed: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    outstanding: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    # the rest of LoanBook.loans(), so the mirror can be compared with the contract field by field
    scheduled_repaid: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    late_fees_paid: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    ever_defaulted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_on_chain_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disbursed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # running keccak over the loan's indexed events, compared with LoanBook.event_chain(loan_id)
    event_chain: Mapped[str | None] = mapped_column(Bytes32Hex)
    event_chain_mismatch: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    event_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # LoanBook events folded
    # block at which event_chain was last compared with LoanBook.event_chain(loan_id)
    event_chain_checked_block: Mapped[int | None] = mapped_column(BigInteger)
    last_block_number: Mapped[int | None] = mapped_column(BigInteger)
    last_log_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class TxIntent(Base):
    """A transaction the backend means to send, durable before it is broadcast.

    status: pending (no nonce yet) -> signed (nonce, raw_tx and tx_hash stored, maybe not yet
    broadcast) -> broadcast -> mined (receipt seen, not yet `confirmations` deep) -> confirmed
    or reverted; `failed` when the call would revert at gas estimation (it never got a nonce).
    A fee bump re-signs at the same nonce; earlier hashes stay in `previous_tx_hashes` because
    any of them can still be the one that mines. `chain_id` / `from_address` stay NULL until a
    sending key's worker claims the intent (unless the submitter pinned a sender).
    """

    __tablename__ = "caas_tx_intents"
    __table_args__ = (
        UniqueConstraint("chain_id", "from_address", "nonce"),
        Index(None, "status"),
        Index(None, "tx_hash"),
        # what a worker claims next, in submission order
        Index("ix_caas_tx_intents_pending_seq", "seq", postgresql_where=text("status = 'pending'")),
        CheckConstraint(
            "status IN ('pending', 'signed', 'broadcast', 'mined', 'confirmed', 'reverted', 'failed')",
            name="status_known",
        ),
        CheckConstraint(
            "status IN ('pending', 'failed') OR (nonce IS NOT NULL AND raw_tx IS NOT NULL "
            "AND tx_hash IS NOT NULL AND from_address IS NOT NULL AND chain_id IS NOT NULL)",
            name="signed_has_nonce",
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    # submission order: the order a sending key's worker takes intents in
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    chain_id: Mapped[int | None] = mapped_column(BigInteger)
    from_address: Mapped[str | None] = mapped_column(AddressHex)  # lowercase 0x hex
    to_address: Mapped[str] = mapped_column(AddressHex)  # lowercase 0x hex
    data: Mapped[str] = mapped_column(Text)  # 0x calldata
    value: Mapped[int] = mapped_column(Uint256, server_default=text("0"))
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    gas_limit: Mapped[int | None] = mapped_column(BigInteger)
    max_fee_per_gas: Mapped[int | None] = mapped_column(Uint256)
    max_priority_fee_per_gas: Mapped[int | None] = mapped_column(Uint256)
    raw_tx: Mapped[str | None] = mapped_column(Text)
    tx_hash: Mapped[str | None] = mapped_column(Bytes32Hex)
    previous_tx_hashes: Mapped[list[str]] = mapped_column(ARRAY(String(66)), server_default=text("'{}'"))
    status: Mapped[str] = mapped_column(String(32), server_default="pending")
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(Bytes32Hex)
    gas_used: Mapped[int | None] = mapped_column(BigInteger)
    effective_gas_price: Mapped[int | None] = mapped_column(Uint256)
    revert_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # broadcasts sent
    fee_bumps: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    broadcast_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # W3C traceparent of the request or event that asked for the call: the sender's spans join it
    trace_context: Mapped[str | None] = mapped_column(String(128))
    # the service that asked for it (offchain.chain.allowlist): what it may ask the key to sign
    caller: Mapped[str] = mapped_column(String(32))


class OutboxMessage(Base):
    """Transactional outbox: written with the change it announces, relayed to Redis Streams."""

    __tablename__ = "caas_outbox"
    __table_args__ = (
        # what the relay scans: only the (few) unpublished rows
        Index("ix_caas_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # NULL for platform-wide events (chain, system); such rows are visible to every partner scope
    partner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = created_at()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsumedEvent(Base):
    """(consumer, event) pairs already handled: inserted in the handler's own transaction."""

    __tablename__ = "caas_consumed_events"
    __table_args__ = (PrimaryKeyConstraint("consumer", "event_id"),)

    consumer: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(200))
    consumed_at: Mapped[datetime] = created_at()


class AuditLogEntry(Base):
    """Append-only: a trigger rejects UPDATE, DELETE and TRUNCATE, even by the table owner."""

    __tablename__ = "caas_audit_log"
    __table_args__ = (
        Index(None, "subject_type", "subject_id"),
        Index(None, "partner_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    occurred_at: Mapped[datetime] = created_at()
    partner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    subject_type: Mapped[str] = mapped_column(String(100))
    subject_id: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
