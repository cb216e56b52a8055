"""A borrower's repayment history on the platform's loan book of record (the chain).

The caller builds `LoanRecord`s from the indexed LoanBook events of every loan carrying the
borrower's `borrower_ref` (any partner: the chain is one book), and `summarize` folds them into the
`ChainHistory` that the policy rules and the scorecard's on-chain adjustment read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from offchain.domain.loan_book import LoanState

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
