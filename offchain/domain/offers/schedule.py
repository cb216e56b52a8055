"""Repayment schedules in integer minor units, shaped exactly as LoanBook enforces them.

The chain (DESIGN §3, `offchain.domain.loan_book.Loan`) knows a schedule only as `installment_count`
installments of `total_due // installment_count`, the last one taking the remainder, due every
`installment_interval` seconds after disbursement. The schedule a borrower is shown must be that
one, so every method here first fixes `total_due` and then *derives* the installment amounts with the
chain's rule (`chain_amounts`); the principal / interest / fee split is bookkeeping inside those
amounts and never changes them.

Frequencies: weekly = 7 days, monthly = 30 days (LoanBook has no calendar, only a fixed interval in
seconds; a 30-day month keeps every due date computable on chain). Interest per period is
APR / periods-per-year (12 or 52), the nominal convention; the effective annual rate is then
computed from the actual cash flows at their actual spacing (365-day year), so it is always at
least the APR for a positive rate.

Methods:
- declining balance (annuity): interest accrues each period on the outstanding principal, exactly
  (as a fraction), and is billed to the kobo rounded *up cumulatively* (the interest billed up to
  any installment is the ceiling of the exact interest accrued up to it). `total_due` is the
  smallest total whose chain-rule installments repay the principal, its accrued interest and the
  fees; whatever the equal-installment rule leaves over is interest billed with the last
  installment. That is bounded by the rule's granularity: one kobo more on installments 1..n-1
  lowers the balance before the last by ((1 + r)^(n-1) - 1) / r kobo (r per period), so the excess
  stays below that (about 1.3 naira at worst for the default plans: 24 % APR over 104 weeks).
  Where the granularity exceeds the last installment itself (extreme rates over long tenors,
  minute principals) no equal-installment schedule exists and `ScheduleError` says so; pricing
  policies are checked for this when they load. Rounding up is deliberate: the disclosed rate is
  never understated, and the borrower pays less than one kobo above exact accrual besides the
  final alignment.
- flat: interest on the original principal for the whole tenor (`principal * APR * n / periods`,
  rounded up once), spread evenly.
Fees (origination) are financed, not deducted: the chain's `record_disbursement` requires the
payout to equal the principal, so fees are part of `total_due` and spread evenly over the
installments (`fee // n` each, the last takes the remainder).

Grace: LoanBook's only grace is `grace_period`, seconds after each due date before an installment
is late (no late fee, no days past due). A repayment holiday (interest-only or capitalised) would
need unequal installments or a delayed first due date, which the contract cannot express, so it is
deliberately not offered; see `offchain.domain.offers.pricing.PricingPolicy.grace_days`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from enum import StrEnum
from typing import Any

from offchain.domain.loan_book import MAX_AMOUNT, SECONDS_PER_DAY
from offchain.domain.money import CurrencyMismatch, Money, require_int

BPS = 10_000
YEAR_SECONDS = 365 * SECONDS_PER_DAY
MAX_INSTALLMENTS = 2**16 - 1  # Terms.installment_count is uint16
MAX_APR_BPS = 1_000_000  # 10,000 %: a typo guard, not a pricing limit


class ScheduleError(ValueError):
    """The inputs cannot make a schedule the chain would accept."""


class Frequency(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    @property
    def interval_seconds(self) -> int:
        return {Frequency.WEEKLY: 7, Frequency.MONTHLY: 30}[self] * SECONDS_PER_DAY

    @property
    def periods_per_year(self) -> int:
        return {Frequency.WEEKLY: 52, Frequency.MONTHLY: 12}[self]

    def installments_for_months(self, months: int) -> int:
        """Installments covering a tenor of `months`: one a month, or 52/12 a month rounded half up."""
        if months < 1:
            raise ScheduleError("tenor must be at least one month")
        if self is Frequency.MONTHLY:
            return months
        return (months * 52 * 2 + 12) // 24


class Method(StrEnum):
    DECLINING_BALANCE = "declining_balance"
    FLAT = "flat"


@dataclass(frozen=True, slots=True)
class Installment:
    index: int  # 1-based, as LoanBook counts
    due_offset: int  # seconds after disbursement: index * installment_interval
    amount: int
    principal: int
    interest: int
    fee: int

    def to_json(self, currency: str) -> dict[str, Any]:
        return {
            "index": self.index,
            "due_offset": self.due_offset,
            "amount": Money(self.amount, currency).to_json(),
            "principal": Money(self.principal, currency).to_json(),
            "interest": Money(self.interest, currency).to_json(),
            "fee": Money(self.fee, currency).to_json(),
        }


@dataclass(frozen=True, slots=True)
class Schedule:
    method: Method
    frequency: Frequency
    currency: str
    apr_bps: int
    principal: int
    interest: int
    fees: int
    installments: tuple[Installment, ...]
    ear: Decimal  # effective annual rate of the actual cash flows, as a fraction (0.3449 = 34.49 %)

    @property
    def total_due(self) -> int:
        return self.principal + self.interest + self.fees

    @property
    def installment_count(self) -> int:
        return len(self.installments)

    @property
    def installment_interval(self) -> int:
        return self.frequency.interval_seconds

    @property
    def amounts(self) -> list[int]:
        return [item.amount for item in self.installments]

    @property
    def ear_bps(self) -> int:
        return int((self.ear * BPS).to_integral_value(rounding=ROUND_HALF_UP))

    def to_json(self) -> dict[str, Any]:
        def money(value: int) -> dict[str, Any]:
            return Money(value, self.currency).to_json()

        return {
            "method": self.method.value,
            "frequency": self.frequency.value,
            "installment_count": self.installment_count,
            "installment_interval": self.installment_interval,
            "apr_bps": self.apr_bps,
            "ear_bps": self.ear_bps,
            # a string: the exact figure without a float ever touching it
            "ear": format(self.ear, "f"),
            "principal": money(self.principal),
            "interest": money(self.interest),
            "fees": money(self.fees),
            "total_due": money(self.total_due),
            "installments": [item.to_json(self.currency) for item in self.installments],
        }


def chain_amounts(total_due: int, installment_count: int) -> list[int]:
    """LoanBook's installments: `total_due // n` each, the last one takes the remainder."""
    base = total_due // installment_count
    return [base] * (installment_count - 1) + [total_due - base * (installment_count - 1)]


