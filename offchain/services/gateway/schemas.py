"""Request and response shapes of the partner API (DESIGN §4; fields added, none removed)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from offchain.platform.inputs import NO_NUL, WHOLE, Amount
from offchain.platform.pages import Page

CURRENCIES = ("NGN", "USD")
# NO_NUL: PostgreSQL text cannot hold U+0000: refused at the edge as a 422 naming the field, and
# said so in the OpenAPI, instead of failing in the database (offchain.platform.inputs).

ApplicationStatus = Literal["submitted", "underwriting", "offered", "declined", "accepted", "referred"]
LoanStatus = Literal[
    "pending_creation",
    "pending_approval",
    "approved",
    "active",
    "repaid",
    "defaulted",
    "written_off",
    "cancelled",
]


class AmountOut(BaseModel):
    """Money in an answer, where zero is a real figure (a declined application's max_amount)."""

    value: StrictInt = Field(ge=0, description="minor units, e.g. kobo")
    currency: Literal["NGN", "USD"]


class Borrower(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sme_user_id: str = Field(min_length=1, max_length=200, pattern=NO_NUL)


class ApplicationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="your reference, unique per partner"
    )
    borrower: Borrower
    amount: Amount
    tenor_months: Annotated[int, Field(strict=True, ge=1, le=60), WHOLE]
    purpose: str = Field(min_length=1, max_length=500, pattern=NO_NUL)


class Reason(BaseModel):
    code: str
    message: str


class Decision(BaseModel):
    score: int | None = None
    risk_rating: str | None = None
    reasons: list[Reason] = []
    model_version: str | None = None
    max_amount: AmountOut | None = None


class ScheduleItem(BaseModel):
    installment: int
    due_offset_s: int | None = None
    due_at: datetime | None = None
    amount: StrictInt
    principal: StrictInt | None = None
    interest: StrictInt | None = None


class OfferOut(BaseModel):
    id: uuid.UUID
    amount: Amount
    tenor_months: int
    apr_bps: int
    total_due: Amount
    fees: Amount | None = None
    effective_annual_rate_bps: int | None = None
    frequency: str | None = None
    installment_count: int | None = None
    schedule: list[ScheduleItem]
    status: str
    expires_at: datetime


class ApplicationOut(BaseModel):
    id: uuid.UUID
    external_id: str
    status: ApplicationStatus
    borrower: Borrower
    amount: Amount
    tenor_months: int
    purpose: str
    decision: Decision | None = None
    offers: list[OfferOut] = []
    created_at: datetime
    decided_at: datetime | None = None


__all__ = ["Page"]  # the one generic page of every list (offchain.platform.pages)


class LoanTransaction(BaseModel):
    event: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


class LoanOut(BaseModel):
    id: uuid.UUID
    chain_loan_id: str
    status: LoanStatus
    chain_state: str
    # a loan's figures include real zeros (nothing repaid yet, no late fees, nothing outstanding)
    principal: AmountOut | None = None
    total_due: AmountOut | None = None
    outstanding: AmountOut | None = None
    repaid: AmountOut | None = None
    late_fees_assessed: AmountOut | None = None
    installment_count: int | None = None
    installment_interval_s: int | None = None
    grace_period_s: int | None = None
    disbursed_at: datetime | None = None
    schedule: list[ScheduleItem] = []
    transactions: list[LoanTransaction] = []
    event_chain_verified: bool | None = None


class AuditEvent(BaseModel):
    event: str
    block: int
    tx: str
    args: dict[str, Any]


class AuditMismatch(BaseModel):
    field: str
    onchain: Any = None
    backend: Any = None


class EventChainCheck(BaseModel):
    onchain: str | None = Field(default=None, description="LoanBook.event_chain(loan_id)")
    recomputed_from_logs: str | None = None
    backend: str | None = Field(default=None, description="the backend's copy, from its indexed events")
    logs_complete: bool


class AuditReportOut(BaseModel):
    """On-chain state beside the backend's, with every field that differs."""

    chain_loan_id: str
    loan_id: uuid.UUID | None = None
    onchain: dict[str, Any]
    backend: dict[str, Any] | None = None
    event_count: int
    events: list[AuditEvent]
    event_chain: EventChainCheck
    mismatches: list[AuditMismatch]
    consistent: bool


class AuditLogEntryOut(BaseModel):
    id: int
    occurred_at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    request_id: str | None = None
    details: dict[str, Any] = {}


class SmeEventAck(BaseModel):
    status: Literal["accepted", "duplicate", "ignored", "rejected"]
    id: str | None = None
    type: str | None = Field(default=None, description="the event type, when it was ignored")
    reason: str | None = Field(default=None, description="why a signed event can never be taken in")
