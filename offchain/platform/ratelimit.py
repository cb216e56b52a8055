"""Per-partner rate limits in Redis, with RateLimit-* headers, in one round trip per request.

A sliding-window counter per partner and route class (the `limits` library's algorithm and key
layout: the current window's count plus the previous window's, weighted by how much of it still
overlaps). Limits are settings in `limits` notation such as "600/minute", parsed by `limits`.

`limits` itself needs two calls for what an API answer needs (`hit`, then `get_window_stats`
for the headers); the profile showed those two round trips at ~30 % of a cached read. So the
check-and-count and the figures for the headers are one Lua script here: one EVALSHA, atomic.

Every answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds),
and a refusal is a 429 problem with `Retry-After`.

A busy partner does not pay that round trip on every request: a process takes a block of
requests from the partner's window at once (counted in Redis like any hit, so every process and
`limits` itself see them) and spends it locally for up to a second. Blocks start at one request
and double only while each block is used up within its second, up to 1 % of the limit (32 at
most), so a quiet partner is counted exactly, small limits always are, and what a block can
overcount when traffic stops is bounded by that 1 %. Near the limit Redis grants what is left,
down to the one request asked for.

The next block is fetched ahead: once half of a block of four or more is spent, one background
call takes it and adds it to what is left, so a busy partner's requests do not stop for that
round trip. One fetch per partner and class is in flight at a time, and every request that finds
the block spent waits for that one. A process so holds at most half a block more than before
(~1.5 % of the limit, 48 requests at most).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from offchain.platform.problems import Problem

_TOO_MANY = "urn:caas:problem:rate-limited"

# KEYS[1] previous window, KEYS[2] current window; ARGV limit, window (ms), cost (what the
# request needs), block (what the caller would like to take: >= cost).
# Returns {granted, previous_count, previous_ttl_ms, current_count, current_ttl_ms} after the hit;
# granted is 0 (refused) or between cost and block, as much as the window still allows.
_SLIDING_WINDOW_HIT = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local block = tonumber(ARGV[4])

local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl > 0 and current_ttl < expiry then
    -- the current window has ended: it becomes the previous one
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
end

local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
local previous_ttl = math.max(tonumber(redis.call('pttl', KEYS[1])), 0)
local current_count = tonumber(redis.call('get', KEYS[2])) or 0
current_ttl = math.max(tonumber(redis.call('pttl', KEYS[2])), 0)

local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
if need > limit or weighted + need > limit then
    return {0, previous_count, previous_ttl, current_count, current_ttl}
end
local cost = math.min(block, limit - weighted)
if redis.call('exists', KEYS[2]) == 1 then
    current_count = redis.call('incrby', KEYS[2], cost)
else
    redis.call('set', KEYS[2], cost, 'PX', expiry * 2)
    current_count = cost
    current_ttl = expiry * 2
end
return {cost, previous_count, previous_ttl, current_count, current_ttl}
"""

# A block is spent within this time or its rest is left unused (and the next block is smaller).
BLOCK_TTL_S = 1.0
MAX_BLOCK = 32
# blocks this big are fetched ahead when half spent; smaller ones belong to partners too quiet to wait
FETCH_AHEAD_FROM = 4


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

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The same, as an ASGI answer carries them."""
        return [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]


def quota_headers(scope: MutableMapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The RateLimit-* headers of the quota a partner request was counted against (the
    gateway's dependency leaves it in the request's state); none for any other request."""
    quota = scope.get("state", {}).get("rate_quota")
    return [] if quota is None else quota.raw_headers()


def window_quota(
    item: RateLimitItem, previous_count: int, previous_ttl_ms: int, current_count: int, current_ttl_ms: int
) -> Quota:
    """Remaining and reset as `limits`' SlidingWindowCounterRateLimiter.get_window_stats says."""
    expiry_ms = item.get_expiry() * 1000
    weighted = previous_count * previous_ttl_ms / expiry_ms + current_count
    remaining = max(0, item.amount - math.floor(weighted))
    reset_ms = math.inf
    if previous_count:
        # the previous window's weight drops by one request every expiry / previous_count
        reset_ms = previous_ttl_ms % (expiry_ms / previous_count)
    if current_count and current_ttl_ms > 0:
        # until the current window ends (its key lives two windows); `limits` says 0 at the
        # very first hit, where a whole window is the honest answer
        reset_ms = min(reset_ms, (current_ttl_ms - 1) % expiry_ms + 1)
    reset_s = 0 if math.isinf(reset_ms) else math.ceil(reset_ms / 1000)
    return Quota(limit=item.amount, remaining=remaining, reset_after_s=reset_s)


@dataclass
class _Block:
    """Requests already counted in Redis for one partner and route class, not yet spent here."""

    left: int
    size: int
    quota: Quota  # the window as Redis left it when the block was taken
    taken_at: float

    def usable(self, now: float) -> int:
        return self.left if now - self.taken_at < BLOCK_TTL_S else 0

    def spend(self, cost: int, now: float) -> Quota | None:
        if self.usable(now) < cost:
            return None
        self.left -= cost
        elapsed = math.floor(now - self.taken_at)
        return Quota(
            limit=self.quota.limit,
            remaining=self.quota.remaining + self.left,  # counted, but still the partner's
            reset_after_s=max(0, self.quota.reset_after_s - elapsed),
        )

    def half_spent(self) -> bool:
        return self.size >= FETCH_AHEAD_FROM and self.left <= self.size // 2


