"""The payment routes' wire shapes."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from offchain.platform.pages import MoneyOut


class MatchIn(BaseModel):
    loan_id: uuid.UUID


class ReverseIn(BaseModel):
    reason: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")


class PaymentOut(BaseModel):
    """Money a borrower paid, as its provider confirmed it, and where it went."""

    id: uuid.UUID
    provider: str
    reference: str
    payment_ref: str = Field(description='keccak256("<provider>:<reference>"), as LoanBook records it')
    status: str = Field(
        description="received | unmatched | pending_chain | recorded | credited | reversal_pending | reversed"
    )
    loan_id: uuid.UUID | None = None
    match_method: str | None = None
    amount: MoneyOut = Field(description="the borrower's repayment (Paystack's fee apart: provider_fee)")
    applied: MoneyOut
    excess: MoneyOut
    provider_fee: MoneyOut = Field(description="the provider's fee on the charge, kept out of its settlement")
    payer_fee: MoneyOut = Field(description="what the payer paid on top of the repayment (fees passed on)")
    detail: str | None = None
    paid_at: datetime | None = None
    recorded_tx: str | None = None
    created_at: datetime | None = None


class PaymentReferenceOut(BaseModel):
    loan_id: uuid.UUID
    reference: str = Field(description="quote it with a payment: money paid under it finds this loan")


class VirtualAccountOut(BaseModel):
    """The loan's dedicated virtual account (a NUBAN at the bank named)."""

    loan_id: uuid.UUID
    account_number: str
    bank: str | None = None
    account_name: str | None = None
    currency: str | None = None


class PaymentNoticeOut(BaseModel):
    """A notice ("charge X succeeded") the provider's own verify did not confirm."""

    id: uuid.UUID
    provider: str
    reference: str
    topic: str
    status: Literal["not_confirmed", "confirmed"]
    reason: Literal["not_found", "not_successful", "unusable_reference"]
    provider_status: str | None = None
    detail: str | None = None
    claimed: dict[str, Any]
    notices: int
    payment_id: uuid.UUID | None = None
    first_seen_at: datetime
    last_seen_at: datetime
