"""An underwriting decision: what the applications flow stores and the offers service reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from offchain.domain.underwriting.reasons import Reason


class DecisionStatus(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    REFER = "refer"


@dataclass(frozen=True, slots=True)
class Application:
    amount: int  # minor units
    currency: str
    tenor_months: int
    purpose: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise ValueError("amount must be a positive int of minor units")
        if not 1 <= self.tenor_months <= 120:
            raise ValueError("tenor_months must be between 1 and 120")


@dataclass(frozen=True)
class Decision:
    status: DecisionStatus
    score: int
    risk_rating: str
    pd: Decimal  # probability of default, 6 decimal places
    currency: str
    requested_amount: int
    max_amount: int  # the most this borrower may borrow now (0 when declined)
    approved_amount: int  # min(requested, max_amount); 0 unless approved
    max_monthly_installment: int | None  # None when there is no statement to measure
    tenor_months: int
    reasons: tuple[Reason, ...]
    model_version: str
    policy_version: str
    features: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: amounts as `{"value", "currency"}`, the PD as a decimal string."""

        def money(value: int | None) -> dict[str, Any] | None:
            return None if value is None else {"value": value, "currency": self.currency}

        return {
            "status": self.status.value,
            "score": self.score,
            "risk_rating": self.risk_rating,
            "pd": str(self.pd),
            "requested_amount": money(self.requested_amount),
            "max_amount": money(self.max_amount),
            "approved_amount": money(self.approved_amount),
            "max_monthly_installment": money(self.max_monthly_installment),
            "tenor_months": self.tenor_months,
            "reasons": [reason.to_dict() for reason in self.reasons],
            "model_version": self.model_version,
            "policy_version": self.policy_version,
            "features": dict(self.features),
        }
