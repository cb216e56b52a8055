"""The gateway's per-request machinery on real Redis: one-round-trip limiter, token cache."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import jwt
import pytest
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from offchain.platform import auth, ratelimit
from offchain.platform.problems import Problem
from offchain.platform.ratelimit import PartnerRateLimiter

pytestmark = pytest.mark.asyncio


async def test_limiter__counts_as_limits_library_reads_it(redis: Redis, redis_url: str):
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"
    limiter = PartnerRateLimiter({"read": "10/minute"}, key_prefix=prefix)
    partner = str(uuid.uuid4())
    quotas = [await limiter.hit(redis, "read", partner) for _ in range(4)]
    assert [q.remaining for q in quotas] == [9, 8, 7, 6]
    assert all(q.limit == 10 for q in quotas)
    assert all(0 < q.reset_after_s <= 120 for q in quotas)

    # The library itself, on the same Redis and prefix, sees our four hits in its own window.
    library = SlidingWindowCounterRateLimiter(
        RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix=prefix)
    )
    stats = await library.get_window_stats(parse("10/minute"), "read", partner)
    assert stats.remaining == 6
    # ... and what it adds, our limiter counts.
    assert await library.hit(parse("10/minute"), "read", partner)
    assert (await limiter.hit(redis, "read", partner)).remaining == 4


async def test_limiter__refuses_over_the_limit_with_retry_after(redis: Redis):
    limiter = PartnerRateLimiter({"write": "3/minute"}, key_prefix=f"test-rl-{uuid.uuid4().hex[:8]}")
    partner = str(uuid.uuid4())
    for _ in range(3):
        await limiter.hit(redis, "write", partner)
    with pytest.raises(Problem) as refused:
        await limiter.hit(redis, "write", partner)
    assert refused.value.status == 429
    assert refused.value.headers["RateLimit-Remaining"] == "0"
    assert int(refused.value.headers["Retry-After"]) >= 1
    # another partner has its own quota
    assert (await limiter.hit(redis, "write", str(uuid.uuid4()))).remaining == 2


async def _concurrent_hits(redis: Redis, limit: str, hits: int) -> list[bool]:
    """`hits` requests of one partner at once against `limit`: which were let through."""
    limiter = PartnerRateLimiter({"write": limit}, key_prefix=f"test-rl-{uuid.uuid4().hex[:8]}")
    partner = str(uuid.uuid4())

    async def one() -> bool:
        try:
            await limiter.hit(redis, "write", partner)
            return True
        except Problem:
            return False

    return list(await asyncio.gather(*(one() for _ in range(hits))))


async def test_limiter__concurrent_hits_never_exceed_the_limit(redis: Redis):
    results = await _concurrent_hits(redis, "25/minute", 60)
    assert results.count(True) == 25


async def test_limiter__previous_window_weighs_in_then_fades(redis: Redis):
    limiter = PartnerRateLimiter({"read": "4 per 2 second"}, key_prefix=f"test-rl-{uuid.uuid4().hex[:8]}")
    partner = str(uuid.uuid4())
    for _ in range(4):
        await limiter.hit(redis, "read", partner)
    with pytest.raises(Problem):
        await limiter.hit(redis, "read", partner)
    # A sliding window, not a fixed one: just after the window rolls over, the old window's
    # hits still count by how much of it overlaps; two windows later none do.
    await asyncio.sleep(2.2)
    assert (await limiter.hit(redis, "read", partner)).remaining < 3
    await asyncio.sleep(4.2)
    assert (await limiter.hit(redis, "read", partner)).remaining == 3


async def _counted(redis_url: str, prefix: str, spec: str, route_class: str, partner: str) -> int:
    """What the partner's window holds in Redis, as the `limits` library reads it."""
    library = SlidingWindowCounterRateLimiter(
        RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix=prefix)
    )
    stats = await library.get_window_stats(parse(spec), route_class, partner)
    return parse(spec).amount - stats.remaining


async def test_limiter__busy_partner_takes_blocks__headers_stay_exact(redis: Redis, redis_url: str):
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"
    spec = "100000/minute"  # blocks of up to 32 (1 % of the limit, capped)
    limiter = PartnerRateLimiter({"read": spec}, key_prefix=prefix)
    partner = str(uuid.uuid4())
    calls = 0
    script = limiter._script(redis)

    async def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)

    limiter._script = lambda _redis: counting  # type: ignore[method-assign]
    quotas = [await limiter.hit(redis, "read", partner) for _ in range(300)]
    # what the partner is told is exact: every request spent one
    assert [q.remaining for q in quotas] == [100_000 - n for n in range(1, 301)]
    # Redis saw far fewer calls, and holds at most a block and a half unspent
    assert calls < 30
    counted = await _counted(redis_url, prefix, spec, "read", partner)
    assert 300 <= counted <= 300 + 48


