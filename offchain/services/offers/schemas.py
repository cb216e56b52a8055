"""offers:8002 request and response bodies. Amounts are `{"value": <int minor units>, "currency"}`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from offchain.domain.offers import Basis, Frequency, Method, Refusal
from offchain.platform.inputs import NO_NUL, WHOLE, Amount, ShortText
from offchain.platform.inputs import AmountOut as Money

__all__ = ["Amount", "Money"]


class AffordabilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_amount: Amount | None = None
    max_monthly_installment: Amount | None = Field(
        default=None, description="weekly schedules are held to 12/52 of it"
    )


class QuoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: ShortText = Field(max_length=16, examples=["B"])
    amount: Amount
    tenor_months: Annotated[int, Field(strict=True, ge=1, le=60), WHOLE]
    frequency: Frequency = Frequency.MONTHLY
    method: Method | None = Field(default=None, description="defaults to the pricing policy's method")
    affordability: AffordabilityIn | None = None


class InstallmentOut(BaseModel):
    index: int
    due_offset: int = Field(description="seconds after disbursement: index * installment_interval")
    amount: Money
    principal: Money
    interest: Money
    fee: Money


class ScheduleOut(BaseModel):
    method: Method
    frequency: Frequency
    installment_count: int
    installment_interval: int = Field(description="seconds; monthly = 30 days, weekly = 7 days")
    apr_bps: int
    ear_bps: int
    ear: str = Field(description="effective annual rate of the cash flows, decimal fraction")
    principal: Money
    interest: Money
    fees: Money
    total_due: Money
    installments: list[InstallmentOut]


class OfferOut(BaseModel):
    rating: str
    basis: Basis
    amount: Money
    tenor_months: int
    frequency: Frequency
    method: Method
    apr_bps: int
    ear_bps: int
    origination_fee: Money
    total_due: Money
    installment_count: int
    installment_interval: int
    grace_period: int = Field(description="seconds after a due date before it is late")
    max_late_fees: Money
    expires_at: str
    pricing_version: str
    schedule: ScheduleOut


class QuoteResponse(BaseModel):
    offers: list[OfferOut]
    refusals: list[Refusal] = Field(description="why there is no offer, when there is none")


class RatePlanOut(BaseModel):
    apr_bps: int
    origination_fee_bps: int
    origination_fee_floor: Money
    origination_fee_cap: Money
    min_amount: Money
    max_amount: Money
    max_tenor_months: int


class PricingOut(BaseModel):
    version: str
    currency: str
    method: Method
    late_fee_cap_bps: int
    late_fee_cap_max: Money
    grace_days: int
    offer_ttl_seconds: int
    amount_step: Money
    plans: dict[str, RatePlanOut]


# -- accepting an offer (the partner API, served by the gateway) --------------------------------


class PayoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["bank_transfer", "virtual_account", "wallet"]
    account_number: str = Field(min_length=1, max_length=32, pattern=NO_NUL)
    bank_code: str = Field(
        min_length=3, max_length=16, pattern=NO_NUL, description="CBN bank code (or the wallet provider code)"
    )


class AcceptOfferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payout: PayoutIn


class AcceptOfferOut(BaseModel):
    loan_id: uuid.UUID
    chain_loan_id: str
    status: Literal["pending_approval"]
    terms_hash: str
