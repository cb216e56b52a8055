"""The double-entry journal in PostgreSQL: models and the async API services post through.

Every function works inside the caller's `AsyncSession` and transaction (a worker session:
these are platform tables), so a service commits its own state and its ledger postings
atomically, or neither.

What the database itself guarantees (migration 0006_ledger), whatever code writes to it:
- every posting balances per currency and has at least two entries: a DEFERRABLE INITIALLY
  DEFERRED constraint trigger checks it at commit;
- entries never change (UPDATE/DELETE/TRUNCATE refused); a posting's only change is its status,
  pending -> posted | voided; corrections are reversing postings (`reverse`);
- balances follow the entries: triggers maintain `caas_ledger_balances` in the same transaction,
  and nobody else may write that table (the triggers run as its owner).

Balances are kept in `SLOTS` rows per account and currency, the slot chosen by the writing
connection. A hot account (a rail's clearing account, a partner's funding) would otherwise be one
row every transaction locks until it commits, serialising all payment processing behind it;
with slots, concurrent connections write different rows and a read sums at most `SLOTS` rows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from offchain.domain.ledger import (
    AccountKind,
    Leg,
    Posting,
    Side,
    parse_account,
    reversal_of,
    signed,
)
from offchain.persistence.base import Base, created_at
from offchain.persistence.models import PARTNER_SCOPED

# accounts of a partner (its funding account) are visible to that partner's sessions; the rest
# of the ledger is platform data, read and written by workers only
PARTNER_SCOPED.update({"caas_ledger_accounts": "partner_id"})

SLOTS = 16
STATUSES = ("pending", "posted", "voided")
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


# --- the API --------------------------------------------------------------------------------


class LedgerError(Exception):
    pass


class LedgerConflict(LedgerError):
    """The posting id exists with different legs, or in a state this call cannot replay."""


class PostingNotFound(LedgerError, LookupError):
    pass


class PostingStateError(LedgerError):
    """The posting is not in the state this transition needs (e.g. voiding a posted one)."""


@dataclass(frozen=True, slots=True)
class Balance:
    posted: int  # signed by the account's normal side: positive in ordinary operation
    pending_debits: int
    pending_credits: int
    posted_debits: int = 0
    posted_credits: int = 0


@dataclass(frozen=True, slots=True)
class PostingRecord:
    posting_id: str
    status: str
    description: str
    metadata: Mapping[str, Any]
    legs: tuple[Leg, ...]
    created_at: datetime
    posted_at: datetime | None
    voided_at: datetime | None
    reverses: str | None
    reversed_by: str | None

    @property
    def posting(self) -> Posting:
        return Posting(self.posting_id, self.legs, self.description, self.metadata)

    def as_dict(self) -> dict[str, Any]:
        return {
            "posting_id": self.posting_id,
            "status": self.status,
            "description": self.description,
            "metadata": dict(self.metadata),
            "legs": [
                {
                    "account": leg.account,
                    "side": leg.side.value,
                    "amount": leg.amount,
                    "currency": leg.currency,
                }
                for leg in self.legs
            ],
            "created_at": self.created_at.isoformat(),
            "posted_at": self.posted_at.isoformat() if self.posted_at else None,
            "voided_at": self.voided_at.isoformat() if self.voided_at else None,
            "reverses": self.reverses,
            "reversed_by": self.reversed_by,
        }


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    currency: str
    debits: int  # posted
    credits: int
    pending_debits: int
    pending_credits: int

    @property
    def balanced(self) -> bool:
        return self.debits == self.credits and self.pending_debits == self.pending_credits


# One statement writes a whole batch: postings, any accounts they open, and their entries. The
# triggers then add to the balances (one upsert per statement) and check at COMMIT that every
# posting has all its legs and balances.
_WRITE = text(
    """
