"""Repayment schedules: exact to the kobo, and the very schedule LoanBook enforces."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from offers_chain_check import assert_chain_equivalent

from offchain.domain.money import CurrencyMismatch, Money
from offchain.domain.offers.schedule import (
    Frequency,
    Method,
    ScheduleError,
    build_schedule,
    chain_amounts,
    effective_annual_rate,
)

NGN = "NGN"


def ngn(value: int) -> Money:
    return Money(value, NGN)


def exact_annuity_interest(principal: int, apr_bps: int, n: int, frequency: Frequency) -> Fraction:
    rate = Fraction(apr_bps, 10_000 * frequency.periods_per_year)
    if rate == 0:
        return Fraction(0)
    payment = principal * rate / (1 - (1 + rate) ** -n)
    return n * payment - principal


# -- worked examples ---------------------------------------------------------------------------------


def test_declining_balance__one_million_naira_30pct_6_monthly__matches_hand_computed_annuity() -> None:
    # r = 30 % / 12 = 2.5 % a month; A = P r / (1 - 1.025^-6) = ₦181,549.971 -> 18,154,997.1 kobo.
    # Total exact interest 8,929,982.64 kobo; billed rounded up: 8,929,983.
    schedule = build_schedule(
        method=Method.DECLINING_BALANCE,
        principal=ngn(100_000_000),
        apr_bps=3_000,
        installment_count=6,
        frequency=Frequency.MONTHLY,
    )
    assert schedule.amounts == [18_154_997] * 5 + [18_154_998]
    assert schedule.total_due == 108_929_983
    assert schedule.interest == 8_929_983
    exact = exact_annuity_interest(100_000_000, 3_000, 6, Frequency.MONTHLY)
    assert exact == pytest.approx(8_929_982.637, abs=0.001)
    first = schedule.installments[0]
    assert (first.interest, first.principal) == (2_500_000, 15_654_997)  # 2.5 % of ₦1m, then the rest
    second = schedule.installments[1]
    assert second.interest == 2_108_626  # ceil(0.025 * 84,345,003) cumulatively
    assert [item.due_offset for item in schedule.installments] == [k * 30 * 86_400 for k in range(1, 7)]
    # EAR over 30-day months: 1.025 ** (365 / 30) - 1
    assert schedule.ear == Decimal("0.350435045363")
    assert schedule.ear_bps == 3_504
    assert_chain_equivalent(schedule)


def test_flat__interest_on_original_principal_for_the_whole_tenor() -> None:
    schedule = build_schedule(
        method=Method.FLAT,
        principal=ngn(100_000_000),
        apr_bps=3_000,
        installment_count=6,
        frequency=Frequency.MONTHLY,
        fees=ngn(1_000_000),
    )
    assert schedule.interest == 15_000_000  # 30 % * ₦1m * 6/12
    assert schedule.total_due == 116_000_000
    assert schedule.amounts == [19_333_333] * 5 + [19_333_335]
    assert [item.interest for item in schedule.installments] == [2_500_000] * 6
    assert [item.fee for item in schedule.installments] == [166_666] * 5 + [166_670]
    assert schedule.installments[-1].principal == 16_666_665
    assert schedule.ear > Decimal("0.69")  # a flat rate costs about twice its headline
    assert_chain_equivalent(schedule)


def test_weekly__seven_day_interval_and_52_periods() -> None:
    schedule = build_schedule(
        method=Method.DECLINING_BALANCE,
        principal=ngn(52_000_000),
        apr_bps=5_200,
        installment_count=13,
        frequency=Frequency.WEEKLY,
    )
    assert schedule.installment_interval == 7 * 86_400
    assert schedule.installments[0].interest == 520_000  # 1 % a week of ₦520,000
    assert_chain_equivalent(schedule)


def test_zero_rate_no_fees__principal_split_by_the_chain_rule() -> None:
    schedule = build_schedule(
        method=Method.DECLINING_BALANCE,
        principal=ngn(1_000_001),
        apr_bps=0,
        installment_count=3,
        frequency=Frequency.MONTHLY,
    )
    assert schedule.amounts == [333_333, 333_333, 333_335]
    assert schedule.interest == 0
    assert schedule.ear == 0


def test_single_installment__one_period_of_interest() -> None:
    schedule = build_schedule(
        method=Method.DECLINING_BALANCE,
        principal=ngn(10_000_000),
        apr_bps=2_400,
        installment_count=1,
        frequency=Frequency.MONTHLY,
        fees=ngn(100_000),
    )
    assert schedule.amounts == [10_000_000 + 200_000 + 100_000]


def test_tenor_months_to_weekly_installments() -> None:
    assert [Frequency.WEEKLY.installments_for_months(m) for m in (1, 2, 3, 6, 12)] == [4, 9, 13, 26, 52]
    assert Frequency.MONTHLY.installments_for_months(7) == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"principal": ngn(0)}, "principal must be positive"),
        ({"installment_count": 0}, "installment_count"),
        ({"installment_count": 2**16}, "installment_count"),
        ({"apr_bps": -1}, "apr_bps"),
        ({"fees": ngn(-1)}, "fees"),
        ({"principal": ngn(5), "apr_bps": 0}, "below one minor unit"),
    ],
)
def test_build_schedule__refuses_what_the_chain_would_not_take(kwargs: dict, message: str) -> None:
    args = {
        "method": Method.DECLINING_BALANCE,
        "principal": ngn(1_000_000),
        "apr_bps": 3_000,
        "installment_count": 6,
        "frequency": Frequency.MONTHLY,
    } | kwargs
    with pytest.raises(ScheduleError, match=message):
        build_schedule(**args)


def test_build_schedule__refuses_floats_and_mixed_currencies() -> None:
    with pytest.raises(TypeError):
        build_schedule(
            method=Method.FLAT,
            principal=ngn(1_000_000),
            apr_bps=30.0,  # type: ignore[arg-type]
            installment_count=6,
            frequency=Frequency.MONTHLY,
        )
    with pytest.raises(CurrencyMismatch):
        build_schedule(
            method=Method.FLAT,
            principal=ngn(1_000_000),
            apr_bps=3_000,
            installment_count=6,
            frequency=Frequency.MONTHLY,
            fees=Money(100, "USD"),
        )


def test_installments_too_small_to_cover_interest__refused() -> None:
    with pytest.raises(ScheduleError, match="too small"):
        build_schedule(
            method=Method.DECLINING_BALANCE,
            principal=ngn(1),
            apr_bps=500_000,
            installment_count=4,
            frequency=Frequency.MONTHLY,
        )


def test_effective_annual_rate__upfront_fee_raises_it() -> None:
    amounts = [18_154_997] * 5 + [18_154_998]
    financed = effective_annual_rate(100_000_000, amounts, 30 * 86_400)
    deducted = effective_annual_rate(99_000_000, amounts, 30 * 86_400)  # ₦10,000 kept back at payout
    assert deducted > financed > Decimal("0.35")


def test_chain_amounts__last_takes_the_remainder() -> None:
    assert chain_amounts(10, 3) == [3, 3, 4]
    assert chain_amounts(9, 3) == [3, 3, 3]
    assert chain_amounts(5, 1) == [5]


# -- properties ---------------------------------------------------------------------------------------


@st.composite
def schedule_inputs(draw: st.DrawFn) -> dict:
    frequency = draw(st.sampled_from(Frequency))
    principal = draw(st.integers(min_value=100_000, max_value=10**12))  # ₦1,000 .. ₦10bn
    return {
        "method": draw(st.sampled_from(Method)),
        "frequency": frequency,
        "principal": ngn(principal),
        # up to 100 % APR: beyond that, over long tenors, one kobo more per installment repays
        # thousands of kobo sooner, and no equal-installment schedule can land on zero (refused)
        "apr_bps": draw(st.integers(min_value=0, max_value=10_000)),
        "installment_count": draw(
            st.integers(min_value=1, max_value=156 if frequency is Frequency.WEEKLY else 60)
        ),
        "fees": ngn(draw(st.integers(min_value=0, max_value=principal // 10))),
    }


@settings(max_examples=300, deadline=None)
@given(schedule_inputs())
def test_schedule__sums_exactly_and_never_a_negative_or_fractional_kobo(inputs: dict) -> None:
    schedule = build_schedule(**inputs)
    items = schedule.installments
    for item in items:
        for part in (item.amount, item.principal, item.interest, item.fee):
            assert type(part) is int and part >= 0
        assert item.amount == item.principal + item.interest + item.fee
    assert sum(item.amount for item in items) == schedule.total_due
    assert schedule.total_due == schedule.principal + schedule.interest + schedule.fees
    assert sum(item.principal for item in items) == inputs["principal"].value
    assert sum(item.fee for item in items) == inputs["fees"].value
    assert sum(item.interest for item in items) == schedule.interest >= 0
    # every installment but the last is equal; the last absorbs the remainder
    base = items[0].amount
    assert all(item.amount == base for item in items[:-1])
    assert 0 <= items[-1].amount - base < len(items)


@settings(max_examples=300, deadline=None)
@given(schedule_inputs())
def test_schedule__is_the_one_loan_book_enforces(inputs: dict) -> None:
    assert_chain_equivalent(build_schedule(**inputs))


@settings(max_examples=200, deadline=None)
@given(schedule_inputs())
def test_schedule__ear_at_least_the_nominal_apr(inputs: dict) -> None:
    schedule = build_schedule(**inputs)
    apr = Decimal(inputs["apr_bps"]) / 10_000
    if inputs["apr_bps"] > 0:
        assert schedule.ear >= apr
    elif inputs["fees"].value == 0:
        assert schedule.ear == 0
    assert schedule.ear_bps >= inputs["apr_bps"]


@settings(max_examples=200, deadline=None)
@given(schedule_inputs())
def test_declining_balance__interest_close_to_the_exact_annuity(inputs: dict) -> None:
    inputs = inputs | {"method": Method.DECLINING_BALANCE, "fees": ngn(0)}
    schedule = build_schedule(**inputs)
    n, frequency = inputs["installment_count"], inputs["frequency"]
    exact = exact_annuity_interest(inputs["principal"].value, inputs["apr_bps"], n, frequency)
    rate = Fraction(inputs["apr_bps"], 10_000 * frequency.periods_per_year)
    # One kobo more on each of installments 1..n-1 lowers the balance before the last by this much:
    # the granularity of the equal-installment rule, so the most the last installment may carry extra.
    step = ((1 + rate) ** (n - 1) - 1) / rate if rate else Fraction(n - 1)
    # never below exact accrual; above it only by what the equal-installment rule could not place
    assert exact <= schedule.interest <= exact + step + 2
    flat = build_schedule(**(inputs | {"method": Method.FLAT}))
    assert schedule.interest <= flat.interest
