"""underwriting:8001 request and response bodies. Amounts are `{"value": <int minor units>, "currency"}`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from offchain.platform.inputs import (
    MAX_MINOR_UNITS,
    NO_NUL,
    WHOLE,
    Amount,
    Count,
    Currency,
    IsoDate,
    MinorUnits,
    ShortText,
)
from offchain.platform.inputs import AmountOut as Money

Tenor = Annotated[int, Field(strict=True, ge=1, le=60), WHOLE]
SignedMinorUnits = Annotated[
    int, Field(strict=True, ge=-MAX_MINOR_UNITS, le=MAX_MINOR_UNITS, description="minor units (kobo)"), WHOLE
]


class TransactionIn(BaseModel):
    """One statement line: inflows positive, outflows negative, integer minor units."""

    model_config = ConfigDict(extra="ignore")

    date: IsoDate
    amount: SignedMinorUnits
    balance: SignedMinorUnits | None = None
    description: str | None = Field(default=None, max_length=500, pattern=NO_NUL)

    def record(self) -> dict[str, Any]:
        """As the statement parser takes a line (offchain.domain.underwriting.bank_statement)."""
        return {**self.model_dump(), "date": self.date.isoformat()}


class StatementIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    transactions: list[TransactionIn] = Field(min_length=1, max_length=20_000)


class Borrower(BaseModel):
    sme_user_id: ShortText


class ApplicationIn(BaseModel):
    """The application as the gateway holds it; fields beyond these are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    external_id: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    borrower: Borrower
    amount: Amount
    tenor_months: Tenor
    purpose: str = Field(default="", max_length=500, pattern=NO_NUL)


class PartnerClaimsIn(BaseModel):
    """The partner's JWT claims (DESIGN §4); camelCase as in the token, snake_case accepted too."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    partner_id: ShortText
    credit_limit: MinorUnits | None = Field(
        default=None,
        alias="creditLimit",
        description="caps the partner's total outstanding, minor units of the application currency",
    )
    risk_rating: str | None = Field(default=None, alias="riskRating", max_length=16, pattern=NO_NUL)


class ExposuresIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    borrower_outstanding: MinorUnits = Field(
        default=0, description="the borrower's committed principal on the platform, all partners"
    )
    partner_outstanding: MinorUnits = Field(default=0, description="the partner's committed principal")


class ChainHistoryIn(BaseModel):
    """The borrower's loans on the LoanBook, folded (offchain.domain.underwriting.history)."""

    model_config = ConfigDict(extra="forbid")

    repaid_loans: Count = 0
    active_loans: Count = 0
    defaulted_loans: Count = Field(default=0, description="in state DEFAULTED now")
    written_off_loans: Count = 0
    defaults_ever: Count = 0
    max_days_past_due: Count = 0
    current_days_past_due: Count = 0
    outstanding: MinorUnits = 0


class AssessmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    application: ApplicationIn
    partner_claims: PartnerClaimsIn
    exposures: ExposuresIn = Field(default_factory=ExposuresIn)
    chain_history: ChainHistoryIn = Field(default_factory=ChainHistoryIn)
    transactions: list[TransactionIn] | None = Field(
        default=None,
        min_length=1,
        max_length=20_000,
        description="a statement uploaded with the application; otherwise the SME platform's is fetched",
    )


class PreAssessmentRequest(BaseModel):
    """On `sme.kyc.verified`: is the borrower eligible, and for how much, before any application?"""

    model_config = ConfigDict(extra="forbid")

    borrower: Borrower
    partner_claims: PartnerClaimsIn
    currency: Currency = "NGN"
    tenor_months: Tenor = 12
    exposures: ExposuresIn = Field(default_factory=ExposuresIn)
    chain_history: ChainHistoryIn = Field(default_factory=ChainHistoryIn)


class ReasonOut(BaseModel):
    code: str
    message: str
    source: Literal["policy", "affordability", "scorecard", "onchain"]


class DecisionOut(BaseModel):
    status: Literal["approved", "declined", "refer"]
    score: int
    risk_rating: str = Field(description="A (best) .. E; E is not lent to")
    pd: str = Field(description="probability of default, decimal fraction with 6 places")
    requested_amount: Money
    max_amount: Money = Field(description="the most the borrower may borrow now; 0 when declined")
    approved_amount: Money
    max_monthly_installment: Money | None = None
    tenor_months: int
    reasons: list[ReasonOut]
    model_version: str
    policy_version: str
    features: dict[str, Any]


class DebtStreamOut(BaseModel):
    description: str
    payments: int
    total: int
    monthly_amount: int
    first_paid: str
    last_paid: str
    active: bool


class StatementAnalysisOut(BaseModel):
    """Minor units throughout; `_bps` ratios are basis points (10000 = 1.0)."""

    period_start: str
    period_end: str
    months: int
    transaction_count: int
    monthly_inflows: list[int]
    total_inflow: int
    total_outflow: int
    average_monthly_inflow: int
    average_monthly_outflow: int
    inflow_volatility_bps: int | None
    nsf_count: int
    returned_debt_payments: int
    overdraft_days: int
    average_daily_balance: int | None
    minimum_balance: int | None
    monthly_debt_service: int
    net_monthly_cash_flow: int
    operating_cash_flow: int
    debt_streams: list[DebtStreamOut]
    max_monthly_installment: int = Field(description="under the policy's cash-flow share and DSCR floor")
    proposed_installment: int | None = None
    dscr_bps: int | None = Field(default=None, description="with the proposed installment")


class ModelOut(BaseModel):
    """The scorecard artefact in force, as committed (bins, points, scaling, on-chain adjustment)."""

    model_config = ConfigDict(extra="allow")

    format: str
    version: str
    name: str
    scaling: dict[str, Any]
    features: list[dict[str, Any]]
    rating_bands: list[dict[str, Any]]
    onchain_adjustment: dict[str, Any]
    policy_version: str
