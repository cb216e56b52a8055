"""Request bodies of the collections API (responses are plain JSON views built by the use cases)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from offchain.platform.inputs import Amount, IsoDate


class CobRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    business_date: IsoDate | None = Field(default=None, description="default: today in the lender's timezone")
    catch_up: StrictBool = Field(
        default=False, description="also run every missed date since the last completed close of business"
    )


class PromiseToPayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    promised_date: IsoDate
