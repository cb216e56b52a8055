"""The analytics API's JSON answer (`GET /v1/analytics/portfolio?format=json`), as declared to
clients. Amounts are minor units of the currency they are grouped under; rates are 0..1 or null
when there is nothing to divide by."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Durations(BaseModel):
    count: int
    mean: float | None = None
    median: float | None = None
    p90: float | None = None


class ApplicationFigures(BaseModel):
    count: int
    approved: int
    declined: int
    approval_rate: float | None = None
    time_to_decision_s: Durations


class CurrencyFigures(BaseModel):
    disbursed_count: int
    disbursed_volume: int
    outstanding: int
    portfolio_balance: int
    par30_balance: int
    par30: float | None = None
    par60_balance: int
    par60: float | None = None
    par90_balance: int
    par90: float | None = None
    default_rate: float | None = None
    default_count: int
    write_off_rate: float | None = None
    written_off_balance: int
    collection_rate: float | None = None
    time_to_disburse_s: Durations


class VintagePoint(BaseModel):
    month_on_book: int
    share: float | None = None


class Vintage(BaseModel):
    cohort: str = Field(description="the disbursement month, YYYY-MM")
    currency: str
    loans: int
    disbursed_volume: int
    threshold_days: int
    points: list[VintagePoint]


class PortfolioOut(BaseModel):
    partner_id: str
    as_of: str
    applications: ApplicationFigures
    currencies: dict[str, CurrencyFigures]
    vintages: list[Vintage]
