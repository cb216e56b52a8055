"""The loan lock every money path takes before it reads a loan's state or balance.

A transaction-scoped PostgreSQL advisory lock per loan (`loan:<id>`): intake, the application of
held money, manual matching and payment references serialize on it, and read the loan after it
(populate_existing), so none acts on a state another has just changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.models import Loan


async def lock_loan(session: AsyncSession, loan_id: uuid.UUID) -> Loan | None:
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"loan:{loan_id}"})
    return (
        await session.execute(
            select(Loan).where(Loan.id == loan_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def lock_loans(session: AsyncSession, loan_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Loan]:
    """`lock_loan` for many loans, in one order for every caller (the lock ids'): two batches
    sharing loans wait for each other instead of deadlocking."""
    if not loan_ids:
        return {}
    await session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtext(k) AS h "
            "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) AS locks"
        ),
        {"keys": [f"loan:{loan_id}" for loan_id in loan_ids]},
    )
    loans = (
        await session.execute(
            select(Loan).where(Loan.id.in_(list(loan_ids))).execution_options(populate_existing=True)
        )
    ).scalars()
    return {loan.id: loan for loan in loans}