WITH new_postings AS (
    INSERT INTO caas_ledger_postings (posting_id, status, description, legs, metadata, reverses, posted_at)
    SELECT p.posting_id, CAST(:status AS varchar), p.description, p.legs, CAST(p.metadata AS jsonb),
           p.reverses, CASE WHEN CAST(:status AS varchar) = 'posted' THEN now() END
    FROM unnest(CAST(:posting_ids AS text[]), CAST(:descriptions AS text[]), CAST(:leg_counts AS smallint[]),
                CAST(:metadata AS text[]), CAST(:reverses AS text[]))
         WITH ORDINALITY AS p(posting_id, description, legs, metadata, reverses, i)
    ORDER BY p.i
    ON CONFLICT DO NOTHING
    RETURNING seq, posting_id, legs
), new_legs AS (
    SELECT l.*, n.seq, n.legs
    FROM unnest(CAST(:leg_postings AS text[]), CAST(:leg_numbers AS smallint[]), CAST(:accounts AS text[]),
                CAST(:currencies AS text[]), CAST(:sides AS text[]), CAST(:amounts AS bigint[]),
                CAST(:kinds AS text[]), CAST(:normal_sides AS text[]), CAST(:partners AS uuid[]),
                CAST(:loans AS text[]))
         AS l(posting_id, leg, account, currency, side, amount, kind, normal_side, partner_id, loan_id)
    JOIN new_postings n USING (posting_id)
), new_accounts AS (
    INSERT INTO caas_ledger_accounts (code, currency, kind, normal_side, partner_id, loan_id)
    SELECT DISTINCT ON (account, currency) account, currency, kind, normal_side, partner_id, loan_id
    FROM new_legs ORDER BY account, currency
    ON CONFLICT DO NOTHING
), new_entries AS (
    INSERT INTO caas_ledger_entries (posting_seq, leg, legs, account, currency, side, amount)
    SELECT seq, leg, legs, account, currency, side, amount FROM new_legs
)
SELECT posting_id FROM new_postings
"""
)
_LEG_COLUMNS = (
    "leg_postings",
    "leg_numbers",
    "accounts",
    "currencies",
    "sides",
    "amounts",
    "kinds",
    "normal_sides",
    "partners",
    "loans",
)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def _metadata(posting: Posting) -> str:
    try:
        return json.dumps(dict(posting.metadata), separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"posting {posting.posting_id}: metadata must be JSON-able: {error}") from error


async def _write(
    session: AsyncSession, postings: Sequence[Posting], *, status: str, reverses: str | None = None
) -> list[bool]:
    ids = [posting.posting_id for posting in postings]
    if len(set(ids)) != len(ids):
        raise ValueError("a batch names the same posting id twice")
    if not postings:
        return []
    # column arrays (asyncpg sends them binary): cheaper to build and to parse than JSON rows
    columns: dict[str, list[Any]] = {name: [] for name in _LEG_COLUMNS}
    for posting in postings:
        partner_of_posting = _uuid_or_none(posting.metadata.get("partner_id"))
        for i, leg in enumerate(posting.legs):
            ref = parse_account(leg.account)
            # a partner's funding account is its own; loan accounts belong to the loan's partner
            partner = _uuid_or_none(ref.partner_id) if ref.partner_id else None
            if partner is None and ref.loan_id is not None:
                partner = partner_of_posting
            for name, value in zip(
                _LEG_COLUMNS,
                (
                    posting.posting_id,
                    i,
                    leg.account,
                    leg.currency,
                    leg.side.value,
                    leg.amount,
                    ref.kind.value,
                    ref.normal_side.value,
                    partner,
                    ref.loan_id,
                ),
                strict=True,
            ):
                columns[name].append(value)
    result = await session.execute(
        _WRITE,
        {
            "status": status,
            "posting_ids": ids,
            "descriptions": [posting.description for posting in postings],
            "leg_counts": [len(posting.legs) for posting in postings],
            "metadata": [_metadata(posting) for posting in postings],
            "reverses": [reverses] * len(postings),
            **columns,
        },
    )
    created = set(result.scalars())
    outcome = []
    for posting in postings:
        if posting.posting_id not in created:
            await _check_replay(session, posting, status=status, reverses=reverses)
        outcome.append(posting.posting_id in created)
    return outcome


async def _check_replay(
    session: AsyncSession, posting: Posting, *, status: str, reverses: str | None
) -> None:
    """`posting` was not inserted: fine if it is a replay of what exists, LedgerConflict if not."""
    # ON CONFLICT DO NOTHING waited for any concurrent writer of this id to commit or roll back,
    # so the row (if any) is visible to this later statement.
    existing = await get_posting(session, posting.posting_id)
    if existing is None:
        # the conflict was on `reverses`: this posting's original is already corrected
        raise LedgerConflict(f"posting {reverses} is already reversed by another posting")
    if not posting.same_legs(existing.legs):
        raise LedgerConflict(f"posting {posting.posting_id} exists with different legs")
    if existing.reverses != reverses:
        raise LedgerConflict(f"posting {posting.posting_id} exists and reverses {existing.reverses!r}")
    replayable = {"posted": ("posted",), "pending": ("pending", "posted")}[status]
    if existing.status not in replayable:
        raise LedgerConflict(
            f"posting {posting.posting_id} exists as {existing.status}; "
            + ("a voided hold is final, hold again under a new posting id"
               if existing.status == "voided" else "post it with post_pending")
        )  # fmt: skip


async def post(session: AsyncSession, posting: Posting) -> bool:
    """Record `posting` as posted. True if created; False if this exact posting is already posted."""
    return (await _write(session, [posting], status="posted"))[0]


async def post_many(session: AsyncSession, postings: Sequence[Posting]) -> list[bool]:
    """`post` for a batch in one statement (bulk work: a close of business, imports, replays).

    One result per posting, in order. A LedgerConflict on any of them is raised after the batch
    was written; the caller's transaction should then roll back, as for any failed unit of work.
    """
    return await _write(session, postings, status="posted")


async def hold(session: AsyncSession, posting: Posting) -> bool:
    """Record `posting` as pending (two-phase: affects pending balances only until posted).

    False when the same posting is already held or was since posted (a retried hold);
    LedgerConflict when it was voided: a new attempt needs a new posting id.
    """
    return (await _write(session, [posting], status="pending"))[0]


async def hold_many(session: AsyncSession, postings: Sequence[Posting]) -> list[bool]:
    """`hold` for a batch in one statement (a batch of payments taken in); one result per posting."""
    return await _write(session, postings, status="pending")


_TRANSITION = text(
    """
