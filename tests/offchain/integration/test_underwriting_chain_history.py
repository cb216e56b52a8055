"""The borrower's on-chain history as underwriting reads it from the indexed tables."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from offchain.domain.loan_book import SECONDS_PER_DAY, LoanState
from offchain.persistence.models import ChainEvent, Loan
from offchain.platform.db import Database
from offchain.services.underwriting.applications import chain_history

pytestmark = pytest.mark.asyncio
DAY = SECONDS_PER_DAY
T0 = 1_700_000_000


def h32() -> str:
    return "0x" + os.urandom(32).hex()


def loan_rows(borrower_ref: str, state: LoanState, events: list[tuple[str, int, dict]]):
    chain_loan_id = h32()
    loan = Loan(
        chain_loan_id=chain_loan_id,
        borrower_ref=borrower_ref,
        currency=566,
        total_due=300,
        principal=270,
        installment_count=3,
        installment_interval=30 * DAY,
        grace_period=5 * DAY,
        chain_state=int(state),
        outstanding=300,
        ever_defaulted=state in (LoanState.DEFAULTED, LoanState.WRITTEN_OFF),
    )
    rows = [
        ChainEvent(
            chain_id=31337,
            block_number=1_000 + i,
            block_hash=h32(),
            tx_hash=h32(),
            tx_index=0,
            log_index=0,
            address="0x" + "11" * 20,
            contract="LoanBook",
            event=name,
            loan_id=chain_loan_id,
            args=args,
            topics=[h32(), chain_loan_id],
            data="0x",
            block_timestamp=at,
        )
        for i, (name, at, args) in enumerate(events)
    ]
    return loan, rows


CREATED = {
    "currency": 566,
    "principal": 270,
    "total_due": 300,
    "installment_count": 3,
    "installment_interval": 30 * DAY,
    "grace_period": 5 * DAY,
    "max_late_fees": 50,
}
OPENED = [
    ("LoanCreated", T0 - 2 * DAY, CREATED),
    ("LoanApproved", T0 - DAY, {}),
    ("LoanDisbursed", T0, {"amount": 270, "disbursed_at": T0}),
]


async def test_chain_history__days_past_due_from_indexed_events(db: Database):
    borrower, other = h32(), h32()
    late_then_current = [
        *OPENED,
        ("RepaymentRecorded", T0 + 45 * DAY, {"fee_part": 0, "scheduled_part": 100, "amount": 100}),
    ]
    written_off = [
        *OPENED,
        ("LoanDefaulted", T0 + 120 * DAY, {"days_past_due": 90, "outstanding": 300}),
        ("LoanWrittenOff", T0 + 150 * DAY, {"outstanding": 300}),
    ]
    async with db.worker_session() as session:
        for ref, state, events in (
            (borrower, LoanState.ACTIVE, late_then_current),
            (borrower, LoanState.WRITTEN_OFF, written_off),
            (other, LoanState.ACTIVE, OPENED),  # someone else's, 60 days late: not counted
        ):
            loan, rows = loan_rows(ref, state, events)
            session.add(loan)
            session.add_all(rows)

    as_of = datetime.fromtimestamp(T0 + 70 * DAY, tz=UTC)
    async with db.worker_session() as session:
        history = await chain_history(session, borrower, as_of)
    assert history.active_loans == 1 and history.written_off_loans == 1
    assert history.defaults_ever == 1
    # the written-off loan reached 120 days (installment 1 due day 30, written off day 150)
    assert history.max_days_past_due == 120
    # the active loan: installment 2 due day 60, 10 days late on day 70
    assert history.current_days_past_due == 10

    async with db.worker_session() as session:
        assert (await chain_history(session, h32(), as_of)).max_days_past_due == 0
