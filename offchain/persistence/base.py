"""Declarative base, naming convention and the column types the `caas_` tables share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, MetaData, Numeric, String, func
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: migrations and models agree, and autogenerate can compare.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Uint256(TypeDecorator[int]):
    """An EVM uint256 (or any money amount in minor units) as NUMERIC(78, 0) <-> Python int.

    Plain Numeric hands back Decimal (or float with asdecimal=False, which loses precision).
    """

    impl = Numeric(78, 0)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(int(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


# 0x-prefixed lowercase hex. Text rather than bytea so rows read the way the API and explorers
# print them; CHECK constraints keep the case canonical so unique keys cannot be dodged.
Bytes32Hex = String(66)
AddressHex = String(42)
BYTES32_PATTERN = "^0x[0-9a-f]{64}$"


def bytes32_check(column: str) -> str:
    return f"{column} ~ '{BYTES32_PATTERN}'"


def created_at() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def updated_at() -> Any:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
