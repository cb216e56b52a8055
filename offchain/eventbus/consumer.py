"""Consumer side: Redis Streams consumer groups with retries, takeover and a dead-letter stream.

Delivery is at-least-once. A message is acknowledged only after its handler returned; a handler
error leaves it pending, and after `retry_idle_ms` any consumer of the group claims it again
(XAUTOCLAIM) -- the same path that rescues messages of a consumer that crashed. Once a message
has been delivered `max_deliveries` times without success it moves to the group's dead-letter
stream. Handlers must be idempotent: see offchain.eventbus.idempotent.

A consumer may also take a `batch_handler`: the messages read at once are handed over together
(one transaction for many, where the per-message cost is the transaction), and acknowledged
together once it returned. If it raises, nothing of the batch is acknowledged and each message
goes through `handler` on its own, so one bad message neither blocks nor fails the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from offchain.eventbus.messages import Event, StreamNames, decode
from offchain.platform.logging import get_logger
from offchain.platform.tracing import consumer_span

log = get_logger(__name__)

Handler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]


@dataclass
class StreamConsumer:
    redis: Redis
    group: str  # one group per logical consumer (e.g. "notifications.webhooks")
    name: str  # one name per process/replica within the group
    topics: Sequence[str]
    handler: Handler
    names: StreamNames = field(default_factory=StreamNames)
    max_deliveries: int = 5
    retry_idle_ms: int = 30_000
    block_ms: int = 1_000
    batch: int = 50
    # "0": a new group starts with what is already in the stream; "$": only new messages
    start_id: str = "0"
    # Messages of different keys (loans, references) handled at once, up to this many; the
    # messages of one key stay in stream order. 1: strictly one at a time.
    concurrency: int = 1
    # Optional: all the messages read at once in one call (see the module docstring); `handler`
    # remains the path of a failed batch's messages.
    batch_handler: BatchHandler | None = None

    async def setup(self) -> None:
        for topic in self.topics:
            try:
                await self.redis.xgroup_create(
                    self.names.topic(topic), self.group, id=self.start_id, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        await self.setup()
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("eventbus.poll_failed", group=self.group, consumer=self.name)
                await asyncio.sleep(1.0)

    async def poll_once(self, *, block_ms: int | None = None) -> int:
        """Retry/take over stale pending messages, then read new ones; returns how many ran."""
        handled = await self._reclaim()
        streams = {self.names.topic(topic): ">" for topic in self.topics}
        response: Any = await self.redis.xreadgroup(
            self.group,
            self.name,
            streams,  # type: ignore[arg-type]
            count=self.batch,
            block=None if handled else (self.block_ms if block_ms is None else block_ms),
        )
        batch = [(stream, mid, fields, 1) for stream, messages in response or [] for mid, fields in messages]
        await self._deliver_all(batch)
        return handled + len(batch)

    async def _deliver_all(self, batch: list[tuple[str, str, dict[str, str], int]]) -> None:
        if self.batch_handler is not None and len(batch) > 1:
            batch = await self._deliver_batch(batch)
        if self.concurrency <= 1 or len(batch) <= 1:
            for stream, message_id, fields, deliveries in batch:
                await self._deliver(stream, message_id, fields, deliveries=deliveries)
            return
        lanes: dict[str, list[tuple[str, str, dict[str, str], int]]] = {}
        for item in batch:
            lanes.setdefault(item[2].get("key") or item[1], []).append(item)
        gate = asyncio.Semaphore(self.concurrency)

        async def lane(items: list[tuple[str, str, dict[str, str], int]]) -> None:
            async with gate:
                for stream, message_id, fields, deliveries in items:
                    await self._deliver(stream, message_id, fields, deliveries=deliveries)

        await asyncio.gather(*(lane(items) for items in lanes.values()))

    async def _deliver_batch(
        self, batch: list[tuple[str, str, dict[str, str], int]]
    ) -> list[tuple[str, str, dict[str, str], int]]:
        """Hand the batch to `batch_handler`; returns what is left for one-by-one delivery."""
        assert self.batch_handler is not None
        events: list[Event] = []
        for _stream, message_id, fields, deliveries in batch:
            if deliveries > 1:
                # delivered before and not acknowledged: maybe the one that failed its batch
                return batch
            try:
                events.append(decode(message_id, fields, deliveries))
            except (KeyError, ValueError):
                return batch  # dead-lettered on the one-by-one path
        try:
            await self.batch_handler(events)
        except Exception as exc:
            log.warning(
                "eventbus.batch_failed",
                group=self.group,
                size=len(events),
                error=repr(exc)[:500],
            )
            return batch
        acked: dict[str, list[str]] = {}
        for stream, message_id, _fields, _deliveries in batch:
            acked.setdefault(stream, []).append(message_id)
        for stream, ids in acked.items():
            await self.redis.xack(stream, self.group, *ids)
        return []

    async def _reclaim(self) -> int:
        handled = 0
        for topic in self.topics:
            stream = self.names.topic(topic)
            # redis-py types replies loosely; with decode_responses they are str throughout
            claimed: list[Any] = await self.redis.xautoclaim(
                stream, self.group, self.name, self.retry_idle_ms, "0-0", count=self.batch
            )
            messages: list[tuple[str, dict[str, str] | None]] = claimed[1]
            if not messages:
                continue
            live = [(mid, fields) for mid, fields in messages if fields]
            # Redis 6.2 returns trimmed entries with no fields; 7 drops them from the PEL itself.
            gone = [mid for mid, fields in messages if not fields]
            if gone:
                await self.redis.xack(stream, self.group, *gone)
            counts = await self._delivery_counts(stream, [mid for mid, _ in live])
            await self._deliver_all([(stream, mid, fields, counts.get(mid, 1)) for mid, fields in live])
            handled += len(live)
        return handled

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        pending: list[dict[str, Any]] = await self.redis.xpending_range(
            stream, self.group, min=ids[0], max=ids[-1], count=len(ids), consumername=self.name
        )
        return {entry["message_id"]: int(entry["times_delivered"]) for entry in pending}

    async def _deliver(
        self, stream: str, message_id: str, fields: dict[str, str], *, deliveries: int
    ) -> None:
        if deliveries > self.max_deliveries:
            # Delivered again and again without an ack or a recorded failure: the handler
            # takes the process down with it. Stop feeding it.
            await self._dead_letter(stream, message_id, fields, deliveries, "crashed its consumer")
            return
        try:
            event = decode(message_id, fields, deliveries)
        except (KeyError, ValueError) as exc:
            await self._dead_letter(stream, message_id, fields, deliveries, f"undecodable: {exc!r}")
            return
        try:
            with consumer_span(
                topic=event.topic,
                headers=event.headers,
                group=self.group,
                message_id=message_id,
                event_id=event.id,
            ):
                await self.handler(event)
        except Exception as exc:
            log.warning(
                "eventbus.handler_failed",
                group=self.group,
                topic=event.topic,
                event_id=event.id,
                deliveries=deliveries,
                error=repr(exc)[:500],
            )
            if deliveries >= self.max_deliveries:
                await self._dead_letter(stream, message_id, fields, deliveries, repr(exc))
            return  # left pending: retried after retry_idle_ms
        await self.redis.xack(stream, self.group, message_id)

    async def _dead_letter(
        self, stream: str, message_id: str, fields: dict[str, str], deliveries: int, error: str
    ) -> None:
        dead = {
            **fields,
            "dead_letter_group": self.group,
            "dead_letter_stream": stream,
            "dead_letter_message_id": message_id,
            "dead_letter_deliveries": str(deliveries),
            "dead_letter_error": error[:2_000],
        }
        # XADD + XACK atomically: the message is either still pending or in the dead letters.
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.names.dead_letter(self.group), dead)  # type: ignore[arg-type]
        pipe.xack(stream, self.group, message_id)
        await pipe.execute()
        log.error(
            "eventbus.dead_lettered",
            group=self.group,
            stream=stream,
            message_id=message_id,
            outbox_id=fields.get("outbox_id"),
            deliveries=deliveries,
            error=error[:500],
        )