def build_schedule(
    *,
    method: Method,
    principal: Money,
    apr_bps: int,
    installment_count: int,
    frequency: Frequency,
    fees: Money | None = None,
) -> Schedule:
    fees = fees if fees is not None else Money.zero(principal.currency)
    if fees.currency != principal.currency:
        raise CurrencyMismatch(f"fees in {fees.currency}, principal in {principal.currency}")
    p, f = principal.value, fees.value
    n = require_int(installment_count, "installment_count")
    require_int(apr_bps, "apr_bps")
    if p <= 0:
        raise ScheduleError("principal must be positive")
    if f < 0:
        raise ScheduleError("fees must not be negative")
    if not 1 <= n <= MAX_INSTALLMENTS:
        raise ScheduleError(f"installment_count must be within 1..{MAX_INSTALLMENTS}")
    if not 0 <= apr_bps <= MAX_APR_BPS:
        raise ScheduleError(f"apr_bps must be within 0..{MAX_APR_BPS}")

    frequency, method = Frequency(frequency), Method(method)
    if method is Method.DECLINING_BALANCE:
        total_due, principal_parts, interest_parts = _declining_balance(p, f, apr_bps, n, frequency)
    else:
        total_due, principal_parts, interest_parts = _flat(p, f, apr_bps, n, frequency)
    if total_due > MAX_AMOUNT:
        raise ScheduleError("total_due exceeds what LoanBook stores")
    if total_due < n:
        raise ScheduleError("installments below one minor unit")

    amounts = chain_amounts(total_due, n)
    fee_parts = chain_amounts(f, n)
    interval = frequency.interval_seconds
    installments = tuple(
        Installment(
            index=k,
            due_offset=k * interval,
            amount=amounts[k - 1],
            principal=principal_parts[k - 1],
            interest=interest_parts[k - 1],
            fee=fee_parts[k - 1],
        )
        for k in range(1, n + 1)
    )
    for item in installments:
        if min(item.principal, item.interest, item.fee) < 0:
            # only reachable for loans of a few kobo per installment at extreme rates
            raise ScheduleError(
                "installments too small for this rate and tenor: they would not cover the interest"
            )
        assert item.amount == item.principal + item.interest + item.fee, "dev: split must add up"
    interest = total_due - p - f
    assert sum(principal_parts) == p and sum(interest_parts) == interest, "dev: parts must add up"
    return Schedule(
        method=method,
        frequency=frequency,
        currency=principal.currency,
        apr_bps=apr_bps,
        principal=p,
        interest=interest,
        fees=f,
        installments=installments,
        ear=effective_annual_rate(p, amounts, interval),
    )


