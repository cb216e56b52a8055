"""offers:8002 use cases: quoting and the pricing table, over the pure domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from offchain.domain.money import Money
from offchain.domain.offers import Affordability, PricingPolicy, quote
from offchain.platform.problems import Problem
from offchain.services.offers.schemas import Amount, QuoteRequest

UNPRICEABLE = "urn:caas:problem:unpriceable"


def _minor(amount: Amount | None, currency: str, field: str) -> int | None:
    if amount is None:
        return None
    if amount.currency != currency:
        raise Problem(
            422,
            UNPRICEABLE,
            title="Currency mismatch",
            detail=f"{field} is in {amount.currency}, the request in {currency}",
            errors=[{"field": field, "reason": f"expected {currency}"}],
        )
    return amount.value


def quote_offers(*, policy: PricingPolicy, request: QuoteRequest, now: datetime) -> dict[str, Any]:
    currency = request.amount.currency
    limits = request.affordability
    affordability = Affordability(
        max_amount=_minor(limits.max_amount, currency, "affordability.max_amount") if limits else None,
        max_monthly_installment=_minor(
            limits.max_monthly_installment, currency, "affordability.max_monthly_installment"
        )
        if limits
        else None,
    )
    try:
        result = quote(
            policy,
            rating=request.rating,
            amount=Money(request.amount.value, currency),
            tenor_months=request.tenor_months,
            frequency=request.frequency,
            now=now,
            affordability=affordability,
            method=request.method,
        )
    except ValueError as exc:  # PricingError, ScheduleError, CurrencyMismatch, unknown currency
        raise Problem(
            422,
            UNPRICEABLE,
            title="Cannot price this request",
            detail=str(exc),
            errors=[{"field": "body", "reason": str(exc)}],
        ) from exc
    return {
        "offers": [offer.to_json() for offer in result.offers],
        "refusals": [refusal.value for refusal in result.refusals],
    }


def pricing_table(*, policy: PricingPolicy) -> dict[str, Any]:
    return policy.to_json()