UPDATE caas_ledger_postings
SET status = CAST(:status AS varchar),
    posted_at = CASE WHEN CAST(:status AS varchar) = 'posted' THEN now() END,
    voided_at = CASE WHEN CAST(:status AS varchar) = 'voided' THEN now() END
WHERE posting_id = :posting_id AND status = 'pending'
RETURNING seq
"""
)


async def _settle(session: AsyncSession, posting_id: str, to: str) -> bool:
    moved = await session.execute(_TRANSITION, {"posting_id": posting_id, "status": to})
    if moved.scalar_one_or_none() is not None:
        return True
    status = (
        await session.execute(
            text("SELECT status FROM caas_ledger_postings WHERE posting_id = :id"), {"id": posting_id}
        )
    ).scalar_one_or_none()
    if status is None:
        raise PostingNotFound(f"no posting {posting_id}")
    if status == to:
        return False
    raise PostingStateError(f"posting {posting_id} is {status}; it cannot become {to}")


_TRANSITION_MANY = text(
    """
UPDATE caas_ledger_postings
SET status = CAST(:status AS varchar),
    posted_at = CASE WHEN CAST(:status AS varchar) = 'posted' THEN now() END,
    voided_at = CASE WHEN CAST(:status AS varchar) = 'voided' THEN now() END
