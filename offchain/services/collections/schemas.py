"""Request bodies of the collections API (responses are plain JSON views built by the use cases)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from offchain.services.gateway.schemas import Amount


class CobRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    business_date: date | None = Field(default=None, description="default: today in the lender's timezone")
    catch_up: bool = Field(
        default=False, description="also run every missed date since the last completed close of business"
    )


class PromiseToPayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    promised_date: date
