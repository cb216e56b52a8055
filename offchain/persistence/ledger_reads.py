"""Reading the journal: one posting with its legs, balances (summed over the slots), the
trial balance, drift between balances and entries, and a loan's statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.ledger import (
    Leg,
    Posting,
    Side,
    parse_account,
    signed,
)


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
