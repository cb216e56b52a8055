"""Pricing by risk rating and the offers a quote yields.

A `PricingPolicy` is data (it loads from and dumps to a JSON-able mapping, so it can live in
configuration and be served as `GET /v1/pricing`): per rating an APR in basis points, an
origination fee in basis points of the principal clamped to a floor and a cap in minor units, the
amounts and tenors the rating may borrow; plus the late-fee cap, the lateness grace and how long an
offer stays open. A rating missing from the table is not lent to.

`quote(...)` turns a request into offers:
- the requested amount and tenor when they fit the plan and the borrower's affordability;
- otherwise the largest affordable amount (a multiple of `amount_step`) at the requested tenor,
  and, where a longer tenor within the plan makes the requested amount affordable, that too.
Affordability is what underwriting measured: a maximum amount and/or a maximum monthly repayment;
a weekly schedule is held to 12/52 of the monthly figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from offchain.domain.money import Money, require_int
from offchain.domain.offers.schedule import (
    BPS,
    SECONDS_PER_DAY,
    Frequency,
    Method,
    Schedule,
    ScheduleError,
    build_schedule,
)


class PricingError(ValueError):
    """A request the policy cannot price at all (not a refusal of the borrower)."""


class Basis(StrEnum):
    """Why an offer has the amount and tenor it has."""

    REQUESTED = "requested"
    AMOUNT_CAPPED = "amount_capped"  # less than asked: plan maximum or affordability
    TENOR_EXTENDED = "tenor_extended"  # the amount asked, over a longer tenor that is affordable


class Refusal(StrEnum):
    """Reason codes when a quote yields no offer."""

    RATING_NOT_LENT_TO = "rating_not_lent_to"
    AMOUNT_BELOW_MINIMUM = "amount_below_minimum"
    TENOR_ABOVE_MAXIMUM = "tenor_above_maximum"
    NOT_AFFORDABLE = "not_affordable"


@dataclass(frozen=True, slots=True)
class RatePlan:
    apr_bps: int
    origination_fee_bps: int
    origination_fee_floor: int  # minor units
    origination_fee_cap: int  # minor units
    min_amount: int
    max_amount: int
    max_tenor_months: int

    def __post_init__(self) -> None:
        for name in (
            "apr_bps",
            "origination_fee_bps",
            "origination_fee_floor",
            "origination_fee_cap",
            "min_amount",
            "max_amount",
            "max_tenor_months",
        ):
            if require_int(getattr(self, name), name) < 0:
                raise PricingError(f"{name} must not be negative")
        if self.origination_fee_floor > self.origination_fee_cap:
            raise PricingError("origination fee floor above its cap")
        if not 0 < self.min_amount <= self.max_amount:
            raise PricingError("need 0 < min_amount <= max_amount")
        if self.max_tenor_months < 1:
            raise PricingError("max_tenor_months must be at least 1")

    def origination_fee(self, principal: int) -> int:
        """`principal * bps`, rounded half up, clamped to [floor, cap]."""
        fee = (principal * self.origination_fee_bps * 2 + BPS) // (2 * BPS)
        return min(max(fee, self.origination_fee_floor), self.origination_fee_cap)


@dataclass(frozen=True, slots=True)
class Affordability:
    """What underwriting found the borrower can carry; None means no limit from that side."""

    max_amount: int | None = None
    max_monthly_installment: int | None = None

    def installment_cap(self, frequency: Frequency) -> int | None:
        if self.max_monthly_installment is None:
            return None
        if frequency is Frequency.MONTHLY:
            return self.max_monthly_installment
        return self.max_monthly_installment * 12 // 52


_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # for pricing checks whose expiry nobody reads

# The default book: illustrative rates for NGN SME working-capital loans. Real rates come from the
# lender's credit committee through configuration (`PricingPolicy.from_json`).
_NAIRA = 100
DEFAULT_PLANS: dict[str, RatePlan] = {
    "A": RatePlan(2400, 100, 1_000 * _NAIRA, 250_000 * _NAIRA, 50_000 * _NAIRA, 50_000_000 * _NAIRA, 24),
    "B": RatePlan(3000, 150, 1_000 * _NAIRA, 250_000 * _NAIRA, 50_000 * _NAIRA, 20_000_000 * _NAIRA, 18),
    "C": RatePlan(3600, 200, 1_500 * _NAIRA, 250_000 * _NAIRA, 50_000 * _NAIRA, 10_000_000 * _NAIRA, 12),
    "D": RatePlan(4800, 250, 2_000 * _NAIRA, 250_000 * _NAIRA, 50_000 * _NAIRA, 2_000_000 * _NAIRA, 6),
    # "E" is deliberately absent: not lent to.
}


@dataclass(frozen=True)
class PricingPolicy:
    version: str = "2025-01"
    currency: str = "NGN"
    plans: Mapping[str, RatePlan] = field(default_factory=lambda: dict(DEFAULT_PLANS))
    # LoanBook caps all late fees ever assessed at `max_late_fees`: this share of the principal,
    # at most `late_fee_cap_max` minor units.
    late_fee_cap_bps: int = 1_000
    late_fee_cap_max: int = 500_000 * _NAIRA
    # Seconds after a due date before the installment is late (LoanBook `grace_period`).
    grace_days: int = 3
    offer_ttl_seconds: int = 7 * SECONDS_PER_DAY
    # Capped amounts are rounded down to this, so an offer reads as a round figure.
    amount_step: int = 1_000 * _NAIRA
    method: Method = Method.DECLINING_BALANCE

    def __post_init__(self) -> None:
        Money.zero(self.currency)  # validates the currency
        for name in ("late_fee_cap_bps", "late_fee_cap_max", "grace_days", "offer_ttl_seconds"):
            if require_int(getattr(self, name), name) < 0:
                raise PricingError(f"{name} must not be negative")
        if require_int(self.amount_step, "amount_step") < 1:
            raise PricingError("amount_step must be positive")
        object.__setattr__(self, "method", Method(self.method))
        for rating, plan in self.plans.items():
            # The hardest loan a plan can make is its smallest amount over its longest tenor: the
            # installments are smallest there against the kobo granularity of the chain's rule.
            for frequency in Frequency:
                for method in Method:
                    try:
                        price(
                            self,
                            rating=rating,
                            principal=plan.min_amount,
                            tenor_months=plan.max_tenor_months,
                            frequency=frequency,
                            now=_ANY_TIME,
                            method=method,
                        )
                    except ScheduleError as exc:
                        raise PricingError(f"plan {rating!r} cannot be scheduled: {exc}") from exc

    @property
    def grace_period(self) -> int:
        return self.grace_days * SECONDS_PER_DAY

    def plan(self, rating: str) -> RatePlan | None:
        return self.plans.get(rating)

    def max_late_fees(self, principal: int) -> int:
        return min(principal * self.late_fee_cap_bps // BPS, self.late_fee_cap_max)

    def expires_at(self, now: datetime) -> datetime:
        if now.tzinfo is None or now.utcoffset() is None:
            raise PricingError("now must be timezone-aware")
        return now + timedelta(seconds=self.offer_ttl_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "currency": self.currency,
            "method": self.method.value,
            "late_fee_cap_bps": self.late_fee_cap_bps,
            "late_fee_cap_max": Money(self.late_fee_cap_max, self.currency).to_json(),
            "grace_days": self.grace_days,
            "offer_ttl_seconds": self.offer_ttl_seconds,
            "amount_step": Money(self.amount_step, self.currency).to_json(),
            "plans": {
                rating: {
                    "apr_bps": plan.apr_bps,
                    "origination_fee_bps": plan.origination_fee_bps,
                    "origination_fee_floor": Money(plan.origination_fee_floor, self.currency).to_json(),
                    "origination_fee_cap": Money(plan.origination_fee_cap, self.currency).to_json(),
                    "min_amount": Money(plan.min_amount, self.currency).to_json(),
                    "max_amount": Money(plan.max_amount, self.currency).to_json(),
                    "max_tenor_months": plan.max_tenor_months,
                }
                for rating, plan in sorted(self.plans.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PricingPolicy:
        """The inverse of `to_json` (amounts as Money objects in the policy's currency)."""
        currency = data["currency"]

        def minor(value: Any) -> int:
            money = Money.from_json(value)
            if money.currency != currency:
                raise PricingError(f"amount in {money.currency} in a {currency} policy")
            return money.value

        plans = {
            str(rating): RatePlan(
                apr_bps=plan["apr_bps"],
                origination_fee_bps=plan["origination_fee_bps"],
                origination_fee_floor=minor(plan["origination_fee_floor"]),
                origination_fee_cap=minor(plan["origination_fee_cap"]),
                min_amount=minor(plan["min_amount"]),
                max_amount=minor(plan["max_amount"]),
                max_tenor_months=plan["max_tenor_months"],
            )
            for rating, plan in data["plans"].items()
        }
        return cls(
            version=str(data["version"]),
            currency=currency,
            plans=plans,
            late_fee_cap_bps=data["late_fee_cap_bps"],
            late_fee_cap_max=minor(data["late_fee_cap_max"]),
            grace_days=data["grace_days"],
            offer_ttl_seconds=data["offer_ttl_seconds"],
            amount_step=minor(data["amount_step"]),
            method=Method(data["method"]),
        )


@dataclass(frozen=True)
class OfferTerms:
    """One priced option: what the lead's application flow persists as an offer."""

    rating: str
    basis: Basis
    tenor_months: int
    apr_bps: int
    origination_fee: int
    schedule: Schedule
    grace_period: int  # seconds
    max_late_fees: int
    expires_at: datetime
    pricing_version: str

    @property
    def currency(self) -> str:
        return self.schedule.currency

    @property
    def principal(self) -> int:
        return self.schedule.principal

    @property
    def total_due(self) -> int:
        return self.schedule.total_due

    def to_json(self) -> dict[str, Any]:
        def money(value: int) -> dict[str, Any]:
            return Money(value, self.currency).to_json()

        return {
            "rating": self.rating,
            "basis": self.basis.value,
            "amount": money(self.principal),
            "tenor_months": self.tenor_months,
            "frequency": self.schedule.frequency.value,
            "method": self.schedule.method.value,
            "apr_bps": self.apr_bps,
            "ear_bps": self.schedule.ear_bps,
            "origination_fee": money(self.origination_fee),
            "total_due": money(self.total_due),
            "installment_count": self.schedule.installment_count,
            "installment_interval": self.schedule.installment_interval,
            "grace_period": self.grace_period,
            "max_late_fees": money(self.max_late_fees),
            "expires_at": self.expires_at.isoformat(),
            "pricing_version": self.pricing_version,
            "schedule": self.schedule.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OfferTerms:
        """Rebuild a stored offer by pricing its terms again; refuses a document that disagrees.

        The schedule is recomputed, not read, so an offer altered in storage (or priced by older
        code that rounded differently) cannot reach an agreement unnoticed.
        """
        principal, fee = Money.from_json(data["amount"]), Money.from_json(data["origination_fee"])
        schedule = build_schedule(
            method=Method(data["method"]),
            principal=principal,
            apr_bps=data["apr_bps"],
            installment_count=data["installment_count"],
            frequency=Frequency(data["frequency"]),
            fees=fee,
        )
        offer = cls(
            rating=data["rating"],
            basis=Basis(data["basis"]),
            tenor_months=data["tenor_months"],
            apr_bps=data["apr_bps"],
            origination_fee=fee.value,
            schedule=schedule,
            grace_period=data["grace_period"],
            max_late_fees=Money.from_json(data["max_late_fees"]).value,
            expires_at=datetime.fromisoformat(data["expires_at"]),
            pricing_version=data["pricing_version"],
        )
        if offer.to_json() != dict(data):
            raise PricingError("the stored offer disagrees with its own terms")
        return offer


@dataclass(frozen=True)
class Quote:
    offers: tuple[OfferTerms, ...]
    refusals: tuple[Refusal, ...] = ()


def price(
    policy: PricingPolicy,
    *,
    rating: str,
    principal: int,
    tenor_months: int,
    frequency: Frequency,
    now: datetime,
    basis: Basis = Basis.REQUESTED,
    method: Method | None = None,
) -> OfferTerms:
    """Price one amount and tenor for a rating (no affordability or plan-limit checks)."""
    plan = policy.plan(rating)
    if plan is None:
        raise PricingError(f"rating {rating!r} is not lent to")
    fee = plan.origination_fee(principal)
    schedule = build_schedule(
        method=method or policy.method,
        principal=Money(principal, policy.currency),
        apr_bps=plan.apr_bps,
        installment_count=Frequency(frequency).installments_for_months(tenor_months),
        frequency=frequency,
        fees=Money(fee, policy.currency),
    )
    return OfferTerms(
        rating=rating,
        basis=basis,
        tenor_months=tenor_months,
        apr_bps=plan.apr_bps,
        origination_fee=fee,
        schedule=schedule,
        grace_period=policy.grace_period,
        max_late_fees=policy.max_late_fees(principal),
        expires_at=policy.expires_at(now),
        pricing_version=policy.version,
    )


def _largest_installment(offer: OfferTerms) -> int:
    return max(offer.schedule.amounts)  # the last, which takes the remainder


def quote(
    policy: PricingPolicy,
    *,
    rating: str,
    amount: Money,
    tenor_months: int,
    frequency: Frequency,
    now: datetime,
    affordability: Affordability | None = None,
    method: Method | None = None,
) -> Quote:
    """The offers for a request; no offer comes with the reasons why."""
    if amount.currency != policy.currency:
        raise PricingError(f"this policy prices {policy.currency}, not {amount.currency}")
    require_int(tenor_months, "tenor_months")
    if tenor_months < 1:
        raise PricingError("tenor_months must be at least 1")
    if amount.value <= 0:
        raise PricingError("amount must be positive")
    frequency = Frequency(frequency)
    affordability = affordability or Affordability()
    plan = policy.plan(rating)
    if plan is None:
        return Quote((), (Refusal.RATING_NOT_LENT_TO,))
    if amount.value < plan.min_amount:
        return Quote((), (Refusal.AMOUNT_BELOW_MINIMUM,))
    if tenor_months > plan.max_tenor_months:
        return Quote((), (Refusal.TENOR_ABOVE_MAXIMUM,))

    amount_cap = plan.max_amount
    if affordability.max_amount is not None:
        amount_cap = min(amount_cap, affordability.max_amount)
    installment_cap = affordability.installment_cap(frequency)

    def offer(principal: int, months: int, basis: Basis) -> OfferTerms:
        return price(
            policy,
            rating=rating,
            principal=principal,
            tenor_months=months,
            frequency=frequency,
            now=now,
            basis=basis,
            method=method,
        )

    def affordable(candidate: OfferTerms) -> bool:
        return installment_cap is None or _largest_installment(candidate) <= installment_cap

    requested = offer(amount.value, tenor_months, Basis.REQUESTED) if amount.value <= amount_cap else None
    if requested is not None and affordable(requested):
        return Quote((requested,))

    offers: list[OfferTerms] = []
    capped = _largest_affordable(
        policy, plan, min(amount.value, amount_cap), tenor_months, installment_cap, offer
    )
    if capped is not None:
        offers.append(capped)
    if requested is not None:  # within the amount cap, only the installment was too high
        for months in range(tenor_months + 1, plan.max_tenor_months + 1):
            longer = offer(amount.value, months, Basis.TENOR_EXTENDED)
            if affordable(longer):
                offers.append(longer)
                break
    if not offers:
        return Quote((), (Refusal.NOT_AFFORDABLE,))
    return Quote(tuple(offers))


def _largest_affordable(
    policy: PricingPolicy,
    plan: RatePlan,
    ceiling: int,
    tenor_months: int,
    installment_cap: int | None,
    offer: Any,
) -> OfferTerms | None:
    """The largest multiple of `amount_step` in [min_amount, ceiling] whose installments fit the cap."""
    step = policy.amount_step

    def fits(principal: int) -> OfferTerms | None:
        try:
            candidate: OfferTerms = offer(principal, tenor_months, Basis.AMOUNT_CAPPED)
        except ScheduleError:
            return None
        if installment_cap is not None and _largest_installment(candidate) > installment_cap:
            return None
        return candidate

    # Installments grow with the principal (fee floors and caps included), so bisect on multiples.
    low, high = -(-plan.min_amount // step), ceiling // step
    if low > high or fits(low * step) is None:
        return None
    while low < high:  # invariant: low * step fits
        middle = (low + high + 1) // 2
        if fits(middle * step) is not None:
            low = middle
        else:
            high = middle - 1
    return fits(low * step)
