"""Bank-statement analysis: what a borrower's transactions say about what they can repay.

Input is a list of transactions `{date, amount, balance?, description?}` with `amount` in signed
integer minor units (inflow positive) and `balance` the account balance after the transaction.
Everything here is integer minor units; ratios are basis points (`_bps`, 10_000 = 1.0).

Definitions (what an analyst reading the numbers can rely on):
- The period is every calendar month from the first transaction's month to the last one's,
  inclusive; a month with no transactions counts as a month of zero. Averages divide period
  totals by that month count, rounding down (towards the lower, more prudent figure).
- Income inflows are credits other than reversals, refunds, returned items and loan
  disbursements: money that bounced back or was borrowed is not income.
- Inflow volatility is the coefficient of variation of monthly income inflows (population
  standard deviation over mean).
- NSF events are transactions whose description says the payment failed for lack of funds
  (NSF, insufficient funds, returned, bounced, dishonoured, unpaid). Overdraft days are days whose
  closing balance is negative, carrying the last known balance over days without transactions.
- Existing debt service is the monthly cost of recurring loan repayments: debits whose
  description names a loan/repayment/installment or a known lender, grouped by their description
  with digits stripped, recurring (at least two payments in two different months, or three
  payments), and still running (one paid within `ACTIVE_DEBT_WINDOW_DAYS` of the period end).
- Net monthly cash flow is average income inflow minus average outflow (all debits, debt service
  included); operating cash flow adds existing debt service back: the cash available to service debt.
- DSCR for a proposed installment is operating cash flow / (existing debt service + installment).

Affordability: the largest new monthly installment is the smaller of a share of the net monthly
cash flow and what keeps DSCR at or above a floor; the largest principal for a tenor and APR is the
present value of that installment as an equal-installment (declining balance) monthly loan,
computed exactly with rationals and rounded down to the minor unit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import Any

BPS = 10_000
MAX_TRANSACTIONS = 20_000
MAX_DESCRIPTION = 500
ACTIVE_DEBT_WINDOW_DAYS = 45

_NSF = re.compile(
    r"\bnsf\b|insufficient\s+funds?|\breturned\b|\bbounced?\b|\bdishono(?:u)?red\b|\bunpaid\b", re.IGNORECASE
)
_NOT_INCOME = re.compile(
    r"\brevers(?:al|ed)\b|\brefund(?:ed)?\b|\breturned\b|\bbounced?\b|\bloan\s+disburs|\bdisbursement\b",
    re.IGNORECASE,
)
# Words and Nigerian digital lenders that name a loan repayment on a statement. A name added here
# changes analyses, so it is part of what a model/policy review looks at.
_LOAN = re.compile(
    r"\bloan\b|\brepay(?:ment)?s?\b|\binstal(?:l)?ments?\b|\bemi\b|\bcredit\s+facility\b|\bmicrofinance\b"
    r"|\bcarbon\b|\bfairmoney\b|\brenmoney\b|\bpalmcredit\b|\baella\b|\blidya\b|\bmigo\b|\bquickcheck\b",
    re.IGNORECASE,
)
_AMOUNT = re.compile(r"[+-]?\d+")
_KEY_NOISE = re.compile(r"[^a-z]+")


class StatementError(ValueError):
    """An upload that is not a valid statement; `errors` are `{"field", "reason"}` for problem+json."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Transaction:
    date: date
    amount: int  # signed minor units, inflow positive
    balance: int | None = None  # balance after this transaction, minor units
    description: str = ""


# -- parsing -----------------------------------------------------------------------------------


def _int_field(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer number of minor units, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _AMOUNT.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, float | str):
        raise ValueError("must be an integer number of minor units (kobo); decimals are not accepted")
    raise ValueError(f"must be an integer number of minor units, got {type(value).__name__}")


def _date_field(value: Any) -> date:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date string, e.g. 2025-01-31")
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        raise ValueError("must be an ISO 8601 date, e.g. 2025-01-31") from None


