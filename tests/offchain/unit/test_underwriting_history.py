"""Days past due from a loan's chain events: now and the worst ever, as the contract counts them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from offchain.domain.loan_book import SECONDS_PER_DAY, Loan, LoanState
from offchain.domain.underwriting.history import LoanEvent, record_from_events, summarize

DAY = SECONDS_PER_DAY
T0 = 1_700_000_000
TERMS = {
    "currency": 566,
    "principal": 270,
    "total_due": 300,
    "installment_count": 3,
    "installment_interval": 30 * DAY,
    "grace_period": 5 * DAY,
    "max_late_fees": 50,
}


def opened(disbursed_at: int = T0) -> list[LoanEvent]:
    return [
        LoanEvent("LoanCreated", T0 - 2 * DAY, TERMS),
        LoanEvent("LoanApproved", T0 - DAY),
        LoanEvent("LoanDisbursed", disbursed_at, {"amount": 270, "disbursed_at": disbursed_at}),
    ]


def repayment(at: int, scheduled: int, fee: int = 0, outstanding_after: int = 0) -> LoanEvent:
    return LoanEvent(
        "RepaymentRecorded",
        at,
        {
            "amount": scheduled + fee,
            "fee_part": fee,
            "scheduled_part": scheduled,
            "outstanding_after": outstanding_after,
        },
    )


def test_late_then_on_time__worst_is_the_late_installment():
    # installment 1 due day 30, paid day 45 (15 days late); installment 2 due day 60, paid day 62
    # (inside the grace period); installment 3 due day 90, unpaid at day 100.
    events = [*opened(), repayment(T0 + 45 * DAY, 100), repayment(T0 + 62 * DAY, 100)]
    record = record_from_events(events, as_of=T0 + 100 * DAY)
    assert record is not None
    assert record.state is LoanState.ACTIVE
    assert record.days_past_due == 10
    assert record.max_days_past_due == 15
    assert record.outstanding == 100


def test_partial_payment__oldest_installment_stays_unpaid():
    events = [*opened(), repayment(T0 + 45 * DAY, 50)]
    record = record_from_events(events, as_of=T0 + 70 * DAY)
    assert record is not None
    assert (record.days_past_due, record.max_days_past_due) == (40, 40)


def test_written_off__worst_is_at_write_off_and_nothing_is_past_due_now():
    events = [
        *opened(),
        LoanEvent("LoanDefaulted", T0 + 120 * DAY, {"days_past_due": 90, "outstanding": 300}),
        LoanEvent("LoanWrittenOff", T0 + 200 * DAY, {"outstanding": 300}),
    ]
    record = record_from_events(events, as_of=T0 + 400 * DAY)
    assert record is not None
    assert record.state is LoanState.WRITTEN_OFF
    assert record.defaulted_ever
    assert record.days_past_due == 0
    assert record.max_days_past_due == 170


def test_repaid_loan__keeps_its_worst_and_owes_nothing():
    events = [
        *opened(),
        repayment(T0 + 50 * DAY, 300),
        LoanEvent("LoanRepaid", T0 + 50 * DAY, {"repaid_at": T0 + 50 * DAY}),
    ]
    record = record_from_events(events, as_of=T0 + 400 * DAY)
    assert record is not None
    assert record.state is LoanState.REPAID
    assert (record.days_past_due, record.max_days_past_due, record.outstanding) == (0, 20, 0)


def test_reversal_reopens_the_arrears():
    events = [
        *opened(),
        repayment(T0 + 31 * DAY, 100),
        LoanEvent(
            "RepaymentReversed",
            T0 + 50 * DAY,
            {"amount": 100, "fee_part": 0, "scheduled_part": 100, "outstanding_after": 300, "state_after": 3},
        ),
    ]
    record = record_from_events(events, as_of=T0 + 58 * DAY)
    assert record is not None
    assert (record.days_past_due, record.max_days_past_due) == (28, 28)


def test_pending_loan_and_partial_index():
    pending = record_from_events(opened()[:2], as_of=T0 + 400 * DAY)
    assert pending is not None and (pending.state, pending.max_days_past_due) == (LoanState.APPROVED, 0)
    assert record_from_events(opened()[1:], as_of=T0) is None


def test_summarize__worst_over_loans():
    late = record_from_events([*opened(), repayment(T0 + 45 * DAY, 100)], as_of=T0 + 61 * DAY)
    clean = record_from_events(opened(), as_of=T0 + 10 * DAY)
    history = summarize([r for r in (late, clean) if r is not None])
    assert history.max_days_past_due == 15
    assert history.active_loans == 2


@given(
    payments=st.lists(
        st.tuples(st.integers(min_value=1, max_value=150 * DAY), st.integers(min_value=1, max_value=150)),
        max_size=6,
    ),
    horizon=st.integers(min_value=0, max_value=200 * DAY),
)
def test_worst_equals_a_day_by_day_scan(payments, horizon):
    """The replay's worst value equals scanning the contract model at every hour boundary."""
    model = Loan(**{k: TERMS[k] for k in TERMS})
    model.approve()
    model.disburse(T0)
    events = opened()
    timeline = []
    for offset, amount in sorted(payments):
        at = T0 + offset
        if at > T0 + horizon or model.state is not LoanState.ACTIVE:
            break
        amount = min(amount, model.outstanding)
        timeline.append((at, amount))
        allocation = model.repay(amount)
        events.append(repayment(at, allocation.scheduled_part, allocation.fee_part, model.outstanding))
        if model.state is LoanState.REPAID:
            events.append(LoanEvent("LoanRepaid", at, {"repaid_at": at}))
    as_of = T0 + horizon
    record = record_from_events(events, as_of)
    assert record is not None

    scan = Loan(**{k: TERMS[k] for k in TERMS})
    scan.approve()
    scan.disburse(T0)
    worst, pending = 0, list(timeline)
    for t in range(T0, as_of + 1, 3_600):
        while pending and pending[0][0] <= t:
            worst = max(worst, scan.days_past_due(pending[0][0]))
            scan.repay(pending.pop(0)[1])
        worst = max(worst, scan.days_past_due(t))
    # payments after the last hour boundary but not after `as_of` count too
    while pending and pending[0][0] <= as_of:
        worst = max(worst, scan.days_past_due(pending[0][0]))
        scan.repay(pending.pop(0)[1])
    worst = max(worst, scan.days_past_due(as_of))
    assert record.max_days_past_due == worst
    assert record.days_past_due == scan.days_past_due(as_of)


def test_without_creation_there_is_no_record():
    assert record_from_events([e for e in opened() if e.event != "LoanCreated"], as_of=T0) is None
