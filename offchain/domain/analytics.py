"""Portfolio analytics: pure computations over applications and the loan projection.

Money figures are per currency (never summed across currencies), integers in minor units.
Portfolio-at-risk is weighted by outstanding balance, not by loan count: PAR30 is the share of
the balance in repayment whose loans are more than 30 days past due. Days past due follow the
contract's rule (offchain.domain.loan_book), so these figures agree with the chain.

Vintage curves: loans grouped by the month they were disbursed; for each month on book m, the
share of the cohort's disbursed principal whose loans were more than 30 days past due at
disbursement + m months, replayed from the loan's repayment events.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from offchain.domain.loan_book import SECONDS_PER_DAY, Loan, LoanState

MONTH_S = 30 * SECONDS_PER_DAY
PAR_DAYS = (30, 60, 90)
IN_REPAYMENT = (LoanState.ACTIVE, LoanState.DEFAULTED)
APPROVED = ("offered", "accepted")
DECLINED = ("declined",)


@dataclass(frozen=True)
class ApplicationFact:
    status: str
    created_at: int  # unix seconds
    decided_at: int | None = None


@dataclass(frozen=True)
class Movement:
    """A change to a loan's repayment state at `at`: repayments (+), reversals (-), fees."""

    at: int
    scheduled: int = 0
    fee_paid: int = 0
    fee_assessed: int = 0


@dataclass(frozen=True)
class LoanFact:
    currency: str
    state: LoanState
    principal: int
    total_due: int
    installment_count: int
    installment_interval: int
    grace_period: int
    scheduled_repaid: int
    late_fees_assessed: int
    late_fees_paid: int
    disbursed_at: int | None
    ever_defaulted: bool = False
    accepted_at: int | None = None  # when the partner accepted the offer
    movements: Sequence[Movement] = field(default_factory=tuple)

    @property
    def outstanding(self) -> int:
        return self.total_due + self.late_fees_assessed - self.scheduled_repaid - self.late_fees_paid

    def model(self, at: int | None = None) -> Loan:
        """The contract's model of this loan, as it stood at `at` (now when None)."""
        loan = Loan(
            currency=0,
            principal=self.principal,
            total_due=self.total_due,
            installment_count=self.installment_count,
            installment_interval=self.installment_interval,
            grace_period=self.grace_period,
            max_late_fees=0,
            state=self.state,
            disbursed_at=self.disbursed_at or 0,
            scheduled_repaid=self.scheduled_repaid,
            late_fees_assessed=self.late_fees_assessed,
            late_fees_paid=self.late_fees_paid,
        )
        if at is not None:
            moved = [m for m in self.movements if m.at <= at]
            loan.scheduled_repaid = sum(m.scheduled for m in moved)
            loan.late_fees_paid = sum(m.fee_paid for m in moved)
            loan.late_fees_assessed = sum(m.fee_assessed for m in moved)
            # states are today's; history only changes what was paid by then
            loan.state = (
                LoanState.ACTIVE if self.state in (LoanState.REPAID, LoanState.WRITTEN_OFF) else self.state
            )
            if loan.scheduled_repaid >= self.total_due and loan.unpaid_late_fees == 0:
                loan.state = LoanState.REPAID
        return loan

    def days_past_due(self, at: int) -> int:
        if self.disbursed_at is None or self.installment_count <= 0 or self.installment_interval <= 0:
            return 0
        if self.state not in IN_REPAYMENT:
            return 0
        return self.model().days_past_due(at)


def ratio(part: int | float, whole: int | float) -> float | None:
    return None if not whole else round(part / whole, 6)


def _durations(values: Iterable[int]) -> dict[str, float | int | None]:
    items = sorted(values)
    if not items:
        return {"count": 0, "mean": None, "median": None, "p90": None}
    return {
        "count": len(items),
        "mean": round(statistics.fmean(items), 1),
        "median": statistics.median(items),
        "p90": items[min(len(items) - 1, int(0.9 * len(items)))],
    }


def application_figures(applications: Sequence[ApplicationFact]) -> dict[str, Any]:
    approved = sum(1 for a in applications if a.status in APPROVED)
    declined = sum(1 for a in applications if a.status in DECLINED)
    return {
        "count": len(applications),
        "approved": approved,
        "declined": declined,
        "approval_rate": ratio(approved, approved + declined),
        "time_to_decision_s": _durations(
            a.decided_at - a.created_at for a in applications if a.decided_at is not None
        ),
    }


