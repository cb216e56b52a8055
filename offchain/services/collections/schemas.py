"""Request bodies of the collections API (responses are plain JSON views built by the use cases)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from offchain.platform.inputs import Amount, EpochDate, IsoDate


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
