"""Input types every service's API shares: bounded to what the stores behind them can hold.

A value that passes these reaches PostgreSQL and the LoanBook without an overflow, a NUL byte or
a date out of range, so bad input is a 422 naming the field, never a 5xx from deep inside:

- `MinorUnits` / `PositiveMinorUnits` / `Amount`: money as integer minor units below 2**96, the
  width LoanBook packs principal and total_due into (README "The loan book on chain");
- `JsonInt`: an integer as JSON spells it: `6` and `6.0` alike (OpenAPI 3.1 / JSON Schema say
  both are integers), never `true`, `"6"` or `6.5`; a fractional spelling only within 2**53,
  where a float still names exactly one integer;
- `ShortText` / `LongText` (or any `Field(pattern=NO_NUL)`): a string PostgreSQL can store
  (no U+0000) within a length;
- `Timestamp`: an ISO 8601 date-time (not a number) that is still a date-time in UTC
  (`9999-12-31T23:59:59-12:00` is not: it is year 10000 there), naive read as UTC;
- `Cursor`: the shape of the opaque page cursors the lists issue (URL-safe base64, bounded).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

MAX_MINOR_UNITS = 2**96 - 1
# a float names one integer exactly only up to here (what JSON parsers give for `6.0`)
_EXACT_FLOAT = 2**53
NO_NUL = r"^[^\x00]*$"
CURRENCY_CODES = ("NGN", "USD")
Currency = Literal["NGN", "USD"]


def _json_integer(value: Any) -> Any:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        if abs(value) > _EXACT_FLOAT:
            raise ValueError("above 2**53 an integer must be written without a fraction or exponent")
        return int(value)
    return value  # StrictInt refuses the rest (bool, str, ...)


# after the bounds in an Annotated (so the bounds reach the JSON Schema): `6.0` -> 6
WHOLE = BeforeValidator(_json_integer)
JsonInt = Annotated[int, Field(strict=True), WHOLE]
MinorUnits = Annotated[
    int, Field(strict=True, ge=0, le=MAX_MINOR_UNITS, description="integer minor units (kobo)"), WHOLE
]
PositiveMinorUnits = Annotated[
    int,
    Field(strict=True, gt=0, le=MAX_MINOR_UNITS, description="integer minor units (kobo), above zero"),
    WHOLE,
]
# a count of months, of items, of days: small, non-negative
Count = Annotated[int, Field(strict=True, ge=0, le=1_000_000), WHOLE]


class Amount(BaseModel):
    """Money in a request: integer minor units (kobo for NGN), above zero, and its currency."""

    model_config = ConfigDict(extra="forbid")

    value: PositiveMinorUnits
    currency: Currency


class AmountOut(BaseModel):
    """Money in an answer, where zero is a real figure."""

    value: int = Field(ge=0, description="integer minor units (kobo)")
    currency: str


# strings PostgreSQL text can hold (no U+0000), within a length
ShortText = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
LongText = Annotated[str, Field(min_length=1, max_length=2_000, pattern=NO_NUL)]


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: not a date-time in UTC (years 1 to 9999)") from None


_ISO_START = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    # pydantic would read a number (or a numeric string) as seconds since the epoch; the API
    # speaks ISO 8601 only
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_START.match(value):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(_iso_only),
    AfterValidator(_in_utc),
    Field(description="ISO 8601 date-time; without an offset it is read as UTC"),
]


def _iso_date_only(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_START.match(value):
        raise ValueError("must be an ISO 8601 date string (YYYY-MM-DD)")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]
# a day with a unix time (what the chain's clocks count): 1970-01-01 or later
EpochDate = Annotated[
    date,
    BeforeValidator(_iso_date_only),
    Field(ge=date(1970, 1, 1)),
    WithJsonSchema({"type": "string", "format": "date", "pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-"}),
]

_CURSOR = r"^[A-Za-z0-9_\-]{1,512}$"
Cursor = Annotated[
    str,
    Field(
        max_length=512,
        pattern=_CURSOR,
        description="next_cursor of the previous page, passed back unchanged",
    ),
]
CURSOR_RE = re.compile(_CURSOR)

HEX_DIGITS = r"^0x([0-9a-fA-F]{2})*$"
Hex = Annotated[str, Field(pattern=HEX_DIGITS, max_length=2 + 2 * 131_072, description="0x and whole bytes")]

__all__ = [
    "CURRENCY_CODES",
    "MAX_MINOR_UNITS",
    "NO_NUL",
    "WHOLE",
    "Amount",
    "AmountOut",
    "Count",
    "Currency",
    "Cursor",
    "EpochDate",
    "Hex",
    "IsoDate",
    "JsonInt",
    "LongText",
    "MinorUnits",
    "PositiveMinorUnits",
    "ShortText",
    "Timestamp",
]
