"""Answer shapes every service shares: the page of every list answer (`{"data": [Item...],
"next_cursor"}`) and money as the money services answer it.

Generic, so a list's OpenAPI names its items (`Page_LoanOut_`) and a generated client gets
typed items instead of `list[Any]`.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    data: list[Item]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null at the end"
    )


class MoneyOut(BaseModel):
    """Money in an answer of the money services: integer minor units and the ISO 4217 code as the
    rail gave it (a payment in suspense may be in any currency a provider sends)."""

    value: int = Field(description="minor units, e.g. kobo")
    currency: str
