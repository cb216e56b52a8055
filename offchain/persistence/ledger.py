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
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.ledger import (
    Posting,
    PostingStatus,
    parse_account,
    reversal_of,
)
from offchain.persistence.ledger_reads import (
    Balance,
    PostingRecord,
    TrialBalanceLine,
    account_balances,
    balance,
    balance_drift,
    balances,
    get_posting,
    loan_statement,
    trial_balance,
)
from offchain.persistence.ledger_tables import (
    ACCOUNT_CODE,
    POSTING_ID,
    SIDES,
    SLOTS,
    STATUSES,
    LedgerAccount,
    LedgerBalance,
    LedgerEntry,
    LedgerPosting,
    ReconciliationMismatch,
    ReconciliationRun,
)

__all__ = [
    "ACCOUNT_CODE",
    "POSTING_ID",
    "SIDES",
    "SLOTS",
    "STATUSES",
    "Balance",
    "LedgerAccount",
    "LedgerBalance",
    "LedgerConflict",
    "LedgerEntry",
    "LedgerError",
    "LedgerPosting",
    "PostingNotFound",
    "PostingRecord",
    "PostingStateError",
    "ReconciliationMismatch",
    "ReconciliationRun",
    "TrialBalanceLine",
    "account_balances",
    "balance",
    "balance_drift",
    "balances",
    "get_posting",
    "hold",
    "hold_many",
    "loan_statement",
    "post",
    "post_many",
    "post_pending",
    "post_pending_many",
    "reverse",
    "trial_balance",
    "void_pending",
]

# --- the API --------------------------------------------------------------------------------


class LedgerError(Exception):
    pass


class LedgerConflict(LedgerError):
    """The posting id exists with different legs, or in a state this call cannot replay."""


class PostingNotFound(LedgerError, LookupError):
    pass


class PostingStateError(LedgerError):
    """The posting is not in the state this transition needs (e.g. voiding a posted one)."""


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
    session: AsyncSession, postings: Sequence[Posting], *, status: PostingStatus, reverses: str | None = None
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
    session: AsyncSession, posting: Posting, *, status: PostingStatus, reverses: str | None
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
    replayable = {
        PostingStatus.POSTED: (PostingStatus.POSTED,),
        PostingStatus.PENDING: (PostingStatus.PENDING, PostingStatus.POSTED),
    }[status]
    if existing.status not in replayable:
        raise LedgerConflict(
            f"posting {posting.posting_id} exists as {existing.status}; "
            + ("a voided hold is final, hold again under a new posting id"
               if existing.status == PostingStatus.VOIDED else "post it with post_pending")
        )  # fmt: skip


async def post(session: AsyncSession, posting: Posting) -> bool:
    """Record `posting` as posted. True if created; False if this exact posting is already posted."""
    return (await _write(session, [posting], status=PostingStatus.POSTED))[0]


async def post_many(session: AsyncSession, postings: Sequence[Posting]) -> list[bool]:
    """`post` for a batch in one statement (bulk work: a close of business, imports, replays).

    One result per posting, in order. A LedgerConflict on any of them is raised after the batch
    was written; the caller's transaction should then roll back, as for any failed unit of work.
    """
    return await _write(session, postings, status=PostingStatus.POSTED)


async def hold(session: AsyncSession, posting: Posting) -> bool:
    """Record `posting` as pending (two-phase: affects pending balances only until posted).

    False when the same posting is already held or was since posted (a retried hold);
    LedgerConflict when it was voided: a new attempt needs a new posting id.
    """
    return (await _write(session, [posting], status=PostingStatus.PENDING))[0]


async def hold_many(session: AsyncSession, postings: Sequence[Posting]) -> list[bool]:
    """`hold` for a batch in one statement (a batch of payments taken in); one result per posting."""
    return await _write(session, postings, status=PostingStatus.PENDING)


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


async def _settle(session: AsyncSession, posting_id: str, to: PostingStatus) -> bool:
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


async def _settle_many(session: AsyncSession, posting_ids: Sequence[str], to: PostingStatus) -> list[bool]:
    if len(set(posting_ids)) != len(posting_ids):
        raise ValueError("a batch names the same posting id twice")
    if not posting_ids:
        return []
    moved = set(
        (await session.execute(_TRANSITION_MANY, {"posting_ids": list(posting_ids), "status": to})).scalars()
    )
    rest = [posting_id for posting_id in posting_ids if posting_id not in moved]
    if rest:
        statuses: dict[str, str] = dict(
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
    return await _settle_many(session, posting_ids, PostingStatus.POSTED)


async def post_pending(session: AsyncSession, posting_id: str) -> bool:
    """pending -> posted. False if already posted; PostingStateError if voided."""
    return await _settle(session, posting_id, PostingStatus.POSTED)


async def void_pending(session: AsyncSession, posting_id: str) -> bool:
    """pending -> voided. False if already voided; PostingStateError if posted (reverse it)."""
    return await _settle(session, posting_id, PostingStatus.VOIDED)


async def reverse(session: AsyncSession, posting_id: str, *, reversal_id: str, description: str) -> bool:
    """Post the reversal of a posted posting. True if created; False if `reversal_id` already is it."""
    original = await get_posting(session, posting_id)
    if original is None:
        raise PostingNotFound(f"no posting {posting_id}")
    if original.status != PostingStatus.POSTED:
        raise PostingStateError(
            f"posting {posting_id} is {original.status}; only posted postings are reversed (void a hold)"
        )
    if original.reversed_by is not None and original.reversed_by != reversal_id:
        raise LedgerConflict(f"posting {posting_id} is already reversed by {original.reversed_by}")
    reversal = reversal_of(original.posting, posting_id=reversal_id, description=description)
    return (await _write(session, [reversal], status=PostingStatus.POSTED, reverses=posting_id))[0]
