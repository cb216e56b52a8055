"""The one way a background job waits: `seconds`, or less when the service is stopping."""

from __future__ import annotations

import asyncio
from contextlib import suppress


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; True when it is set (the caller should return)."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
