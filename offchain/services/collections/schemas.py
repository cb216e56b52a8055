"""Request bodies and answers of the collections API (the use cases build the answers as views;
these models declare their shape)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from offchain.platform.inputs import Amount, EpochDate, IsoDate
from offchain.platform.pages import MoneyOut


class CobRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the close of business reads the LoanBook at the day's end as unix seconds (uint256): a day
    # before 1970 has no such time (it was a 500 from the ABI encoder)
    business_date: EpochDate | None = Field(
        default=None, description="default: today in the lender's timezone"
    )
    catch_up: StrictBool = Field(
        default=False, description="also run every missed date since the last completed close of business"
    )


class PromiseToPayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    promised_date: IsoDate


# -- answers -------------------------------------------------------------------------------------


class CobRunOut(BaseModel):
    """A close of business: platform-wide run figures."""

    business_date: date
    status: str
    evaluated_at: datetime | None = Field(default=None, description="the chain time the loans were read at")
    loans_processed: int | None = None
    summary: dict[str, int] = Field(default_factory=dict, description="counts by outcome")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class CobRunResult(CobRunOut):
    """The run just made; with catch_up, every date run (oldest first) and the last one's figures."""

    runs: list[CobRunOut] | None = None


class CollectionDayOut(BaseModel):
    loan_id: uuid.UUID
    business_date: date
    chain_state: str
    days_past_due: int
    bucket: str
    cbn_class: str
    provision_bps: int
    provision: MoneyOut
    outstanding: MoneyOut
    amount_due: MoneyOut
    dunning_paused: bool


class PartnerCobResults(BaseModel):
    loans: list[CollectionDayOut]
    buckets: dict[str, int]
    actions: dict[str, int]


class CobRunDetail(CobRunOut):
    """A run with this partner's results for the date."""

    partner: PartnerCobResults


class PromiseToPayOut(BaseModel):
    id: uuid.UUID
    amount: MoneyOut
    promised_date: date
    status: str
    resolved_on: date | None = None
    created_at: datetime | None = None


class ProposeCall(BaseModel):
    """What a signer sends: DisbursementCommittee.propose(action, target, arg, value, expires_at)."""

    action: int
    action_name: str
    target: str
    arg: str
    value: int
    expires_at: int


class WriteOffProposalOut(BaseModel):
    loan_id: uuid.UUID
    chain_loan_id: str
    status: str
    committee: str | None = None
    propose: ProposeCall
    calldata: str | None = None
    outstanding: MoneyOut
    days_past_due: int
    business_date: date
    tx_idempotency_key: str | None = None
    created_at: datetime | None = None


class CollectionActionOut(BaseModel):
    business_date: date
    kind: str
    key: str | None = None
    topic: str | None = None
    channel: str | None = None
    template: str | None = None
    notification_id: str | None = None
    tx_idempotency_key: str | None = None
    details: dict[str, Any] | None = None


class LoanCollectionsOut(BaseModel):
    loan_id: uuid.UUID
    chain_loan_id: str | None = None
    chain_state: str
    latest: CollectionDayOut | None = None
    bucket: str | None = None
    cbn_class: str | None = None
    days_past_due: int | None = None
    dunning: list[CollectionActionOut]
    history: list[CollectionActionOut]
    promises: list[PromiseToPayOut]
    write_off_proposal: WriteOffProposalOut | None = None
