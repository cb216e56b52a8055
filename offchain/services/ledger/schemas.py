"""Response shapes of the ledger API (amounts as {"value": <int minor units>, "currency"})."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Figure(BaseModel):
    """A signed amount: a balance may be zero or, on the wrong side of its account, negative."""

    value: int = Field(description="minor units, e.g. kobo")
    currency: str


class AccountBalance(BaseModel):
    account: str
    currency: str
    kind: str
    normal_side: str
    balance: Figure = Field(description="posted, positive on the account's normal side")
    posted_debits: Figure
    posted_credits: Figure
    pending_debits: Figure
    pending_credits: Figure


class LegOut(BaseModel):
    account: str
    side: str
    amount: Figure


class PostingOut(BaseModel):
    posting_id: str
    status: str
    description: str
    metadata: dict[str, Any]
    legs: list[LegOut]
    created_at: str
    posted_at: str | None
    voided_at: str | None
    reverses: str | None
    reversed_by: str | None


class CurrencyTotals(BaseModel):
    currency: str
    debits: int
    credits: int
    pending_debits: int
    pending_credits: int
    balanced: bool


class TrialBalanceOut(BaseModel):
    balanced: bool
    currencies: list[CurrencyTotals]
    accounts: list[dict[str, Any]] | None = None


class LoanLedgerOut(BaseModel):
    loan_id: str | None
    chain_loan_id: str | None
    accounts: list[dict[str, Any]]
    entries: list[dict[str, Any]]


class MismatchOut(BaseModel):
    kind: str
    subject: str
    expected: Any
    actual: Any
    detail: str


class ReconciliationOut(BaseModel):
    run_id: int
    status: str
    chain_block: int | None
    loans_checked: int
    mismatch_count: int
    error: str | None
    mismatches: list[MismatchOut]
    trigger: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