def _declining_balance(
    p: int, f: int, apr_bps: int, n: int, frequency: Frequency
) -> tuple[int, list[int], list[int]]:
    denominator = BPS * frequency.periods_per_year  # per-period rate = apr_bps / denominator
    fee_parts = chain_amounts(f, n)

    def run(base: int) -> tuple[int, list[int], list[int]]:
        """Amortise with `base` as every installment but the last.

        Returns the interest billed through installment n (ceiling of the exact accrual) and the
        principal and interest parts of installments 1..n-1 (the last is settled by the caller).
        """
        balance, accrued_num, billed = p, 0, 0
        principal_parts, interest_parts = [], []
        for k in range(1, n + 1):
            accrued_num += balance * apr_bps
            interest = -(-accrued_num // denominator) - billed
            billed += interest
            if k < n:
                principal = base - fee_parts[k - 1] - interest
                balance -= principal
                principal_parts.append(principal)
                interest_parts.append(interest)
        return billed, principal_parts, interest_parts

    # A larger base repays faster, so the interest billed never grows with it and
    # slack(base) = (the most the chain rule lets this base collect) - (what is owed) strictly increases.
    def slack(base: int) -> int:
        return n * base + n - 1 - (p + f + run(base)[0])

    low, high = -1, max(1, (p + f) // n)
    while slack(high) < 0:
        low, high = high, high * 2
    while high - low > 1:  # invariant: slack(low) < 0 <= slack(high), or low is -1
        middle = (low + high) // 2
        if slack(middle) >= 0:
            high = middle
        else:
            low = middle
    base = high
    billed, principal_parts, interest_parts = run(base)
    total_due = max(n * base, p + f + billed)
    # The last installment takes the remainder: what is left of the principal, its fee part, and
    # the rest of the interest, including any kobo the equal-installment rule could not place.
    principal_parts.append(p - sum(principal_parts))
    interest_parts.append(total_due - p - f - sum(interest_parts))
    return total_due, principal_parts, interest_parts


def _flat(p: int, f: int, apr_bps: int, n: int, frequency: Frequency) -> tuple[int, list[int], list[int]]:
    interest = -(-p * apr_bps * n // (BPS * frequency.periods_per_year))
    total_due = p + interest + f
    amounts, fee_parts = chain_amounts(total_due, n), chain_amounts(f, n)
    interest_parts = chain_amounts(interest, n)
    principal_parts = [amounts[k] - fee_parts[k] - interest_parts[k] for k in range(n - 1)]
    principal_parts.append(p - sum(principal_parts))
    return total_due, principal_parts, interest_parts


def effective_annual_rate(advance: int, amounts: Sequence[int], interval_seconds: int) -> Decimal:
    """Annualised internal rate of return of the borrower's cash flows.

    The borrower receives `advance` (the principal, less any fee deducted up front) at time 0 and
    pays `amounts[k-1]` at `k * interval_seconds`. The per-period IRR is found by bisection in
    40-digit decimal arithmetic and compounded over a 365-day year:
    EAR = (1 + irr) ** (365 days / interval) - 1.
    """
    require_int(advance, "advance")
    if advance <= 0 or not amounts or interval_seconds <= 0:
        raise ScheduleError("need a positive advance, at least one payment and a positive interval")
    if any(require_int(amount, "amount") < 0 for amount in amounts):
        raise ScheduleError("payments must not be negative")
    if sum(amounts) < advance:
        raise ScheduleError("payments below the advance: negative rates are not disclosed")

    with localcontext(Context(prec=40)):
        target = Decimal(advance)
        payments = [Decimal(amount) for amount in reversed(amounts)]

        def present_value(rate: Decimal) -> Decimal:
            discount = 1 / (1 + rate)
            total = Decimal(0)
            for payment in payments:  # Horner, from the last payment back
                total = (total + payment) * discount
            return total

        low, high = Decimal(0), Decimal(1)
        while present_value(high) > target:
            low, high = high, high * 2
        epsilon = Decimal("1e-30")
        while high - low > epsilon:  # present_value falls as the rate rises
            middle = (low + high) / 2
            if present_value(middle) > target:
                low = middle
            else:
                high = middle
        ear = (1 + low) ** (Decimal(YEAR_SECONDS) / Decimal(interval_seconds)) - 1
        return ear.quantize(Decimal("1e-12"))
