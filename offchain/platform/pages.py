"""The one page shape every list answer of every service has: `{"data": [Item...], "next_cursor"}`.

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
