"""A service's consumer of outbox topics, configured from its settings (one place, not one per worker)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence

from offchain.eventbus.consumer import BatchHandler, Handler, StreamConsumer
from offchain.eventbus.messages import StreamNames
from offchain.platform.app import AppResources


def consumer_for(
    resources: AppResources,
    *,
    group: str,
    topics: Sequence[str],
    handler: Handler,
    concurrency: int = 1,
    batch_handler: BatchHandler | None = None,
) -> StreamConsumer:
    if resources.redis is None:
        raise RuntimeError(f"{group} needs Redis (REDIS_URL)")
    events = resources.settings.events
    return StreamConsumer(
        redis=resources.redis,
        group=group,
        # one name per replica: a crashed replica's pending messages are claimed by the others
        name=f"{socket.gethostname()}-{os.getpid()}",
        topics=list(topics),
        handler=handler,
        names=StreamNames(events.stream_prefix),
        max_deliveries=events.max_deliveries,
        retry_idle_ms=events.retry_idle_ms,
        concurrency=concurrency,
        batch_handler=batch_handler,
    )


async def run_consumer(
    resources: AppResources,
    stop: asyncio.Event,
    *,
    group: str,
    topics: Sequence[str],
    handler: Handler,
    concurrency: int = 1,
    batch_handler: BatchHandler | None = None,
) -> None:
    consumer = consumer_for(
        resources,
        group=group,
        topics=topics,
        handler=handler,
        concurrency=concurrency,
        batch_handler=batch_handler,
    )
    await consumer.run(stop)
