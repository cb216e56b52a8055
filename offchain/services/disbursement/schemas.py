"""The payout service's wire shapes."""

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from offchain.platform.pages import MoneyOut


class PayoutOut(BaseModel):
    """A loan's payout as the rail and the ledger see it."""

    loan_id: uuid.UUID
    chain_loan_id: str
    status: str = Field(description="queued | initiated | succeeded | abandoned | review")
    rail: str
    reference: str = Field(description="the one transfer reference of every attempt")
    method: str
    amount: MoneyOut
    attempt: int
    provider_status: str | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    recorded_on_chain: bool
    disbursed_tx: str | None = None
    hold: str | None = Field(default=None, description="the ledger hold of the new attempt (retry only)")


class MonitoringFlagOut(BaseModel):
    id: uuid.UUID
    subject: str = Field(description="payout | payment")
    subject_id: str
    loan_id: uuid.UUID | None = None
    rule: str
    detail: str
    status: str = Field(description="open | cleared")
    created_at: datetime


class OtpIn(BaseModel):
    otp: str = Field(min_length=4, max_length=12, pattern=r"^[0-9]+$")
