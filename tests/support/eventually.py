"""Wait for a condition, in one place: `eventually` (blocking) and `eventually_async`.

`check` is polled every `every` seconds until `accept(value)` holds (truthiness by default), and
the accepted value is returned. On timeout an `EventuallyTimeout` (an AssertionError) names `what`,
the time waited, and the last value seen or the last exception swallowed. Exceptions propagate at
once unless listed in `retry_on`, so an assertion inside `check` still fails the test at once.

Shared by tests/offchain, tests/system and bench/ (tests/support is on their sys.path).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_UNSET: Any = object()


class EventuallyTimeout(AssertionError):
    """The condition did not hold within the time allowed."""


def _message(
    what: str, within_s: float, last: Any, error: BaseException | None, describe: Callable[[Any], str]
) -> str:
    if last is _UNSET and error is not None:
        seen = f"last exception: {type(error).__name__}: {error}"
    elif last is _UNSET:
        seen = "no value seen"
    else:
        seen = f"last value: {describe(last)}"
        if error is not None:
            seen += f"; then exception: {type(error).__name__}: {error}"
    if len(seen) > 2_000:
        seen = seen[:2_000] + "..."
    return f"timed out after {within_s:g}s waiting for {what}; {seen}"


def eventually(
    check: Callable[[], T],
    *,
    what: str = "condition",
    within_s: float = 90.0,
    every: float = 0.25,
    accept: Callable[[T], Any] = bool,
    retry_on: tuple[type[BaseException], ...] = (),
    describe: Callable[[Any], str] = repr,
) -> T:
    """Poll `check()` until `accept` holds on its value; return that value."""
    deadline = time.monotonic() + within_s
    last: Any = _UNSET
    error: BaseException | None = None
    while True:
        try:
            value = check()
        except retry_on as exc:
            error = exc
        else:
            if accept(value):
                return value
            last, error = value, None
        if time.monotonic() > deadline:
            raise EventuallyTimeout(_message(what, within_s, last, error, describe))
        time.sleep(every)


async def eventually_async(
    check: Callable[[], Awaitable[T] | T],
    *,
    what: str = "condition",
    within_s: float = 90.0,
    every: float = 0.25,
    accept: Callable[[T], Any] = bool,
    retry_on: tuple[type[BaseException], ...] = (),
    describe: Callable[[Any], str] = repr,
) -> T:
    """`eventually` for a coroutine: `check` may be async or plain; the wait does not block the loop."""
    deadline = time.monotonic() + within_s
    last: Any = _UNSET
    error: BaseException | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            error = exc
        else:
            if accept(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
            last, error = value, None
        if time.monotonic() > deadline:
            raise EventuallyTimeout(_message(what, within_s, last, error, describe))
        await asyncio.sleep(every)