@dataclass(frozen=True)
class _Refusal:
    """What a fetch that Redis refused tells every request that waited for it."""

    item: RateLimitItem
    route_class: str
    quota: Quota

    def problem(self) -> Problem:
        return Problem(
            429,
            _TOO_MANY,
            title="Rate limit exceeded",
            detail=f"at most {self.item.amount} {self.route_class} requests per {self.item.GRANULARITY.name}",
            headers={**self.quota.headers(), "Retry-After": str(max(1, self.quota.reset_after_s))},
        )


class PartnerRateLimiter:
    """Counts against the Redis client the service already holds (given per call: the client
    is opened in the app's lifespan, after the limiter is configured)."""

    def __init__(self, limits_by_class: dict[str, str], key_prefix: str = "caas:ratelimit") -> None:
        self._prefix = key_prefix
        self._items: dict[str, RateLimitItem] = {name: parse(spec) for name, spec in limits_by_class.items()}
        self._scripts: dict[int, AsyncScript] = {}
        self._blocks: dict[tuple[str, str], _Block] = {}
        # At most one fetch in flight per partner and class, shared by every request that finds
        # the block spent: they all wake when it lands (a lock would hand the block over one
        # waiter per loop iteration, and a fetch started ahead would queue behind them all).
        self._fetches: dict[tuple[str, str], asyncio.Task[_Refusal | None]] = {}

    def _script(self, redis: Redis) -> AsyncScript:
        # EVALSHA, falling back to EVAL once per server that has not cached the script yet
        script = self._scripts.get(id(redis))
        if script is None:
            script = self._scripts[id(redis)] = redis.register_script(_SLIDING_WINDOW_HIT)
        return script

    def _keys(self, item: RateLimitItem, route_class: str, partner_id: str) -> list[str]:
        # `limits`' RedisStorage layout (its limiters read these counters as their own); both
        # windows share a hash tag, so a Redis Cluster keeps them on one node.
        current = f"{self._prefix}:{{{item.key_for(route_class, partner_id)}}}"
        return [f"{current}/-1", current]

    def _next_block_size(self, item: RateLimitItem, held: _Block | None, now: float) -> int:
        """Double while blocks are used up within half their time (at that pace the next one,
        twice as big, is still spent in time), keep the size while they are used within it,
        otherwise count one request at a time. Fetched ahead, half a block is judged on a
        quarter of the time."""
        ceiling = max(1, min(MAX_BLOCK, item.amount // 100))
        if held is None:
            return 1
        spent_share = 1.0 if not held.left else 0.5
        elapsed = now - held.taken_at
        if elapsed < BLOCK_TTL_S * spent_share / 2:
            return min(ceiling, held.size * 2)
        return held.size if held.left and elapsed < BLOCK_TTL_S else 1

    async def hit(self, redis: Redis, route_class: str, partner_id: str, cost: int = 1) -> Quota:
        key = (route_class, partner_id)
        while True:
            held = self._blocks.get(key)
            quota = None if held is None else held.spend(cost, time.monotonic())
            if quota is not None:
                if held is not None and held.half_spent():
                    self._fetch(redis, key, cost)  # ahead: the next block lands before this one runs out
                return quota
            # shielded: a request that goes away does not cancel what the others wait for
            refusal = await asyncio.shield(self._fetch(redis, key, cost))
            if refusal is not None:
                raise refusal.problem()
            # the block landed; requests that arrived first may have spent it: try again

    def _fetch(self, redis: Redis, key: tuple[str, str], cost: int) -> asyncio.Task[_Refusal | None]:
        fetch = self._fetches.get(key)
        # A fetch that has landed but whose done-callback has not run yet is not shared: awaiting
        # a finished task does not yield, so a request that found its block already spent would
        # loop here without ever letting the callback (or anything else) run.
        if fetch is None or fetch.done():
            fetch = self._fetches[key] = asyncio.create_task(self._take_block(redis, key, cost))
            fetch.add_done_callback(lambda done: self._fetched(key, done))
        return fetch

    def _fetched(self, key: tuple[str, str], fetch: asyncio.Task[_Refusal | None]) -> None:
        if self._fetches.get(key) is fetch:
            del self._fetches[key]
        # A failed fetch ahead has no one waiting: the next request that finds the block spent
        # fetches again and meets the error itself; retrieved here so it is not logged as lost.
        if not fetch.cancelled():
            fetch.exception()

    async def _take_block(self, redis: Redis, key: tuple[str, str], cost: int) -> _Refusal | None:
        """Count the next block in Redis and add it to what is left here; a refusal if Redis
        would not count even `cost` more."""
        route_class, partner_id = key
        item = self._items[route_class]
        now = time.monotonic()
        wanted = max(cost, self._next_block_size(item, self._blocks.get(key), now))
        granted, *window = await self._script(redis)(
            keys=self._keys(item, route_class, partner_id),
            args=[item.amount, item.get_expiry() * 1000, cost, wanted],
        )
        quota = window_quota(item, *(int(value) for value in window))
        held = self._blocks.get(key)
        left = 0 if held is None else held.usable(time.monotonic())  # spent while Redis answered
        if not int(granted):
            if not left:
                self._blocks.pop(key, None)
            return _Refusal(item, route_class, quota)
        # Its second runs from when it landed, not from when it was asked for: a block that took
        # longer than that to come back would otherwise land spent, and the requests waiting for
        # it would fetch again and again under exactly the load that slowed Redis down.
        self._blocks[key] = _Block(
            left=left + int(granted), size=int(granted), quota=quota, taken_at=time.monotonic()
        )
        return None