WHERE posting_id = ANY(CAST(:posting_ids AS text[])) AND status = 'pending'
RETURNING posting_id
"""
)


async def _settle_many(session: AsyncSession, posting_ids: Sequence[str], to: str) -> list[bool]:
    if len(set(posting_ids)) != len(posting_ids):
        raise ValueError("a batch names the same posting id twice")
    if not posting_ids:
        return []
    moved = set(
        (await session.execute(_TRANSITION_MANY, {"posting_ids": list(posting_ids), "status": to})).scalars()
    )
    rest = [posting_id for posting_id in posting_ids if posting_id not in moved]
    if rest:
        statuses = dict(
            (
                await session.execute(
                    text(
                        "SELECT posting_id, status FROM caas_ledger_postings "
                        "WHERE posting_id = ANY(CAST(:ids AS text[]))"
                    ),
                    {"ids": rest},
                )
            ).all()
        )
        for posting_id in rest:
            status = statuses.get(posting_id)
            if status is None:
                raise PostingNotFound(f"no posting {posting_id}")
            if status != to:
                raise PostingStateError(f"posting {posting_id} is {status}; it cannot become {to}")
    return [posting_id in moved for posting_id in posting_ids]


async def post_pending_many(session: AsyncSession, posting_ids: Sequence[str]) -> list[bool]:
    """`post_pending` for a batch in one statement; one result per posting id, in order."""
    return await _settle_many(session, posting_ids, "posted")


async def post_pending(session: AsyncSession, posting_id: str) -> bool:
    """pending -> posted. False if already posted; PostingStateError if voided."""
    return await _settle(session, posting_id, "posted")


async def void_pending(session: AsyncSession, posting_id: str) -> bool:
    """pending -> voided. False if already voided; PostingStateError if posted (reverse it)."""
    return await _settle(session, posting_id, "voided")


async def reverse(session: AsyncSession, posting_id: str, *, reversal_id: str, description: str) -> bool:
    """Post the reversal of a posted posting. True if created; False if `reversal_id` already is it."""
    original = await get_posting(session, posting_id)
    if original is None:
        raise PostingNotFound(f"no posting {posting_id}")
    if original.status != "posted":
        raise PostingStateError(
            f"posting {posting_id} is {original.status}; only posted postings are reversed (void a hold)"
        )
    if original.reversed_by is not None and original.reversed_by != reversal_id:
        raise LedgerConflict(f"posting {posting_id} is already reversed by {original.reversed_by}")
    reversal = reversal_of(original.posting, posting_id=reversal_id, description=description)
    return (await _write(session, [reversal], status="posted", reverses=posting_id))[0]


_GET = text(
    """
SELECT p.seq, p.posting_id, p.status, p.description, p.metadata, p.created_at, p.posted_at,
       p.voided_at, p.reverses,
       (SELECT r.posting_id FROM caas_ledger_postings r WHERE r.reverses = p.posting_id) AS reversed_by
FROM caas_ledger_postings p WHERE p.posting_id = :posting_id
"""
)
_LEGS = text(
    "SELECT account, side, amount, currency FROM caas_ledger_entries WHERE posting_seq = :seq ORDER BY leg"
)


async def get_posting(session: AsyncSession, posting_id: str) -> PostingRecord | None:
    row = (await session.execute(_GET, {"posting_id": posting_id})).mappings().one_or_none()
    if row is None:
        return None
    legs = (await session.execute(_LEGS, {"seq": row["seq"]})).all()
    return PostingRecord(
        posting_id=row["posting_id"],
        status=row["status"],
        description=row["description"],
        metadata=row["metadata"],
        legs=tuple(
            Leg(account, Side(side), int(amount), currency) for account, side, amount, currency in legs
        ),
        created_at=row["created_at"],
        posted_at=row["posted_at"],
        voided_at=row["voided_at"],
        reverses=row["reverses"],
        reversed_by=row["reversed_by"],
    )


_BALANCE = text(
    """
