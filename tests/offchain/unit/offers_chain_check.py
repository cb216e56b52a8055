"""Shared by the offers tests: a schedule must be exactly what LoanBook's rules make of its terms."""

from __future__ import annotations

from offchain.domain.loan_book import Loan, LoanState
from offchain.domain.offers.schedule import Schedule

DISBURSED_AT = 1_750_000_000


def chain_loan(schedule: Schedule, *, grace_period: int = 0, max_late_fees: int = 0) -> Loan:
    """The Python model of LoanBook holding this schedule, disbursed at DISBURSED_AT."""
    loan = Loan(
        currency=566,
        principal=schedule.principal,
        total_due=schedule.total_due,
        installment_count=schedule.installment_count,
        installment_interval=schedule.installment_interval,
        grace_period=grace_period,
        max_late_fees=max_late_fees,
        state=LoanState.APPROVED,
    )
    loan.disburse(DISBURSED_AT)
    return loan


def assert_chain_equivalent(schedule: Schedule) -> None:
    loan = chain_loan(schedule)
    due_so_far = 0
    for item in schedule.installments:
        assert loan.installment_amount(item.index) == item.amount
        assert loan.due_at(item.index) == DISBURSED_AT + item.due_offset
        assert loan.scheduled_due_by(DISBURSED_AT + item.due_offset - 1) == due_so_far
        due_so_far += item.amount
        assert loan.scheduled_due_by(DISBURSED_AT + item.due_offset) == due_so_far
    assert due_so_far == loan.total_due