def par(loans: Sequence[LoanFact], at: int) -> dict[str, Any]:
    """PAR30/60/90 weighted by outstanding balance, over the loans in repayment."""
    book = [(loan.outstanding, loan.days_past_due(at)) for loan in loans if loan.state in IN_REPAYMENT]
    balance = sum(outstanding for outstanding, _ in book)
    out: dict[str, Any] = {"portfolio_balance": balance}
    for days in PAR_DAYS:
        at_risk = sum(outstanding for outstanding, dpd in book if dpd > days)
        out[f"par{days}_balance"] = at_risk
        out[f"par{days}"] = ratio(at_risk, balance)
    return out


def collection_rate(loans: Sequence[LoanFact], at: int) -> float | None:
    """Collected of what fell due by `at` (per loan, prepayments not counted beyond what was due)."""
    due = collected = 0
    for loan in loans:
        if loan.disbursed_at is None or loan.installment_interval <= 0:
            continue
        owed = loan.model().scheduled_due_by(at) + loan.late_fees_assessed
        due += owed
        collected += min(loan.scheduled_repaid + loan.late_fees_paid, owed)
    return ratio(collected, due)


def currency_figures(loans: Sequence[LoanFact], at: int) -> dict[str, Any]:
    disbursed = [loan for loan in loans if loan.disbursed_at is not None]
    volume = sum(loan.principal for loan in disbursed)
    defaulted = [loan for loan in disbursed if loan.ever_defaulted]
    written_off = [loan for loan in disbursed if loan.state == LoanState.WRITTEN_OFF]
    outstanding = sum(loan.outstanding for loan in disbursed if loan.state in IN_REPAYMENT)
    return {
        "disbursed_count": len(disbursed),
        "disbursed_volume": volume,
        "outstanding": outstanding,
        **par(disbursed, at),
        "default_rate": ratio(sum(loan.principal for loan in defaulted), volume),
        "default_count": len(defaulted),
        "write_off_rate": ratio(sum(loan.outstanding for loan in written_off), volume),
        "written_off_balance": sum(loan.outstanding for loan in written_off),
        "collection_rate": collection_rate(disbursed, at),
        "time_to_disburse_s": _durations(
            loan.disbursed_at - loan.accepted_at
            for loan in disbursed
            if loan.accepted_at is not None and loan.disbursed_at is not None
        ),
    }