SELECT coalesce(sum(posted_debits), 0), coalesce(sum(posted_credits), 0),
       coalesce(sum(pending_debits), 0), coalesce(sum(pending_credits), 0)
FROM caas_ledger_balances WHERE account = :account AND currency = :currency
"""
)


async def balance(session: AsyncSession, account: str, currency: str) -> Balance:
    """The account's balance in `currency` (zero for an account nothing was posted to yet)."""
    side = parse_account(account).normal_side
    debits, credits, pending_debits, pending_credits = (
        int(v) for v in (await session.execute(_BALANCE, {"account": account, "currency": currency})).one()
    )
    return Balance(signed(side, debits, credits), pending_debits, pending_credits, debits, credits)


async def balances(session: AsyncSession, accounts: Sequence[str], currency: str) -> dict[str, Balance]:
    """`balance` for many accounts in one query (reconciliation reads every loan's receivable)."""
    rows = await session.execute(
        text(
            """
SELECT account, sum(posted_debits), sum(posted_credits), sum(pending_debits), sum(pending_credits)
FROM caas_ledger_balances WHERE account = ANY(:accounts) AND currency = :currency GROUP BY account
"""
        ),
        {"accounts": list(accounts), "currency": currency},
    )
    found = {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
    result = {}
    for account in accounts:
        debits, credits, pending_debits, pending_credits = found.get(account, (0, 0, 0, 0))
        side = parse_account(account).normal_side
        result[account] = Balance(
            signed(side, debits, credits), pending_debits, pending_credits, debits, credits
        )
    return result


async def trial_balance(session: AsyncSession, currency: str | None = None) -> list[TrialBalanceLine]:
    """Total debits and credits per currency, posted and pending: equal in a sound ledger."""
    rows = await session.execute(
        text(
            """
SELECT currency, sum(posted_debits), sum(posted_credits), sum(pending_debits), sum(pending_credits)
FROM caas_ledger_balances WHERE CAST(:currency AS text) IS NULL OR currency = :currency
GROUP BY currency ORDER BY currency
"""
        ),
        {"currency": currency},
    )
    return [TrialBalanceLine(row[0], *(int(v) for v in row[1:])) for row in rows]


async def account_balances(session: AsyncSession, currency: str | None = None) -> list[dict[str, Any]]:
    """Every account's balance (the lines of a trial balance)."""
    rows = await session.execute(
        text(
            """
SELECT a.code, a.currency, a.kind, a.normal_side,
       coalesce(sum(b.posted_debits), 0), coalesce(sum(b.posted_credits), 0),
       coalesce(sum(b.pending_debits), 0), coalesce(sum(b.pending_credits), 0)
FROM caas_ledger_accounts a
LEFT JOIN caas_ledger_balances b ON b.account = a.code AND b.currency = a.currency
WHERE CAST(:currency AS text) IS NULL OR a.currency = :currency
GROUP BY a.code, a.currency ORDER BY a.currency, a.code
"""
        ),
        {"currency": currency},
    )
    return [
        {
            "account": code,
            "currency": cur,
            "kind": kind,
            "normal_side": normal,
            "balance": signed(Side(normal), int(d), int(c)),
            "debits": int(d),
            "credits": int(c),
            "pending_debits": int(pd),
            "pending_credits": int(pc),
        }
        for code, cur, kind, normal, d, c, pd, pc in rows
    ]


async def balance_drift(session: AsyncSession) -> list[dict[str, Any]]:
    """Accounts whose kept balances differ from the sum of their entries (empty when sound).

    A full scan: for reconciliation and tests, not for request paths.
    """
    rows = await session.execute(
        text(
            """
WITH from_entries AS (
    SELECT e.account, e.currency,
           sum(e.amount) FILTER (WHERE p.status = 'posted' AND e.side = 'debit') AS pd,
           sum(e.amount) FILTER (WHERE p.status = 'posted' AND e.side = 'credit') AS pc,
           sum(e.amount) FILTER (WHERE p.status = 'pending' AND e.side = 'debit') AS qd,
           sum(e.amount) FILTER (WHERE p.status = 'pending' AND e.side = 'credit') AS qc
    FROM caas_ledger_entries e JOIN caas_ledger_postings p ON p.seq = e.posting_seq
    GROUP BY e.account, e.currency
), kept AS (
    SELECT account, currency, sum(posted_debits) AS pd, sum(posted_credits) AS pc,
           sum(pending_debits) AS qd, sum(pending_credits) AS qc
    FROM caas_ledger_balances GROUP BY account, currency
)
SELECT coalesce(f.account, k.account), coalesce(f.currency, k.currency),
       coalesce(f.pd, 0) - coalesce(k.pd, 0), coalesce(f.pc, 0) - coalesce(k.pc, 0),
       coalesce(f.qd, 0) - coalesce(k.qd, 0), coalesce(f.qc, 0) - coalesce(k.qc, 0)
FROM from_entries f FULL JOIN kept k ON k.account = f.account AND k.currency = f.currency
WHERE coalesce(f.pd, 0) <> coalesce(k.pd, 0) OR coalesce(f.pc, 0) <> coalesce(k.pc, 0)
   OR coalesce(f.qd, 0) <> coalesce(k.qd, 0) OR coalesce(f.qc, 0) <> coalesce(k.qc, 0)
"""
        )
    )
    return [
        {
            "account": account,
            "currency": currency,
            "posted_debits": int(a),
            "posted_credits": int(b),
            "pending_debits": int(c),
            "pending_credits": int(d),
        }
        for account, currency, a, b, c, d in rows
    ]


async def loan_statement(session: AsyncSession, loan_ids: Sequence[str]) -> dict[str, Any]:
    """The accounts of a loan (known by any of `loan_ids`: backend UUID, chain id) with entries."""
    accounts = (
        await session.execute(
            text(
                """
SELECT a.code, a.currency, a.kind, a.normal_side,
       coalesce(sum(b.posted_debits), 0), coalesce(sum(b.posted_credits), 0),
       coalesce(sum(b.pending_debits), 0), coalesce(sum(b.pending_credits), 0)
FROM caas_ledger_accounts a
LEFT JOIN caas_ledger_balances b ON b.account = a.code AND b.currency = a.currency
WHERE a.loan_id = ANY(:loan_ids)
GROUP BY a.code, a.currency ORDER BY a.code, a.currency
"""
            ),
            {"loan_ids": list(loan_ids)},
        )
    ).all()
    entries = (
        await session.execute(
            text(
                """
SELECT p.posting_id, p.status, p.description, p.created_at, p.posted_at, e.leg, e.account, e.currency,
       e.side, e.amount
FROM caas_ledger_entries e JOIN caas_ledger_postings p ON p.seq = e.posting_seq
WHERE (e.account, e.currency) IN (
    SELECT code, currency FROM caas_ledger_accounts WHERE loan_id = ANY(:loan_ids))
ORDER BY e.posting_seq, e.leg
"""
            ),
            {"loan_ids": list(loan_ids)},
        )
    ).all()
    return {
        "accounts": [
            {
                "account": code,
                "currency": currency,
                "kind": kind,
                "normal_side": normal,
                "balance": signed(Side(normal), int(d), int(c)),
                "pending_debits": int(pd),
                "pending_credits": int(pc),
            }
            for code, currency, kind, normal, d, c, pd, pc in accounts
        ],
        "entries": [
            {
                "posting_id": posting_id,
                "status": status,
                "description": description,
                "created_at": created.isoformat(),
                "posted_at": posted.isoformat() if posted else None,
                "leg": leg,
                "account": account,
                "currency": currency,
                "side": side,
                "amount": int(amount),
            }
            for (posting_id, status, description, created, posted, leg, account, currency, side, amount) in (
                entries
            )
        ],
    }
