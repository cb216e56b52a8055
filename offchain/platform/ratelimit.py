"""Per-partner rate limits in Redis (the `limits` library), with RateLimit-* headers.

A moving window per partner and route class; limits are settings such as "600/minute". Every
answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds), and a
refusal is a 429 problem with `Retry-After`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from offchain.platform.problems import Problem

_TOO_MANY = "urn:caas:problem:rate-limited"


@dataclass(frozen=True)
class Quota:
    limit: int
    remaining: int
    reset_after_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after_s),
        }


class PartnerRateLimiter:
    def __init__(
        self, redis_url: str, limits_by_class: dict[str, str], key_prefix: str = "caas:ratelimit"
    ) -> None:
        # limits names its asyncio storages "async+<scheme>"; a unix socket is "redis+unix".
        if redis_url.startswith("unix://"):
            uri = "async+redis+unix://" + redis_url.removeprefix("unix://")
        else:
            uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
        self._storage = RedisStorage(uri, implementation="redispy", key_prefix=key_prefix)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items: dict[str, RateLimitItem] = {name: parse(spec) for name, spec in limits_by_class.items()}

    async def hit(self, route_class: str, partner_id: str) -> Quota:
        item = self._items[route_class]
        allowed = await self._limiter.hit(item, route_class, partner_id)
        stats = await self._limiter.get_window_stats(item, route_class, partner_id)
        quota = Quota(
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after_s=max(0, math.ceil(stats.reset_time - time.time())),
        )
        if not allowed:
            raise Problem(
                429,
                _TOO_MANY,
                title="Rate limit exceeded",
                detail=f"at most {item.amount} {route_class} requests per {item.GRANULARITY.name}",
                headers={**quota.headers(), "Retry-After": str(max(1, quota.reset_after_s))},
            )
        return quota