def vintages(loans: Sequence[LoanFact], at: int, *, threshold_days: int = 30) -> list[dict[str, Any]]:
    """Per disbursement month: share of disbursed principal > `threshold_days` past due at each
    month on book (up to `at`)."""
    cohorts: dict[tuple[str, str], list[LoanFact]] = defaultdict(list)
    for loan in loans:
        if loan.disbursed_at is not None:
            month = datetime.fromtimestamp(loan.disbursed_at, UTC).strftime("%Y-%m")
            cohorts[(loan.currency, month)].append(loan)
    curves = []
    for (currency, month), members in sorted(cohorts.items()):
        volume = sum(loan.principal for loan in members)
        first = min(loan.disbursed_at or 0 for loan in members)
        points = []
        for m in range(0, max(0, (at - first) // MONTH_S) + 1):
            at_risk = 0
            for loan in members:
                moment = (loan.disbursed_at or 0) + m * MONTH_S
                if moment > at:
                    continue
                model = loan.model(moment)
                if model.days_past_due(moment) > threshold_days:
                    at_risk += loan.principal
            points.append({"month_on_book": m, "share": ratio(at_risk, volume)})
        curves.append(
            {
                "cohort": month,
                "currency": currency,
                "loans": len(members),
                "disbursed_volume": volume,
                "threshold_days": threshold_days,
                "points": points,
            }
        )
    return curves


def portfolio(
    applications: Sequence[ApplicationFact], loans: Sequence[LoanFact], *, at: int
) -> dict[str, Any]:
    by_currency: dict[str, list[LoanFact]] = defaultdict(list)
    for loan in loans:
        by_currency[loan.currency].append(loan)
    return {
        "as_of": datetime.fromtimestamp(at, UTC).isoformat(),
        "applications": application_figures(applications),
        "currencies": {code: currency_figures(items, at) for code, items in sorted(by_currency.items())},
        "vintages": vintages(loans, at),
    }


# -- renderings ----------------------------------------------------------------------------------


def to_csv(figures: dict[str, Any], *, scope: str) -> str:
    """One row per figure: scope, currency, metric, value (vintage points as metric vintage:...)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scope", "currency", "metric", "value"])
    apps = figures["applications"]
    for name in ("count", "approved", "declined", "approval_rate"):
        writer.writerow([scope, "", f"applications_{name}", apps[name]])
    for name, value in apps["time_to_decision_s"].items():
        writer.writerow([scope, "", f"time_to_decision_s_{name}", value])
    for currency, values in figures["currencies"].items():
        for name, value in values.items():
            if isinstance(value, dict):
                for sub, item in value.items():
                    writer.writerow([scope, currency, f"{name}_{sub}", item])
            else:
                writer.writerow([scope, currency, name, value])
    for curve in figures["vintages"]:
        for point in curve["points"]:
            writer.writerow(
                [
                    scope,
                    curve["currency"],
                    f"vintage:{curve['cohort']}:mob{point['month_on_book']}",
                    point["share"],
                ]
            )
    return buffer.getvalue()


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{width}" height="{height}" fill="white"/>'
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def par_svg(figures: dict[str, Any]) -> str:
    """Bars of PAR30/60/90 (share of balance) per currency."""
    width, height, left, bottom, top = 480, 300, 50, 260, 40
    body = [f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="black"/>']
    for tick in (0, 25, 50, 75, 100):
        y = bottom - (bottom - top) * tick / 100
        body.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick}%</text>')
        body.append(f'<line x1="{left}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#ddd"/>')
    slot = 0
    bar = 40
    for c, (currency, values) in enumerate(figures["currencies"].items()):
        for days in PAR_DAYS:
            share = values.get(f"par{days}") or 0.0
            x = left + 20 + slot * (bar + 15)
            h = (bottom - top) * share
            body.append(
                f'<rect class="par" data-metric="par{days}" data-currency="{escape(currency)}" '
                f'data-value="{share}" x="{x}" y="{bottom - h:.1f}" width="{bar}" height="{h:.1f}" '
                f'fill="{_COLOURS[c % len(_COLOURS)]}"/>'
            )
            body.append(f'<text x="{x + bar / 2}" y="{bottom + 14}" text-anchor="middle">PAR{days}</text>')
            body.append(
                f'<text x="{x + bar / 2}" y="{bottom - h - 4:.1f}" text-anchor="middle">{share:.1%}</text>'
            )
            slot += 1
        body.append(
            f'<text x="{left + 20 + (slot - 2) * (bar + 15)}" y="{bottom + 30}">{escape(currency)}</text>'
        )
    return _svg(
        max(width, left + 40 + slot * (bar + 15)), height + 20, "Portfolio at risk (by balance)", body
    )


def vintage_svg(figures: dict[str, Any]) -> str:
    """One line per cohort: share of principal > 30 days past due by month on book."""
    curves = figures["vintages"]
    width, height, left, bottom, top, right = 520, 320, 50, 270, 40, 130
    months = max((len(c["points"]) for c in curves), default=1)
    span = max(months - 1, 1)
    plot_w = width - left - right
    body = [f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="black"/>']
    for tick in (0, 25, 50, 75, 100):
        y = bottom - (bottom - top) * tick / 100
        body.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick}%</text>')
    for m in range(months):
        body.append(
            f'<text x="{left + plot_w * m / span:.1f}" y="{bottom + 14}" text-anchor="middle">{m}</text>'
        )
    for n, curve in enumerate(curves):
        colour = _COLOURS[n % len(_COLOURS)]
        points = " ".join(
            f"{left + plot_w * p['month_on_book'] / span:.1f},"
            f"{bottom - (bottom - top) * (p['share'] or 0):.1f}"
            for p in curve["points"]
        )
        label = f"{curve['cohort']} {curve['currency']}"
        body.append(
            f'<polyline class="vintage" data-cohort="{escape(label)}" points="{points}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        body.append(
            f'<text x="{left + plot_w + 10}" y="{top + 16 * n}" fill="{colour}">{escape(label)}</text>'
        )
    return _svg(width, height, "Vintage: share of principal 30+ days past due by month on book", body)
