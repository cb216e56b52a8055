"""Money as integer minor units plus an ISO 4217 currency: never a float, never two currencies mixed.

The JSON shape is the one the public API uses everywhere: `{"value": <int minor units>, "currency": "NGN"}`.
On chain a currency is its ISO 4217 numeric code (`566` NGN, `840` USD), see DESIGN §3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# alpha code -> (numeric code, minor units per major unit)
CURRENCIES: dict[str, tuple[int, int]] = {
    "NGN": (566, 100),
    "USD": (840, 100),
}
NUMERIC_TO_ALPHA = {numeric: alpha for alpha, (numeric, _) in CURRENCIES.items()}


class CurrencyMismatch(ValueError):
    pass


def _check_currency(currency: str) -> None:
    if currency not in CURRENCIES:
        raise ValueError(f"unsupported currency {currency!r}; known: {', '.join(sorted(CURRENCIES))}")


def iso_numeric(currency: str) -> int:
    _check_currency(currency)
    return CURRENCIES[currency][0]


def from_iso_numeric(code: int) -> str:
    try:
        return NUMERIC_TO_ALPHA[code]
    except KeyError:
        raise ValueError(f"unsupported ISO 4217 numeric code {code}") from None


def require_int(value: Any, name: str = "value") -> int:
    # bool is an int subclass; True kobo is a bug, not an amount
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int of minor units, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    value: int
    currency: str

    def __post_init__(self) -> None:
        require_int(self.value)
        _check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @property
    def iso_numeric(self) -> int:
        return iso_numeric(self.currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency} do not mix")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.value + other.value, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.value - other.value, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.value < other.value

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.value <= other.value

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.value > other.value

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.value >= other.value

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "currency": self.currency}

    @classmethod
    def from_json(cls, data: Any) -> Money:
        if not isinstance(data, dict) or set(data) != {"value", "currency"}:
            raise ValueError('money must be {"value": int, "currency": str}')
        currency = data["currency"]
        if not isinstance(currency, str):
            raise TypeError("currency must be a string")
        return cls(require_int(data["value"]), currency)

    def __str__(self) -> str:
        minor = CURRENCIES[self.currency][1]
        sign = "-" if self.value < 0 else ""
        major, rest = divmod(abs(self.value), minor)
        return f"{sign}{self.currency} {major:,}.{rest:0{len(str(minor)) - 1}d}"