async def test_limiter__busy_partner_never_waits_for_redis__blocks_topped_up_ahead(
    redis: Redis, redis_url: str
):
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"
    spec = "100000/minute"
    limiter = PartnerRateLimiter({"read": spec}, key_prefix=prefix)
    partner = str(uuid.uuid4())
    waits = 0
    quotas = []

    async def hit() -> None:
        nonlocal waits
        held = limiter._blocks.get(("read", partner))
        if held is None or not held.usable(time.monotonic()):
            waits += 1  # nothing to spend: this request waits for Redis
        quotas.append(await limiter.hit(redis, "read", partner))

    for _ in range(100):  # blocks grow to their ceiling
        await hit()
    waits, quotas = 0, []
    for _ in range(400):
        await hit()
        await asyncio.sleep(0.001)  # the request's own work: the fetch ahead's round trip fits in it
    # the next block landed before each one ran out: no request waited for Redis
    assert waits == 0
    # what the partner is told stays exact, and Redis holds at most a block and a half unspent
    assert [q.remaining for q in quotas] == [100_000 - n for n in range(101, 501)]
    counted = await _counted(redis_url, prefix, spec, "read", partner)
    assert 500 <= counted <= 500 + 48


async def test_limiter__block_that_comes_back_late_is_still_spent(redis_url: str, monkeypatch):
    """Redis answering slower than a block lives (an overloaded host) must not leave the waiting
    requests fetching, or spinning, forever: each landed block serves them. Run on a loop of its
    own in a thread, so a limiter that never returns fails the test instead of hanging it."""
    monkeypatch.setattr(ratelimit, "BLOCK_TTL_S", 0.05)
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"
    spec = "100000/minute"
    partner = str(uuid.uuid4())
    answered: list[int] = []

    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        limiter = PartnerRateLimiter({"read": spec}, key_prefix=prefix)
        script = limiter._script(client)

        async def slow(*args, **kwargs):
            result = await script(*args, **kwargs)
            await asyncio.sleep(0.1)  # twice as long as a block lives
            return result

        limiter._script = lambda _redis: slow  # type: ignore[method-assign]
        try:
            for _ in range(3):
                quotas = await asyncio.gather(*(limiter.hit(client, "read", partner) for _ in range(20)))
                answered.extend(q.remaining for q in quotas)
        finally:
            await client.aclose()

    worker = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    worker.start()
    await asyncio.to_thread(worker.join, 20)
    assert not worker.is_alive(), f"the limiter never answered ({len(answered)} of 60 did)"
    assert sorted(answered, reverse=True) == [100_000 - n for n in range(1, 61)]


async def test_limiter__blocks_never_let_more_than_the_limit_through(redis: Redis):
    results = await _concurrent_hits(redis, "400/minute", 600)
    assert results.count(True) == 400  # blocks near the limit shrink to what is left


async def test_limiter__quiet_partner_is_counted_one_by_one(redis: Redis, redis_url: str):
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"
    spec = "100000/minute"
    limiter = PartnerRateLimiter({"read": spec}, key_prefix=prefix)
    partner = str(uuid.uuid4())
    for _ in range(3):
        await limiter.hit(redis, "read", partner)
        await asyncio.sleep(0.55)  # slower than a block's half-life: no block is taken
    assert await _counted(redis_url, prefix, spec, "read", partner) == 3


SECRET = "test-secret-for-the-token-cache-0001"


async def test_token_cache__verifies_once_until_expiry():
    verifier = auth.JwtVerifier(hs256_secret=SECRET, cache_s=60)
    partner = uuid.uuid4()
    token = auth.issue_token(SECRET, partner_id=partner)
    calls = 0
    original = jwt.decode

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    jwt.decode = counting
    try:
        first = await verifier.verify(token)
        second = await verifier.verify(token)
    finally:
        jwt.decode = original
    assert first == second and first.partner_id == partner
    assert calls == 1


async def test_token_cache__expired_token_is_refused_even_if_cached():
    verifier = auth.JwtVerifier(hs256_secret=SECRET, cache_s=60, leeway_s=0)
    token = auth.issue_token(SECRET, partner_id=uuid.uuid4(), ttl_s=1)
    await verifier.verify(token)
    await asyncio.sleep(
        max(0.0, (jwt.decode(token, options={"verify_signature": False})["exp"]) - time.time()) + 1.1
    )
    with pytest.raises(Problem) as refused:
        await verifier.verify(token)
    assert refused.value.status == 401


async def test_token_cache__bad_token_is_never_cached():
    verifier = auth.JwtVerifier(hs256_secret=SECRET)
    forged = auth.issue_token("another-secret-of-at-least-32-bytes!", partner_id=uuid.uuid4())
    for _ in range(2):
        with pytest.raises(Problem):
            await verifier.verify(forged)
