"""Outbox -> Redis Streams: the relay loop, and replay of a range of the outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select, update

from offchain.eventbus.messages import StreamNames, encode
from offchain.persistence.models import OutboxMessage
from offchain.platform.db import Database
from offchain.platform.logging import get_logger
from offchain.platform.settings import EventBusSettings
from offchain.platform.stopping import wait_or_stop

log = get_logger(__name__)

_outbox = OutboxMessage.__table__
_COLUMNS = (
    _outbox.c.id,
    _outbox.c.topic,
    _outbox.c.key,
    _outbox.c.payload,
    _outbox.c.headers,
    _outbox.c.partner_id,
    _outbox.c.created_at,
)


async def send_rows(redis: Redis, names: StreamNames, rows: Sequence[Any], *, maxlen: int) -> None:
    """XADD rows (of _COLUMNS) to their topic streams in one round trip (pipeline, no MULTI)."""
    pipe = redis.pipeline(transaction=False)
    for row in rows:
        fields = encode(
            outbox_id=row.id,
            topic=row.topic,
            payload=row.payload,
            key=row.key,
            partner_id=row.partner_id,
            headers=row.headers,
            created_at=row.created_at,
        )
        # approximate trimming is O(1) amortised; the outbox remains the full history
        pipe.xadd(names.topic(row.topic), fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    await pipe.execute()


async def relay_batch(
    db: Database, redis: Redis, names: StreamNames, *, batch: int = 500, maxlen: int = 100_000
) -> int:
    """Publish up to `batch` unpublished rows; returns how many.

    SKIP LOCKED lets several relays run side by side without publishing a row twice. A crash
    between XADD and COMMIT publishes those rows again on the next run: delivery is
    at-least-once, which is why events carry their outbox id for consumers to dedupe on.
    """
    async with db.worker_session() as session:
        rows = (
            await session.execute(
                select(*_COLUMNS)
                .where(_outbox.c.published_at.is_(None))
                .order_by(_outbox.c.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return 0
        await send_rows(redis, names, rows, maxlen=maxlen)
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([row.id for row in rows]))
            .values(published_at=func.now())
        )
    return len(rows)


async def replay(
    db: Database,
    redis: Redis,
    names: StreamNames,
    *,
    first_id: int,
    last_id: int,
    topics: Sequence[str] | None = None,
    chunk: int = 1_000,
    maxlen: int = 100_000,
) -> int:
    """Send outbox rows first_id..last_id (inclusive) to their streams again; returns the count.

    Idempotent consumers skip what they already handled, so a replay fills gaps (a consumer
    group created late, a trimmed stream, a wiped Redis) without doubling effects.
    """
    sent = 0
    cursor = first_id - 1
    while True:
        async with db.worker_session() as session:
            query = (
                select(*_COLUMNS)
                .where(_outbox.c.id > cursor, _outbox.c.id <= last_id)
                .order_by(_outbox.c.id)
                .limit(chunk)
            )
            if topics:
                query = query.where(_outbox.c.topic.in_(list(topics)))
            rows = (await session.execute(query)).all()
            if not rows:
                return sent
            await send_rows(redis, names, rows, maxlen=maxlen)
            # rows the relay had not reached yet are published now
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_([row.id for row in rows]))
                .where(OutboxMessage.published_at.is_(None))
                .values(published_at=func.now())
            )
        sent += len(rows)
        cursor = rows[-1].id


async def run_relay(db: Database, redis: Redis, settings: EventBusSettings, stop: asyncio.Event) -> None:
    """Relay until `stop` is set: drain while there is work, poll every relay_idle_s when idle."""
    names = StreamNames(settings.stream_prefix)
    failures = 0
    while not stop.is_set():
        try:
            sent = await relay_batch(
                db, redis, names, batch=settings.relay_batch, maxlen=settings.stream_maxlen
            )
            failures = 0
        except Exception:
            failures += 1
            log.exception("outbox.relay_failed", attempt=failures)
            sent = 0
        if sent >= settings.relay_batch:
            continue
        # bounded backoff while PostgreSQL or Redis is away
        delay = settings.relay_idle_s if not failures else min(0.5 * 2**failures, 10.0)
        await wait_or_stop(stop, delay)
