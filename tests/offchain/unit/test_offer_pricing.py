"""Pricing by risk rating, offer options under affordability, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from offers_chain_check import assert_chain_equivalent

from offchain.domain.money import Money
from offchain.domain.offers.pricing import (
    DEFAULT_PLANS,
    Affordability,
    Basis,
    OfferTerms,
    PricingError,
    PricingPolicy,
    RatePlan,
    Refusal,
    quote,
)
from offchain.domain.offers.schedule import Frequency, Method

NOW = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
NAIRA = 100
POLICY = PricingPolicy()


def ngn(naira: int) -> Money:
    return Money(naira * NAIRA, "NGN")


def largest_installment(offer: OfferTerms) -> int:
    return max(offer.schedule.amounts)


def test_origination_fee__bps_clamped_to_floor_and_cap() -> None:
    plan = RatePlan(3_000, 150, 1_000 * NAIRA, 250_000 * NAIRA, 1, 10**12, 12)
    assert plan.origination_fee(50_000 * NAIRA) == 1_000 * NAIRA  # 1.5 % = ₦750, below the floor
    assert plan.origination_fee(1_000_000 * NAIRA) == 15_000 * NAIRA
    assert plan.origination_fee(100_000_000 * NAIRA) == 250_000 * NAIRA  # 1.5 % = ₦1.5m, capped
    assert RatePlan(0, 1, 0, 10**9, 1, 10**12, 12).origination_fee(50) == 0  # 0.005 rounds half up... to 0
    assert RatePlan(0, 1, 0, 10**9, 1, 10**12, 12).origination_fee(5_000) == 1  # 0.5 -> 1


def test_requested_terms_within_plan_and_affordability__one_offer_as_asked() -> None:
    result = quote(
        POLICY, rating="B", amount=ngn(1_000_000), tenor_months=6, frequency=Frequency.MONTHLY, now=NOW
    )
    assert result.refusals == ()
    (offer,) = result.offers
    assert offer.basis is Basis.REQUESTED
    assert (offer.principal, offer.tenor_months, offer.apr_bps) == (1_000_000 * NAIRA, 6, 3_000)
    assert offer.origination_fee == 15_000 * NAIRA  # 1.5 % of ₦1m
    assert offer.total_due == offer.principal + offer.schedule.interest + offer.origination_fee
    assert offer.grace_period == 3 * 86_400
    assert offer.max_late_fees == 100_000 * NAIRA  # 10 % of principal, under the ₦500k cap
    assert offer.expires_at == NOW + timedelta(days=7)
    assert offer.schedule.method is Method.DECLINING_BALANCE
    assert_chain_equivalent(offer.schedule)


def test_late_fee_cap__share_of_principal_with_an_absolute_cap() -> None:
    assert POLICY.max_late_fees(1_000_000 * NAIRA) == 100_000 * NAIRA
    assert POLICY.max_late_fees(20_000_000 * NAIRA) == 500_000 * NAIRA


def test_affordability_max_amount__capped_amount_in_round_steps() -> None:
    result = quote(
        POLICY,
        rating="A",
        amount=ngn(2_000_000),
        tenor_months=12,
        frequency=Frequency.MONTHLY,
        now=NOW,
        affordability=Affordability(max_amount=1_234_567_89),
    )
    (offer,) = result.offers  # the installment was never the limit: no longer-tenor option
    assert offer.basis is Basis.AMOUNT_CAPPED
    assert offer.principal == 1_234_000 * NAIRA
    assert offer.tenor_months == 12


def test_affordability_installment__largest_fitting_amount_and_a_longer_tenor_for_the_full_amount() -> None:
    cap = 200_000 * NAIRA  # a month
    result = quote(
        POLICY,
        rating="B",
        amount=ngn(2_000_000),
        tenor_months=6,
        frequency=Frequency.MONTHLY,
        now=NOW,
        affordability=Affordability(max_monthly_installment=cap),
    )
    capped, longer = result.offers
    assert capped.basis is Basis.AMOUNT_CAPPED and capped.tenor_months == 6
    assert largest_installment(capped) <= cap
    step_up = quote(
        POLICY,
        rating="B",
        amount=Money(capped.principal + POLICY.amount_step, "NGN"),
        tenor_months=6,
        frequency=Frequency.MONTHLY,
        now=NOW,
    ).offers[0]
    assert largest_installment(step_up) > cap  # the capped amount is the largest that fits
    assert longer.basis is Basis.TENOR_EXTENDED and longer.principal == 2_000_000 * NAIRA
    assert largest_installment(longer) <= cap
    shorter = quote(
        POLICY,
        rating="B",
        amount=ngn(2_000_000),
        tenor_months=longer.tenor_months - 1,
        frequency=Frequency.MONTHLY,
        now=NOW,
    ).offers[0]
    assert largest_installment(shorter) > cap  # the shortest tenor that fits


def test_weekly_schedule__held_to_12_52_of_the_monthly_cap() -> None:
    affordability = Affordability(max_monthly_installment=52_000 * NAIRA)
    assert affordability.installment_cap(Frequency.WEEKLY) == 12_000 * NAIRA
    result = quote(
        POLICY,
        rating="A",
        amount=ngn(500_000),
        tenor_months=6,
        frequency=Frequency.WEEKLY,
        now=NOW,
        affordability=affordability,
    )
    assert result.offers
    for offer in result.offers:
        assert largest_installment(offer) <= 12_000 * NAIRA
        assert offer.schedule.installment_interval == 7 * 86_400


@pytest.mark.parametrize(
    ("rating", "naira", "months", "affordability", "refusal"),
    [
        ("E", 1_000_000, 6, None, Refusal.RATING_NOT_LENT_TO),
        ("B", 10_000, 6, None, Refusal.AMOUNT_BELOW_MINIMUM),
        ("D", 1_000_000, 12, None, Refusal.TENOR_ABOVE_MAXIMUM),
        ("D", 1_000_000, 6, Affordability(max_monthly_installment=100 * NAIRA), Refusal.NOT_AFFORDABLE),
        ("B", 1_000_000, 6, Affordability(max_amount=10_000 * NAIRA), Refusal.NOT_AFFORDABLE),
    ],
)
def test_quote__no_offer_comes_with_its_reason(
    rating: str, naira: int, months: int, affordability: Affordability | None, refusal: Refusal
) -> None:
    result = quote(
        POLICY,
        rating=rating,
        amount=ngn(naira),
        tenor_months=months,
        frequency=Frequency.MONTHLY,
        now=NOW,
        affordability=affordability,
    )
    assert result.offers == ()
    assert result.refusals == (refusal,)


def test_quote__refuses_what_it_cannot_price() -> None:
    with pytest.raises(PricingError, match="prices NGN"):
        quote(
            POLICY, rating="A", amount=Money(100_000_00, "USD"), tenor_months=6, frequency="monthly", now=NOW
        )
    with pytest.raises(PricingError, match="timezone-aware"):
        quote(
            POLICY,
            rating="A",
            amount=ngn(100_000),
            tenor_months=6,
            frequency=Frequency.MONTHLY,
            now=datetime(2025, 1, 1),
        )


def test_policy__round_trips_through_json() -> None:
    document = POLICY.to_json()
    assert PricingPolicy.from_json(document) == POLICY
    assert document["plans"]["B"]["apr_bps"] == 3_000
    assert document["plans"]["B"]["max_amount"] == {"value": 20_000_000 * NAIRA, "currency": "NGN"}
    assert "E" not in document["plans"]


def test_policy__refuses_a_plan_the_chain_cannot_schedule() -> None:
    with pytest.raises(PricingError, match="cannot be scheduled"):
        PricingPolicy(plans={"X": RatePlan(300_000, 0, 0, 0, 1, 10**9, 60)})  # 3,000 % on 1 kobo


def test_policy__refuses_inconsistent_plans() -> None:
    with pytest.raises(PricingError, match="floor above its cap"):
        RatePlan(3_000, 100, 10, 5, 1, 10, 12)
    with pytest.raises(PricingError, match="min_amount"):
        RatePlan(3_000, 100, 0, 5, 10, 1, 12)


def test_offer__stored_json_rebuilds_the_same_offer_and_detects_tampering() -> None:
    (offer,) = quote(
        POLICY, rating="C", amount=ngn(750_000), tenor_months=9, frequency=Frequency.WEEKLY, now=NOW
    ).offers
    stored = offer.to_json()
    assert OfferTerms.from_json(stored) == offer
    stored["schedule"]["installments"][0]["amount"]["value"] -= 1
    with pytest.raises(PricingError, match="disagrees"):
        OfferTerms.from_json(stored)


@settings(max_examples=120, deadline=None)
@given(
    rating=st.sampled_from(sorted(DEFAULT_PLANS)),
    naira=st.integers(min_value=10_000, max_value=60_000_000),
    months=st.integers(min_value=1, max_value=24),
    frequency=st.sampled_from(Frequency),
    method=st.sampled_from(Method),
    max_amount=st.none() | st.integers(min_value=1, max_value=10**10),
    max_monthly=st.none() | st.integers(min_value=1, max_value=10**9),
)
def test_every_offer__fits_plan_and_affordability_and_is_the_chain_schedule(
    rating: str,
    naira: int,
    months: int,
    frequency: Frequency,
    method: Method,
    max_amount: int | None,
    max_monthly: int | None,
) -> None:
    affordability = Affordability(max_amount=max_amount, max_monthly_installment=max_monthly)
    result = quote(
        POLICY,
        rating=rating,
        amount=ngn(naira),
        tenor_months=months,
        frequency=frequency,
        now=NOW,
        affordability=affordability,
        method=method,
    )
    assert bool(result.offers) != bool(result.refusals)
    plan = POLICY.plans[rating]
    cap = affordability.installment_cap(frequency)
    for offer in result.offers:
        assert plan.min_amount <= offer.principal <= min(plan.max_amount, naira * NAIRA)
        assert max_amount is None or offer.principal <= max_amount
        assert cap is None or largest_installment(offer) <= cap
        assert offer.tenor_months <= plan.max_tenor_months
        assert offer.apr_bps == plan.apr_bps
        assert offer.schedule.method is method
        assert_chain_equivalent(offer.schedule)
