"""Redis client factory (redis.asyncio). Accepts redis://, rediss:// and unix:// URLs."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from offchain.platform.settings import RedisSettings


def create_redis(settings: RedisSettings, *, client_name: str = "caas") -> Redis:
    if not settings.url:
        raise ValueError("REDIS_URL is not set")
    return Redis.from_url(
        settings.url,
        decode_responses=True,
        client_name=client_name,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        # Bounded: three retries with capped backoff, then the caller sees the error.
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        health_check_interval=30,
    )
