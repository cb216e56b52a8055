"""Failed authentications limited per client address (docs/SECURITY.md, "limits at the edge").

Every 401 an authenticating dependency raises is counted in Redis against the client's address
(the `limits` sliding window of offchain.platform.ratelimit, `LIMITS__FAILED_AUTH`). Past the
limit the answer is 429 with Retry-After, and until then this process refuses that address
without verifying anything, so token guessing costs the guesser, not the platform.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from redis.asyncio import Redis

from offchain.platform.problems import Problem
from offchain.platform.ratelimit import PartnerRateLimiter

_TOO_MANY = "urn:caas:problem:too-many-failed-authentications"
_CLASS = "auth_failure"
# addresses remembered as blocked per process (a flood of addresses cannot grow it past this)
_MAX_BLOCKED = 10_000


class FailedAuthLimiter:
    def __init__(self, limit: str, *, key_prefix: str = "caas:authfail") -> None:
        self._limiter = PartnerRateLimiter({_CLASS: limit}, key_prefix=key_prefix)
        self._blocked: dict[str, float] = {}

    def _problem(self, retry_after_s: int) -> Problem:
        return Problem(
            429,
            _TOO_MANY,
            title="Too many failed authentications",
            detail="this address sent too many invalid credentials; wait before trying again",
            headers={"Retry-After": str(max(1, retry_after_s))},
        )

    def refuse_if_blocked(self, address: str) -> None:
        until = self._blocked.get(address)
        if until is None:
            return
        left = until - time.monotonic()
        if left > 0:
            raise self._problem(int(left) + 1)
        del self._blocked[address]

    async def failed(self, redis: Redis | None, address: str) -> None:
        """Count one failure; raises the 429 once the address is past its limit."""
        if redis is None:
            return
        try:
            await self._limiter.hit(redis, _CLASS, address)
        except Problem as refusal:
            retry = int((refusal.headers or {}).get("Retry-After", "1"))
            if len(self._blocked) >= _MAX_BLOCKED:
                self._blocked.clear()
            self._blocked[address] = time.monotonic() + retry
            raise self._problem(retry) from None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@asynccontextmanager
async def counted_failures(request: Request) -> AsyncIterator[None]:
    """Around a verification: refuse a blocked address first, count a 401 that comes out."""
    limiter: FailedAuthLimiter | None = getattr(request.app.state, "auth_failures", None)
    if limiter is None:
        yield
        return
    address = client_address(request)
    limiter.refuse_if_blocked(address)
    try:
        yield
    except Problem as problem:
        if problem.status == 401:
            resources = getattr(request.app.state, "resources", None)
            await limiter.failed(getattr(resources, "redis", None), address)
        raise
