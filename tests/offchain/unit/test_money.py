"""Money: int minor units plus currency; floats and mixed currencies refused."""

from __future__ import annotations

import pytest

from offchain.domain.money import CurrencyMismatch, Money, from_iso_numeric, iso_numeric


def test_iso_numeric_codes() -> None:
    assert iso_numeric("NGN") == 566
    assert Money(1, "USD").iso_numeric == 840
    assert from_iso_numeric(566) == "NGN"
    with pytest.raises(ValueError):
        from_iso_numeric(978)


@pytest.mark.parametrize("value", [1.0, 1.5, "100", True, None])
def test_refuses_anything_but_int_minor_units(value: object) -> None:
    with pytest.raises(TypeError):
        Money(value, "NGN")  # type: ignore[arg-type]


def test_refuses_unknown_currency() -> None:
    with pytest.raises(ValueError, match="unsupported currency"):
        Money(1, "ngn")


def test_arithmetic_and_order_within_one_currency() -> None:
    assert Money(150, "NGN") + Money(50, "NGN") == Money(200, "NGN")
    assert Money(150, "NGN") - Money(200, "NGN") == Money(-50, "NGN")
    assert Money(1, "NGN") < Money(2, "NGN")


@pytest.mark.parametrize("operation", ["__add__", "__sub__", "__lt__", "__ge__"])
def test_refuses_mixed_currencies(operation: str) -> None:
    with pytest.raises(CurrencyMismatch):
        getattr(Money(1, "NGN"), operation)(Money(1, "USD"))


def test_json_shape_round_trips() -> None:
    money = Money(123_456, "NGN")
    assert money.to_json() == {"value": 123_456, "currency": "NGN"}
    assert Money.from_json(money.to_json()) == money
    with pytest.raises(TypeError):
        Money.from_json({"value": 1234.56, "currency": "NGN"})
    with pytest.raises(ValueError):
        Money.from_json({"value": 1, "currency": "NGN", "extra": 1})


def test_str_in_major_units() -> None:
    assert str(Money(100_000_050, "NGN")) == "NGN 1,000,000.50"
    assert str(Money(-5, "USD")) == "-USD 0.05"
