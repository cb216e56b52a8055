"""Analytics use cases: load the partner's applications and loans, then compute (pure).

Sources: caas_applications, caas_originations (offer acceptance time), the caas_loans projection
and the loans' repayment events in caas_chain_events (for vintage curves). The session is
partner-scoped, so row-level security keeps every figure to the calling partner's book.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import analytics
from offchain.domain.loan_book import LoanState
from offchain.domain.money import from_iso_numeric
from offchain.persistence.credit import Application, Origination
from offchain.persistence.models import ChainEvent, IndexedBlock, Loan

_MOVEMENT_EVENTS = ("RepaymentRecorded", "RepaymentReversed", "LateFeeAssessed")


def _unix(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def _movement(event: str, args: dict[str, Any], at: int) -> analytics.Movement:
    if event == "LateFeeAssessed":
        return analytics.Movement(at=at, fee_assessed=int(args["amount"]))
    sign = 1 if event == "RepaymentRecorded" else -1
    return analytics.Movement(
        at=at, scheduled=sign * int(args["scheduled_part"]), fee_paid=sign * int(args["fee_part"])
    )


async def as_of(session: AsyncSession) -> int:
    """Now, or the chain's clock when it runs ahead of the wall clock (a dev chain moved forward):
    the projection is as of the last indexed block, and days past due count on the chain's clock."""
    latest = await session.scalar(select(func.max(IndexedBlock.timestamp)))
    return max(int(time.time()), int(latest or 0))


async def load(session: AsyncSession) -> tuple[list[analytics.ApplicationFact], list[analytics.LoanFact]]:
    applications = [
        analytics.ApplicationFact(
            status=row.status, created_at=_unix(row.created_at) or 0, decided_at=_unix(row.decided_at)
        )
        for row in await session.execute(
            select(Application.status, Application.created_at, Application.decided_at)
        )
    ]
    rows = (
        await session.execute(
            select(Loan, Origination.created_at)
            .outerjoin(Origination, Origination.loan_id == Loan.id)
            .where(Loan.partner_id.is_not(None), Loan.chain_state >= int(LoanState.ACTIVE))
            .where(Loan.chain_state != int(LoanState.CANCELLED))
        )
    ).all()
    chain_ids = [loan.chain_loan_id for loan, _ in rows]
    movements: dict[str, list[analytics.Movement]] = {loan_id: [] for loan_id in chain_ids}
    if chain_ids:
        events = await session.execute(
            select(ChainEvent.loan_id, ChainEvent.event, ChainEvent.args, ChainEvent.block_timestamp)
            .where(ChainEvent.loan_id.in_(chain_ids), ChainEvent.event.in_(_MOVEMENT_EVENTS))
            .order_by(ChainEvent.block_number, ChainEvent.log_index)
        )
        for loan_id, event, args, at in events:
            movements[loan_id].append(_movement(event, args, int(at or 0)))
    loans = [
        analytics.LoanFact(
            currency=from_iso_numeric(loan.currency) if loan.currency else "NGN",
            state=LoanState(loan.chain_state),
            principal=int(loan.principal or 0),
            total_due=int(loan.total_due or 0),
            installment_count=int(loan.installment_count or 0),
            installment_interval=int(loan.installment_interval or 0),
            grace_period=int(loan.grace_period or 0),
            scheduled_repaid=int(loan.scheduled_repaid),
            late_fees_assessed=int(loan.late_fees_assessed),
            late_fees_paid=int(loan.late_fees_paid),
            disbursed_at=_unix(loan.disbursed_at),
            ever_defaulted=bool(loan.ever_defaulted),
            accepted_at=_unix(accepted_at),
            movements=tuple(movements[loan.chain_loan_id]),
        )
        for loan, accepted_at in rows
    ]
    return applications, loans


async def portfolio(*, session: AsyncSession) -> dict[str, Any]:
    applications, loans = await load(session)
    return analytics.portfolio(applications, loans, at=await as_of(session))