def parse_transactions(records: Any, *, field: str = "transactions") -> list[Transaction]:
    """Validate raw records (from JSON or CSV rows) into transactions, reporting every bad field."""
    if not isinstance(records, Sequence) or isinstance(records, str | bytes):
        raise StatementError([{"field": field, "reason": "must be a list of transactions"}])
    if not records:
        raise StatementError([{"field": field, "reason": "must contain at least one transaction"}])
    if len(records) > MAX_TRANSACTIONS:
        raise StatementError([{"field": field, "reason": f"at most {MAX_TRANSACTIONS} transactions"}])
    errors: list[dict[str, str]] = []
    parsed: list[Transaction] = []
    for index, record in enumerate(records):
        where = f"{field}[{index}]"
        if not isinstance(record, Mapping):
            errors.append({"field": where, "reason": "must be an object"})
            continue
        before = len(errors)
        values: dict[str, Any] = {}
        for name, parse, required in (
            ("date", _date_field, True),
            ("amount", _int_field, True),
            ("balance", _int_field, False),
        ):
            raw = record.get(name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if required:
                    errors.append({"field": f"{where}.{name}", "reason": "is required"})
                values[name] = None
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                errors.append({"field": f"{where}.{name}", "reason": str(exc)})
        description = record.get("description")
        if description is None:
            description = ""
        elif not isinstance(description, str):
            errors.append({"field": f"{where}.description", "reason": "must be a string"})
        elif len(description) > MAX_DESCRIPTION:
            errors.append(
                {"field": f"{where}.description", "reason": f"at most {MAX_DESCRIPTION} characters"}
            )
        if len(errors) == before:
            parsed.append(Transaction(values["date"], values["amount"], values["balance"], description))
    if errors:
        raise StatementError(errors)
    return parsed


# -- analysis ----------------------------------------------------------------------------------


def _month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def _debt_key(description: str) -> str:
    return " ".join(_KEY_NOISE.sub(" ", description.lower()).split())


def _cv_bps(values: Sequence[int]) -> int | None:
    """Coefficient of variation in bps, exact up to the final square root (Decimal, 28 digits)."""
    total = sum(values)
    if total <= 0:
        return None
    n = len(values)
    mean = Fraction(total, n)
    variance = sum(((Fraction(v) - mean) ** 2 for v in values), Fraction(0)) / n
    with localcontext() as ctx:
        ctx.prec = 28
        sd = (Decimal(variance.numerator) / Decimal(variance.denominator)).sqrt()
        cv = sd / (Decimal(mean.numerator) / Decimal(mean.denominator))
        return int((cv * BPS).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class DebtStream:
    """One recurring loan repayment found on the statement."""

    key: str
    payments: int
    total: int
    monthly_amount: int
    first_paid: date
    last_paid: date
    active: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.key,
            "payments": self.payments,
            "total": self.total,
            "monthly_amount": self.monthly_amount,
            "first_paid": self.first_paid.isoformat(),
            "last_paid": self.last_paid.isoformat(),
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class StatementAnalysis:
    period_start: date
    period_end: date
    months: int
    transaction_count: int
    monthly_inflows: tuple[int, ...]  # income inflow per calendar month of the period
    total_inflow: int
    total_outflow: int  # positive number: the sum of all debits
    average_monthly_inflow: int
    average_monthly_outflow: int
    inflow_volatility_bps: int | None  # None when there was no income at all
    nsf_count: int
    returned_debt_payments: int  # NSF events on loan repayments: delinquency with other lenders
    overdraft_days: int
    average_daily_balance: int | None  # None when the statement carries no balances
    minimum_balance: int | None
    debt_streams: tuple[DebtStream, ...] = field(default=())

    @property
    def monthly_debt_service(self) -> int:
        return sum(stream.monthly_amount for stream in self.debt_streams if stream.active)

    @property
    def net_monthly_cash_flow(self) -> int:
        return (self.total_inflow - self.total_outflow) // self.months

    @property
    def operating_cash_flow(self) -> int:
        return self.net_monthly_cash_flow + self.monthly_debt_service

    def dscr_bps(self, proposed_installment: int) -> int | None:
        """DSCR with a new monthly installment; None when there is no debt service at all."""
        service = self.monthly_debt_service + proposed_installment
        if service <= 0:
            return None
        return self.operating_cash_flow * BPS // service

    def max_installment(self, *, share_bps: int, min_dscr_bps: int) -> int:
        """The largest new monthly installment the cash flow carries (0 if none)."""
        by_share = max(0, self.net_monthly_cash_flow) * share_bps // BPS
        by_dscr = self.operating_cash_flow * BPS // min_dscr_bps - self.monthly_debt_service
        return max(0, min(by_share, by_dscr))

    def to_dict(self) -> dict[str, Any]:
        return {
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "months": self.months,
            "transaction_count": self.transaction_count,
            "monthly_inflows": list(self.monthly_inflows),
            "total_inflow": self.total_inflow,
            "total_outflow": self.total_outflow,
            "average_monthly_inflow": self.average_monthly_inflow,
            "average_monthly_outflow": self.average_monthly_outflow,
            "inflow_volatility_bps": self.inflow_volatility_bps,
            "nsf_count": self.nsf_count,
            "returned_debt_payments": self.returned_debt_payments,
            "overdraft_days": self.overdraft_days,
            "average_daily_balance": self.average_daily_balance,
            "minimum_balance": self.minimum_balance,
            "monthly_debt_service": self.monthly_debt_service,
            "net_monthly_cash_flow": self.net_monthly_cash_flow,
            "operating_cash_flow": self.operating_cash_flow,
            "debt_streams": [stream.to_dict() for stream in self.debt_streams],
        }


def _debt_streams(transactions: Sequence[Transaction], period_end: date) -> tuple[DebtStream, ...]:
    groups: dict[str, list[Transaction]] = defaultdict(list)
    for tx in transactions:
        if tx.amount < 0 and _LOAN.search(tx.description) and not _NSF.search(tx.description):
            groups[_debt_key(tx.description)].append(tx)
    streams = []
    for key, payments in sorted(groups.items()):
        months = {_month_index(tx.date) for tx in payments}
        if len(payments) < 3 and len(months) < 2:
            continue  # a one-off, not a recurring obligation
        first = min(tx.date for tx in payments)
        last = max(tx.date for tx in payments)
        total = -sum(tx.amount for tx in payments)
        span = _month_index(last) - _month_index(first) + 1
        streams.append(
            DebtStream(
                key=key,
                payments=len(payments),
                total=total,
                monthly_amount=total // span,
                first_paid=first,
                last_paid=last,
                active=(period_end - last) <= timedelta(days=ACTIVE_DEBT_WINDOW_DAYS),
            )
        )
    return tuple(streams)


def _daily_balances(transactions: Sequence[Transaction]) -> list[int]:
    """Closing balance of every day from the first balance to the last, carried forward."""
    closing: dict[date, int] = {}
    for tx in transactions:  # input order within a day: the last one closes the day
        if tx.balance is not None:
            closing[tx.date] = tx.balance
    if not closing:
        return []
    days = sorted(closing)
    balances = []
    current = closing[days[0]]
    day = days[0]
    while day <= days[-1]:
        current = closing.get(day, current)
        balances.append(current)
        day += timedelta(days=1)
    return balances


def analyze(transactions: Sequence[Transaction]) -> StatementAnalysis:
    if not transactions:
        raise StatementError([{"field": "transactions", "reason": "must contain at least one transaction"}])
    # Stable sort keeps the uploader's order within a day (it decides the day's closing balance).
    ordered = sorted(transactions, key=lambda tx: tx.date)
    start, end = ordered[0].date, ordered[-1].date
    first_month = _month_index(start)
    months = _month_index(end) - first_month + 1
    monthly = [0] * months
    outflow = 0
    nsf = returned_debt = 0
    for tx in ordered:
        failed = bool(_NSF.search(tx.description))
        if failed:
            nsf += 1
            if _LOAN.search(tx.description):
                returned_debt += 1
        if tx.amount > 0 and not _NOT_INCOME.search(tx.description):
            monthly[_month_index(tx.date) - first_month] += tx.amount
        elif tx.amount < 0:
            outflow -= tx.amount
    inflow = sum(monthly)
    balances = _daily_balances(ordered)
    return StatementAnalysis(
        period_start=start,
        period_end=end,
        months=months,
        transaction_count=len(ordered),
        monthly_inflows=tuple(monthly),
        total_inflow=inflow,
        total_outflow=outflow,
        average_monthly_inflow=inflow // months,
        average_monthly_outflow=-(-outflow // months),  # rounded up: the prudent side for costs
        inflow_volatility_bps=_cv_bps(monthly),
        nsf_count=nsf,
        returned_debt_payments=returned_debt,
        overdraft_days=sum(1 for b in balances if b < 0),
        average_daily_balance=sum(balances) // len(balances) if balances else None,
        minimum_balance=min(balances) if balances else None,
        debt_streams=_debt_streams(ordered, end),
    )


# -- loan maths for affordability ----------------------------------------------------------------


def _monthly_rate(apr_bps: int) -> Fraction:
    if apr_bps < 0:
        raise ValueError("apr_bps must not be negative")
    return Fraction(apr_bps, BPS * 12)


def annuity_installment(principal: int, months: int, apr_bps: int) -> int:
    """Monthly installment of an equal-installment loan, rounded up to the minor unit."""
    if months <= 0:
        raise ValueError("months must be positive")
    rate = _monthly_rate(apr_bps)
    if rate == 0:
        exact = Fraction(principal, months)
    else:
        growth = (1 + rate) ** months
        exact = principal * rate * growth / (growth - 1)
    return -(-exact.numerator // exact.denominator)


def max_principal(installment: int, months: int, apr_bps: int) -> int:
    """Largest principal whose equal monthly installment is at most `installment` (rounded down)."""
    if months <= 0:
        raise ValueError("months must be positive")
    if installment <= 0:
        return 0
    rate = _monthly_rate(apr_bps)
    if rate == 0:
        return installment * months
    growth = (1 + rate) ** months
    exact = installment * (growth - 1) / (rate * growth)
    return exact.numerator // exact.denominator
