"""A borrower's repayment history on the platform's loan book of record (the chain).

The caller builds `LoanRecord`s from the indexed LoanBook events of every loan carrying the
borrower's `borrower_ref` (any partner: the chain is one book) with `record_from_events`, and
`summarize` folds them into the `ChainHistory` that the policy rules and the scorecard's
on-chain adjustment read.

Days past due are the contract's (offchain.domain.loan_book): whole days since the due date of
the oldest installment not fully paid, once past its grace period. `record_from_events` replays a
loan's events through that model. Between two events days past due only grow, so the worst value
a loan ever reached is the largest of the values just before each event and at `as_of`: exact,
not a daily sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from offchain.domain.loan_book import IN_REPAYMENT, Loan, LoanState

_COUNTS = (
    "repaid_loans",
    "active_loans",
    "defaulted_loans",
    "written_off_loans",
    "defaults_ever",
    "max_days_past_due",
    "current_days_past_due",
    "outstanding",
)


@dataclass(frozen=True, slots=True)
class LoanRecord:
    state: LoanState
    days_past_due: int = 0  # now
    max_days_past_due: int = 0  # worst ever observed (daily close of business)
    defaulted_ever: bool = False  # a LoanDefaulted event exists, even if later repaid
    outstanding: int = 0  # minor units


@dataclass(frozen=True, slots=True)
class LoanEvent:
    """One indexed LoanBook event of a loan: its name, block timestamp (unix s) and decoded args."""

    event: str
    at: int
    args: Mapping[str, Any] = field(default_factory=dict)


def record_from_events(events: Iterable[LoanEvent], as_of: int) -> LoanRecord | None:
    """Replay one loan's events (in chain order) into its record as of `as_of`.

    None when the events do not start with LoanCreated (a loan indexed only in part).
    """
    loan: Loan | None = None
    worst = 0
    for event in events:
        args = event.args
        if event.event == "LoanCreated":
            loan = Loan(
                currency=int(args["currency"]),
                principal=int(args["principal"]),
                total_due=int(args["total_due"]),
                installment_count=int(args["installment_count"]),
                installment_interval=int(args["installment_interval"]),
                grace_period=int(args["grace_period"]),
                max_late_fees=int(args["max_late_fees"]),
            )
            continue
        if loan is None:
            return None
        # the value the loan had reached just before this event changed it
        worst = max(worst, loan.days_past_due(event.at))
        _apply(loan, event)
    if loan is None:
        return None
    current = loan.days_past_due(as_of)
    return LoanRecord(
        state=loan.state,
        days_past_due=current,
        max_days_past_due=max(worst, current),
        defaulted_ever=loan.ever_defaulted,
        outstanding=loan.outstanding if loan.state in IN_REPAYMENT else 0,
    )


def _apply(loan: Loan, event: LoanEvent) -> None:
    """Apply an event as the contract recorded it (amounts from the event, never recomputed)."""
    args = event.args
    name = event.event
    if name == "LoanApproved":
        loan.state = LoanState.APPROVED
    elif name == "LoanDisbursed":
        loan.state = LoanState.ACTIVE
        loan.disbursed_at = int(args.get("disbursed_at") or event.at)
    elif name == "RepaymentRecorded":
        loan.late_fees_paid += int(args["fee_part"])
        loan.scheduled_repaid += int(args["scheduled_part"])
    elif name == "RepaymentReversed":
        loan.late_fees_paid -= int(args["fee_part"])
        loan.scheduled_repaid -= int(args["scheduled_part"])
        loan.state = LoanState(int(args["state_after"]))
    elif name == "LateFeeAssessed":
        loan.late_fees_assessed = int(args["late_fees_assessed"])
    elif name == "LoanRepaid":
        loan.state = LoanState.REPAID
    elif name == "LoanDefaulted":
        loan.state = LoanState.DEFAULTED
        loan.ever_defaulted = True
    elif name == "LoanWrittenOff":
        loan.state = LoanState.WRITTEN_OFF
    elif name == "LoanCancelled":
        loan.state = LoanState.CANCELLED


@dataclass(frozen=True, slots=True)
class ChainHistory:
    repaid_loans: int = 0
    active_loans: int = 0
    defaulted_loans: int = 0  # in state DEFAULTED now: an active default
    written_off_loans: int = 0
    defaults_ever: int = 0  # loans that ever defaulted, including written off or later repaid
    max_days_past_due: int = 0
    current_days_past_due: int = 0
    outstanding: int = 0

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")

    @property
    def is_empty(self) -> bool:
        return self.repaid_loans + self.active_loans + self.defaults_ever + self.written_off_loans == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChainHistory:
        return cls(**{name: data[name] for name in _COUNTS if name in data})

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _COUNTS}


def summarize(loans: Iterable[LoanRecord]) -> ChainHistory:
    counts = dict.fromkeys(_COUNTS, 0)
    for loan in loans:
        if loan.state is LoanState.REPAID:
            counts["repaid_loans"] += 1
        elif loan.state is LoanState.ACTIVE:
            counts["active_loans"] += 1
        elif loan.state is LoanState.DEFAULTED:
            counts["defaulted_loans"] += 1
        elif loan.state is LoanState.WRITTEN_OFF:
            counts["written_off_loans"] += 1
        if loan.defaulted_ever or loan.state in (LoanState.DEFAULTED, LoanState.WRITTEN_OFF):
            counts["defaults_ever"] += 1
        counts["max_days_past_due"] = max(
            counts["max_days_past_due"], loan.max_days_past_due, loan.days_past_due
        )
        counts["current_days_past_due"] = max(counts["current_days_past_due"], loan.days_past_due)
        counts["outstanding"] += loan.outstanding
    return ChainHistory(**counts)
