"""Delinquency classification and business dates: DPD buckets, CBN prudential classes and their
provisions, and the close-of-business clock in the lender's timezone (offchain.domain.collections
plans a day with these)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

# -- classification ------------------------------------------------------------------------------


class DpdBucket(StrEnum):
    CURRENT = "current"
    DPD_1_30 = "1-30"
    DPD_31_60 = "31-60"
    DPD_61_90 = "61-90"
    DPD_90_PLUS = "90+"


class CbnClass(StrEnum):
    """CBN prudential classes for microfinance banks (loans past due by days)."""

    PERFORMING = "performing"
    PASS_AND_WATCH = "pass_and_watch"  # noqa: S105 - a class name, not a secret
    SUBSTANDARD = "substandard"
    DOUBTFUL = "doubtful"
    LOST = "lost"


# provision on the outstanding balance, in basis points (1 %, 5 %, 20 %, 50 %, 100 %)
PROVISION_BPS: Mapping[CbnClass, int] = {
    CbnClass.PERFORMING: 100,
    CbnClass.PASS_AND_WATCH: 500,
    CbnClass.SUBSTANDARD: 2_000,
    CbnClass.DOUBTFUL: 5_000,
    CbnClass.LOST: 10_000,
}


def _check_dpd(dpd: int) -> None:
    if dpd < 0:
        raise ValueError("days past due cannot be negative")


def dpd_bucket(dpd: int) -> DpdBucket:
    _check_dpd(dpd)
    if dpd == 0:
        return DpdBucket.CURRENT
    if dpd <= 30:
        return DpdBucket.DPD_1_30
    if dpd <= 60:
        return DpdBucket.DPD_31_60
    if dpd <= 90:
        return DpdBucket.DPD_61_90
    return DpdBucket.DPD_90_PLUS


def cbn_class(dpd: int) -> CbnClass:
    """Performing 0, pass and watch 1-30, substandard 31-60, doubtful 61-90, lost 91 and over."""
    _check_dpd(dpd)
    if dpd == 0:
        return CbnClass.PERFORMING
    if dpd <= 30:
        return CbnClass.PASS_AND_WATCH
    if dpd <= 60:
        return CbnClass.SUBSTANDARD
    if dpd <= 90:
        return CbnClass.DOUBTFUL
    return CbnClass.LOST


def provision(balance: int, klass: CbnClass) -> int:
    """Provision in minor units, rounded up: a provision is never smaller than the rule says."""
    if balance < 0:
        raise ValueError("balance cannot be negative")
    return -(-balance * PROVISION_BPS[klass] // 10_000)


# -- business dates ------------------------------------------------------------------------------


def close_of_business(business_date: date, tz: ZoneInfo) -> int:
    """Unix time of the last second of `business_date` in `tz`."""
    next_day = datetime.combine(business_date + timedelta(days=1), time.min, tzinfo=tz)
    return int(next_day.timestamp()) - 1


def local_date(unix: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(unix, UTC).astimezone(tz).date()


def dates_between(first: date, last: date) -> list[date]:
    """Every date from `first` to `last`, both included (empty when first > last)."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
