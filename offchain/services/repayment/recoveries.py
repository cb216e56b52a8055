"""Recoveries on written-off loans (LoanBook natspec: a WRITTEN_OFF loan takes repayments and
reversals and stays WRITTEN_OFF; its outstanding falls with each recovery and rises with each
reversal).

The ledger writes a loan off by moving its whole receivable to credit losses (and unearned
income), so a written-off loan's receivable is zero, which reconciliation expects
(`domain.ledger.expected_receivable`). Money for it still goes through the usual repayment
posting (credit: the loan's receivable), recorded on chain as any repayment; once the chain has
recorded (or reversed) it, `true_up` moves whatever the receivable then holds back to credit
losses: a recovery reduces the loss, a reversed one increases it again. What intake may apply
to such a loan comes from the chain's outstanding (the loan mirror), not from the receivable.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import ledger as accounts
from offchain.domain.ledger import Posting, credit, debit
from offchain.domain.loan_book import LoanState
from offchain.domain.money import from_iso_numeric
from offchain.persistence import ledger as journal
from offchain.persistence.models import Loan

WRITTEN_OFF = int(LoanState.WRITTEN_OFF)


def owed_after_write_off(loan: Loan, pending_credits: int) -> int:
    """What a WRITTEN_OFF loan can still take: its outstanding on chain, less money on its way."""
    return max(0, int(loan.outstanding or 0) - pending_credits)


async def true_up(session: AsyncSession, events: Iterable[tuple[str, str]]) -> None:
    """After RepaymentRecorded / RepaymentReversed events, given as (chain loan id, posting id
    naming the event): bring written-off loans' receivables back to zero against credit losses.
    One query when none of the loans is written off (the usual case)."""
    by_loan: dict[str, list[str]] = {}
    for chain_loan_id, posting_id in events:
        by_loan.setdefault(str(chain_loan_id).lower(), []).append(posting_id)
    if not by_loan:
        return
    loans = (
        await session.execute(
            select(Loan).where(Loan.chain_loan_id.in_(sorted(by_loan)), Loan.chain_state == WRITTEN_OFF)
        )
    ).scalars()
    for loan in loans:
        if loan.currency is None:
            continue
        for posting_id in by_loan[loan.chain_loan_id]:
            await _true_up_one(session, loan, f"{posting_id}:{loan.id}")


async def _true_up_one(session: AsyncSession, loan: Loan, posting_id: str) -> None:
    if await journal.get_posting(session, posting_id) is not None:
        return  # this event's true-up is done (a redelivered event)
    assert loan.currency is not None
    currency = from_iso_numeric(loan.currency)
    receivable = accounts.loan_receivable(str(loan.id))
    held = (await journal.balance(session, receivable, currency)).posted
    if held == 0:
        return
    # held < 0: a recovery credited the receivable (the loss shrinks); held > 0: a reversal
    # debited it again (the loss grows back)
    legs = (
        (debit(receivable, -held, currency), credit(accounts.CREDIT_LOSSES, -held, currency))
        if held < 0
        else (debit(accounts.CREDIT_LOSSES, held, currency), credit(receivable, held, currency))
    )
    await journal.post(
        session,
        Posting(
            posting_id=posting_id,
            legs=legs,
            description=f"{'recovery on' if held < 0 else 'reversed recovery on'} written-off loan {loan.id}",
            metadata={"loan_id": str(loan.id), "kind": "recovery" if held < 0 else "recovery_reversed"},
        ),
    )
