"""Outbox -> Redis Streams against the real PostgreSQL and Redis: at-least-once delivery,
effects exactly once through idempotent consumers, dead letters, replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.eventbus import (
    Event,
    StreamConsumer,
    StreamNames,
    idempotent,
    publish,
    publish_once,
    relay_batch,
    replay,
)
from offchain.persistence.models import AuditLogEntry, OutboxMessage
from offchain.platform.db import Database
from offchain.platform.settings import Settings

pytestmark = pytest.mark.asyncio


class SimulatedCrash(BaseException):
    """Escapes the consumer like a dying process would: no ack, no failure bookkeeping."""


def _topic() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"


async def _publish(db: Database, topic: str, count: int = 1) -> list[int]:
    async with db.worker_session() as session:
        return [await publish(session, topic, {"n": n}, key=f"k{n}") for n in range(count)]


async def _relay_all(db: Database, redis: Redis, names: StreamNames) -> None:
    while await relay_batch(db, redis, names, batch=200):
        pass


async def _record_effect(session: AsyncSession, event: Event) -> None:
    """The handler's effect: one audit row per handled event, in the handler's transaction."""
    await session.execute(
        insert(AuditLogEntry).values(
            actor="eventbus-test", action=event.topic, subject_type="event", subject_id=str(event.id)
        )
    )


async def _effects(db: Database, topic: str) -> dict[str, int]:
    async with db.worker_session() as session:
        rows = await session.execute(
            select(AuditLogEntry.subject_id, func.count())
            .where(AuditLogEntry.action == topic)
            .group_by(AuditLogEntry.subject_id)
        )
        return {subject: count for subject, count in rows.all()}


async def _pending(redis: Redis, names: StreamNames, topic: str, group: str) -> int:
    return int((await redis.xpending(names.topic(topic), group))["pending"])


def _consumer(
    redis: Redis,
    names: StreamNames,
    topic: str,
    group: str,
    handler: Callable[[Event], Awaitable[None]],
    name: str = "c1",
    max_deliveries: int = 3,
) -> StreamConsumer:
    return StreamConsumer(
        redis,
        group=group,
        name=name,
        topics=[topic],
        handler=handler,
        names=names,
        max_deliveries=max_deliveries,
        retry_idle_ms=50,
        block_ms=50,
    )


@pytest.fixture
def names(settings: Settings) -> StreamNames:
    return StreamNames(settings.events.stream_prefix)


async def test_publish_belongs_to_the_callers_transaction(db: Database) -> None:
    topic = _topic()
    with pytest.raises(RuntimeError):
        async with db.worker_session() as session:
            await publish(session, topic, {"n": 1})
            raise RuntimeError("the business change failed")
    partner = uuid.uuid4()
    async with db.partner_session(partner) as session:
        event_id = await publish(session, topic, {"n": 2})  # no partner_id: the session's

    async with db.worker_session() as session:
        rows = (
            (await session.execute(select(OutboxMessage).where(OutboxMessage.topic == topic))).scalars().all()
        )
    assert [(row.id, row.payload, row.partner_id) for row in rows] == [(event_id, {"n": 2}, partner)]


async def test_publish_once__first_claim_publishes__repeats_and_rollbacks_do_not(db: Database) -> None:
    topic, consumer, event_id = _topic(), f"tests.once.{uuid.uuid4().hex}", "evt-1"
    with pytest.raises(RuntimeError):
        async with db.worker_session() as session:
            assert await publish_once(session, topic, {"n": 0}, consumer=consumer, event_id=event_id)
            raise RuntimeError("rolled back: the claim goes with it")

    async def once(n: int) -> int | None:
        async with db.worker_session() as session:
            return await publish_once(session, topic, {"n": n}, consumer=consumer, event_id=event_id, key="k")

    answers = await asyncio.gather(*(once(n) for n in range(1, 6)))  # concurrently
    async with db.worker_session() as session:
        rows = (
            (await session.execute(select(OutboxMessage).where(OutboxMessage.topic == topic))).scalars().all()
        )
    published = [answer for answer in answers if answer is not None]
    assert len(published) == 1
    assert [(row.id, row.key, row.partner_id) for row in rows] == [(published[0], "k", None)]
    assert rows[0].payload == {"n": answers.index(published[0]) + 1}


async def test_concurrent_relays_publish_each_row_once(
    db: Database, redis: Redis, names: StreamNames, settings: Settings
) -> None:
    topic = _topic()
    ids = await _publish(db, topic, 120)
    other = Database.from_settings(settings.database)  # a second relay with its own pool
    try:

        async def drain(database: Database) -> None:
            while await relay_batch(database, redis, names, batch=25):
                pass

        await asyncio.gather(drain(db), drain(other))
    finally:
        await other.dispose()

    entries = await redis.xrange(names.topic(topic))
    published = [int(fields["outbox_id"]) for _, fields in entries]
    assert sorted(published) == ids  # every row, none twice
    assert json.loads(entries[0][1]["payload"]) == {"n": 0} and entries[0][1]["key"] == "k0"
    async with db.worker_session() as session:
        unpublished = await session.execute(
            select(func.count()).where(OutboxMessage.topic == topic, OutboxMessage.published_at.is_(None))
        )
        assert unpublished.scalar_one() == 0


@pytest.mark.parametrize("crash_point", ["after_commit", "before_commit"])
async def test_crash_before_ack_is_redelivered_and_handled_once(
    db: Database, redis: Redis, names: StreamNames, crash_point: str
) -> None:
    topic, group = _topic(), "ledger"
    consumer_name = f"ledger.{topic}"
    [event_id] = await _publish(db, topic)
    await _relay_all(db, redis, names)
    handled = idempotent(db, consumer_name, _record_effect)

    async def crashing(event: Event) -> None:
        if crash_point == "after_commit":
            await handled(event)  # effects and the consumed mark are committed ...
            raise SimulatedCrash  # ... and the process dies before XACK
        async with db.worker_session() as session:
            await _record_effect(session, event)
            raise SimulatedCrash  # dies mid-transaction: rolled back

    first = _consumer(redis, names, topic, group, crashing, name="replica-1")
    await first.setup()
    with pytest.raises(SimulatedCrash):
        await first.poll_once()
    assert await _pending(redis, names, topic, group) == 1

    calls: list[int] = []

    async def survivor(event: Event) -> None:
        calls.append(event.deliveries)
        await handled(event)

    second = _consumer(redis, names, topic, group, survivor, name="replica-2")
    await asyncio.sleep(0.1)  # past retry_idle_ms: replica-2 takes the message over
    assert await second.poll_once() == 1

    assert calls == [2]
    assert await _effects(db, topic) == {str(event_id): 1}
    assert await _pending(redis, names, topic, group) == 0


CHILD = textwrap.dedent(
    """
    import asyncio, os, signal
    from sqlalchemy import insert
    from offchain.eventbus import StreamConsumer, StreamNames, idempotent
    from offchain.persistence.models import AuditLogEntry
    from offchain.platform.db import Database
    from offchain.platform.redis import create_redis
    from offchain.platform.settings import Settings

    async def main():
        settings = Settings()
        db = Database.from_settings(settings.database)
        redis = create_redis(settings.redis)
        topic = os.environ["TEST_TOPIC"]

        async def effect(session, event):
            await session.execute(insert(AuditLogEntry).values(
                actor="eventbus-test", action=event.topic, subject_type="event", subject_id=str(event.id)))

        handled = idempotent(db, "kill9." + topic, effect)

        async def die_before_ack(event):
            await handled(event)
            os.kill(os.getpid(), signal.SIGKILL)

        consumer = StreamConsumer(redis, group="kill9", name="doomed", topics=[topic],
                                  handler=die_before_ack, names=StreamNames(settings.events.stream_prefix))
        await consumer.setup()
        await consumer.poll_once(block_ms=5000)

    asyncio.run(main())
    """
)


async def test_consumer_killed_before_ack_then_recovered(
    db: Database, redis: Redis, names: StreamNames, settings: Settings
) -> None:
    topic = _topic()
    [event_id] = await _publish(db, topic)
    await _relay_all(db, redis, names)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database.url or "",
        "REDIS_URL": settings.redis.url or "",
        "EVENTS__STREAM_PREFIX": names.prefix,
        "TEST_TOPIC": topic,
    }
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CHILD], env=env, capture_output=True, timeout=60
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    assert await _effects(db, topic) == {str(event_id): 1}
    assert await _pending(redis, names, topic, "kill9") == 1

    calls: list[Event] = []

    async def effect(session: AsyncSession, event: Event) -> None:
        calls.append(event)
        await _record_effect(session, event)

    recovery = _consumer(redis, names, topic, "kill9", idempotent(db, "kill9." + topic, effect), name="heir")
    await asyncio.sleep(0.1)
    assert await recovery.poll_once() == 1
    assert calls == []  # already handled by the killed consumer: skipped, acknowledged
    assert await _effects(db, topic) == {str(event_id): 1}
    assert await _pending(redis, names, topic, "kill9") == 0


async def test_poison_message_is_dead_lettered_and_does_not_block(
    db: Database, redis: Redis, names: StreamNames
) -> None:
    topic, group = _topic(), "notifications"
    poison_id, good_id = await _publish(db, topic, 2)
    await _relay_all(db, redis, names)
    attempts: dict[int, int] = {}

    async def handler(event: Event) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if event.id == poison_id:
            raise ValueError("cannot parse this payload")

    consumer = _consumer(redis, names, topic, group, handler, max_deliveries=3)
    await consumer.setup()
    deadline = time.monotonic() + 10
    while await redis.xlen(names.dead_letter(group)) == 0:
        assert time.monotonic() < deadline, "poison message never dead-lettered"
        await consumer.poll_once()
        await asyncio.sleep(0.06)

    assert attempts == {poison_id: 3, good_id: 1}
    [(_, dead)] = await redis.xrange(names.dead_letter(group))
    assert int(dead["outbox_id"]) == poison_id
    assert dead["dead_letter_deliveries"] == "3"
    assert "cannot parse this payload" in dead["dead_letter_error"]
    assert await _pending(redis, names, topic, group) == 0


async def test_message_that_keeps_killing_its_consumer_is_dead_lettered(
    db: Database, redis: Redis, names: StreamNames
) -> None:
    topic, group = _topic(), "analytics"
    await _publish(db, topic)
    await _relay_all(db, redis, names)

    async def fatal(event: Event) -> None:
        raise SimulatedCrash

    consumer = _consumer(redis, names, topic, group, fatal, max_deliveries=2)
    await consumer.setup()
    for _ in range(2):  # two deliveries, each taking the "process" down
        with pytest.raises(SimulatedCrash):
            await consumer.poll_once()
        await asyncio.sleep(0.06)
    await consumer.poll_once()  # third delivery: over the limit, parked without running it

    [(_, dead)] = await redis.xrange(names.dead_letter(group))
    assert dead["dead_letter_error"] == "crashed its consumer"
    assert await _pending(redis, names, topic, group) == 0


async def test_replay_resends_a_range_and_idempotent_consumers_skip_it(
    db: Database, redis: Redis, names: StreamNames
) -> None:
    topic, group = _topic(), "ledger"
    ids = await _publish(db, topic, 5)
    await _relay_all(db, redis, names)
    runs: list[int] = []

    async def effect(session: AsyncSession, event: Event) -> None:
        runs.append(event.id)
        await _record_effect(session, event)

    consumer = _consumer(redis, names, topic, group, idempotent(db, f"ledger.{topic}", effect))
    await consumer.setup()
    while await consumer.poll_once():
        pass
    assert runs == ids

    assert await replay(db, redis, names, first_id=ids[1], last_id=ids[3], topics=[topic]) == 3
    replayed = [int(f["outbox_id"]) for _, f in await redis.xrange(names.topic(topic))]
    assert replayed == [*ids, *ids[1:4]]

    while await consumer.poll_once():
        pass
    assert runs == ids  # delivered again, handled once
    assert await _effects(db, topic) == {str(i): 1 for i in ids}
    assert await _pending(redis, names, topic, group) == 0

    late = _consumer(redis, names, topic, "late-joiner", lambda e: asyncio.sleep(0))
    await late.setup()  # a new group starts from the stream's beginning
    assert await late.poll_once() == 8


async def test_replay_publishes_rows_the_relay_has_not_reached(
    db: Database, redis: Redis, names: StreamNames
) -> None:
    topic = _topic()
    ids = await _publish(db, topic, 3)
    assert await replay(db, redis, names, first_id=ids[0], last_id=ids[-1], topics=[topic]) == 3
    async with db.worker_session() as session:
        unpublished = await session.execute(
            select(func.count()).where(OutboxMessage.topic == topic, OutboxMessage.published_at.is_(None))
        )
        assert unpublished.scalar_one() == 0


async def test_a_batch_handler_takes_what_was_read_at_once_and_acks_it(
    db: Database, redis: Redis, names: StreamNames
) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    batches: list[list[int]] = []
    singles: list[int] = []

    async def batch_handler(events: list[Event]) -> None:
        batches.append([event.id for event in events])
        async with db.worker_session() as session:
            for event in events:
                await _record_effect(session, event)

    async def handler(event: Event) -> None:
        singles.append(event.id)

    consumer = _consumer(redis, names, topic, group, handler)
    consumer.batch_handler = batch_handler
    await consumer.setup()
    ids = await _publish(db, topic, 7)
    await _relay_all(db, redis, names)
    assert await consumer.poll_once(block_ms=50) == 7
    assert batches == [ids] and singles == []
    assert await _effects(db, topic) == {str(i): 1 for i in ids}
    assert await _pending(redis, names, topic, group) == 0


async def test_a_failed_batch_is_retried_one_by_one_and_nothing_is_lost(
    db: Database, redis: Redis, names: StreamNames
) -> None:
    """The batch's transaction rolls back (a poison event, a deadlock, a crash of the handler):
    every event then goes through the one-by-one handler; the poison one alone stays pending."""
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    ids = await _publish(db, topic, 5)
    poison = ids[2]

    async def batch_handler(events: list[Event]) -> None:
        async with db.worker_session() as session:
            for event in events:
                await _record_effect(session, event)  # written, then rolled back with the batch
                if event.id == poison:
                    raise RuntimeError("poison")

    async def handler(event: Event) -> None:
        if event.id == poison:
            raise RuntimeError("poison")
        async with db.worker_session() as session:
            await _record_effect(session, event)

    consumer = _consumer(redis, names, topic, group, handler)
    consumer.batch_handler = batch_handler
    await consumer.setup()
    await _relay_all(db, redis, names)
    await consumer.poll_once(block_ms=50)
    assert await _effects(db, topic) == {str(i): 1 for i in ids if i != poison}
    assert await _pending(redis, names, topic, group) == 1
