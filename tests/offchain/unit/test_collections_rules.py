"""Collections rules: DPD buckets and CBN classes at their boundaries, provisions, late fees
within the cap, promises, and the due/missed boundary of one business date."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.domain import analytics
from offchain.domain import collections as rules
from offchain.domain.loan_book import SECONDS_PER_DAY, LoanState

LAGOS = ZoneInfo("Africa/Lagos")

BOUNDARIES = [
    (0, "current", "performing"),
    (1, "1-30", "pass_and_watch"),
    (30, "1-30", "pass_and_watch"),
    (31, "31-60", "substandard"),
    (60, "31-60", "substandard"),
    (61, "61-90", "doubtful"),
    (90, "61-90", "doubtful"),
    (91, "90+", "lost"),
]


@pytest.mark.parametrize(("dpd", "bucket", "klass"), BOUNDARIES)
def test_bucket_and_class_boundaries(dpd: int, bucket: str, klass: str):
    assert rules.dpd_bucket(dpd).value == bucket
    assert rules.cbn_class(dpd).value == klass


@given(st.integers(min_value=0, max_value=10_000))
def test_buckets_and_classes_are_monotone_and_agree(dpd: int):
    order = list(rules.DpdBucket)
    assert order.index(rules.dpd_bucket(dpd)) <= order.index(rules.dpd_bucket(dpd + 1))
    # the two scales share their cut points, so a bucket names exactly one class
    assert list(rules.CbnClass).index(rules.cbn_class(dpd)) == order.index(rules.dpd_bucket(dpd))


@given(st.integers(min_value=0, max_value=2**96), st.sampled_from(list(rules.CbnClass)))
def test_provision_is_the_rate_rounded_up(balance: int, klass: rules.CbnClass):
    amount = rules.provision(balance, klass)
    bps = rules.PROVISION_BPS[klass]
    assert amount * 10_000 >= balance * bps > (amount - 1) * 10_000 or amount == 0 == balance * bps
    assert [rules.PROVISION_BPS[c] for c in rules.CbnClass] == [100, 500, 2_000, 5_000, 10_000]


def test_negative_days_past_due_are_refused():
    with pytest.raises(ValueError):
        rules.dpd_bucket(-1)


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10**9),
)
def test_late_fee_never_exceeds_the_room_under_the_cap(unpaid: int, room: int, bps: int, minimum: int):
    fee = rules.late_fee_amount(rules.CollectionsPolicy(late_fee_bps=bps, late_fee_min=minimum), unpaid, room)
    assert 0 <= fee <= room
    assert fee == min(room, max(minimum, -(-unpaid * bps // 10_000)))


def _loan(disbursed_at: int, **overrides) -> rules.LoanSnapshot:
    values = dict(
        state=LoanState.ACTIVE,
        currency=566,
        principal=1_000_000,
        total_due=1_100_000,
        installment_count=3,
        installment_interval=30 * SECONDS_PER_DAY,
        grace_period=3 * SECONDS_PER_DAY,
        max_late_fees=50_000,
        disbursed_at=disbursed_at,
        scheduled_repaid=0,
        late_fees_assessed=0,
        late_fees_paid=0,
        outstanding=1_100_000,
        amount_due=0,
        days_past_due=0,
        at=disbursed_at,
    )
    values.update(overrides)
    return rules.LoanSnapshot(**values)


def _plan(loan: rules.LoanSnapshot, day: date, **kwargs) -> rules.DayPlan:
    return rules.plan_day(
        loan=loan, business_date=day, tz=LAGOS, policy=kwargs.pop("policy", rules.CollectionsPolicy()), default_after_days=90,
        done=kwargs.pop("done", ()), chain_loan_id="0x" + "11" * 32, **kwargs,
    )  # fmt: skip


@given(st.integers(min_value=0, max_value=86_399))
def test_due_on_the_due_date_missed_from_the_next_one(second_of_day: int):
    start = int(datetime(2026, 3, 1, tzinfo=LAGOS).timestamp()) + second_of_day
    loan = _loan(start)
    due_date = rules.local_date(start + 30 * SECONDS_PER_DAY, LAGOS)
    on_due = [a.key for a in _plan(loan, due_date).actions]
    assert on_due == ["due:1:T-0"]
    after = [a.key for a in _plan(loan, due_date + timedelta(days=1)).actions]
    assert after == ["missed:1"]
    assert [a.key for a in _plan(loan, due_date - timedelta(days=7)).actions] == ["due:1:T-7"]
    # done actions are never planned again
    assert _plan(loan, due_date + timedelta(days=1), done={"missed:1"}).actions == []


def test_promise_pauses_dunning_and_a_broken_one_resumes_it():
    start = int(datetime(2026, 3, 1, 9, tzinfo=LAGOS).timestamp())
    at = start + 40 * SECONDS_PER_DAY
    loan = _loan(start, days_past_due=10, amount_due=366_666, at=at, max_late_fees=0)
    today = rules.local_date(at, LAGOS)
    promise = rules.Promise("p1", 100_000, today + timedelta(days=2), repaid_baseline=0)
    dunning = rules.CollectionsPolicy(dunning=(rules.DunningStep(7, "sms", "collection_initiated"),))
    paused = _plan(loan, today, promises=[promise], done={"missed:1", "collection:1"}, policy=dunning)
    assert paused.paused and not [a for a in paused.actions if a.notification]
    broken = _plan(
        loan, today + timedelta(days=3), promises=[promise], done={"missed:1", "collection:1"}, policy=dunning
    )
    assert broken.promise_updates == {"p1": rules.PromiseStatus.BROKEN}
    assert [a.kind for a in broken.actions] == ["promise_broken", "dunning"]
    kept = rules.promise_outcome(promise, repaid_now=100_000, business_date=today + timedelta(days=9))
    assert kept is rules.PromiseStatus.KEPT


def test_late_fee_ref_is_deterministic_per_loan_and_date():
    day = date(2026, 4, 1)
    assert (
        rules.fee_ref("0xaa", day) == rules.fee_ref("0xaa", day) != rules.fee_ref("0xaa", day + timedelta(1))
    )
    assert rules.close_of_business(day, LAGOS) == int(
        datetime(2026, 4, 1, 22, 59, 59, tzinfo=UTC).timestamp()
    )


def _fact(outstanding_share: int, dpd_days: int, at: int) -> analytics.LoanFact:
    disbursed = at - (30 + 3 + dpd_days) * SECONDS_PER_DAY if dpd_days else at - SECONDS_PER_DAY
    return analytics.LoanFact(
        currency="NGN",
        state=LoanState.ACTIVE,
        principal=outstanding_share,
        total_due=outstanding_share,
        installment_count=1,
        installment_interval=30 * SECONDS_PER_DAY,
        grace_period=3 * SECONDS_PER_DAY,
        scheduled_repaid=0,
        late_fees_assessed=0,
        late_fees_paid=0,
        disbursed_at=disbursed,
    )


@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=1, max_value=10**12))
def test_par_is_weighted_by_balance_not_count(late: int, current: int):
    at = 2_000_000_000
    figures = analytics.par([_fact(late, 40, at), _fact(current, 0, at)], at)
    assert figures["par30_balance"] == late and figures["par60_balance"] == 0
    assert figures["par30"] == pytest.approx(late / (late + current), abs=1e-6)
