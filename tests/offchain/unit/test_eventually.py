"""The one wait helper: returns the accepted value, names what it waited for and what it last saw."""

from __future__ import annotations

import itertools

import pytest
from eventually import EventuallyTimeout, eventually, eventually_async


def test_returns_the_first_accepted_value() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter), accept=lambda n: n >= 3, every=0) == 3


def test_timeout_names_what_and_the_last_value() -> None:
    with pytest.raises(EventuallyTimeout, match=r"waiting for the answer; last value: 41"):
        eventually(lambda: 41, accept=lambda n: n == 42, what="the answer", within_s=0.05, every=0.01)


def test_an_unlisted_exception_fails_at_once() -> None:
    calls = []

    def boom() -> None:
        calls.append(1)
        raise KeyError("gone")

    with pytest.raises(KeyError):
        eventually(boom, within_s=5, every=0.01)
    assert len(calls) == 1


def test_a_retried_exception_is_reported_on_timeout() -> None:
    def refused() -> None:
        raise ConnectionError("refused")

    with pytest.raises(EventuallyTimeout, match=r"last exception: ConnectionError: refused"):
        eventually(refused, retry_on=(ConnectionError,), within_s=0.05, every=0.01)


@pytest.mark.asyncio
async def test_async_form_awaits_async_and_plain_checks() -> None:
    counter = itertools.count()

    async def later() -> int:
        return next(counter)

    assert await eventually_async(later, accept=lambda n: n == 2, every=0) == 2
    assert await eventually_async(lambda: "plain", every=0) == "plain"
    with pytest.raises(EventuallyTimeout, match=r"waiting for nothing; last value: None"):
        await eventually_async(lambda: None, what="nothing", within_s=0.05, every=0.01)
