"""Event intake: partner events from the outbox become stored events plus one delivery per
subscribed endpoint. Only rows are written here; the delivery worker does the sending, so a slow
partner endpoint never holds up the consumer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import literal, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.notifications.envelope import ALL_TYPES, PARTNER_EVENT_TYPES, partner_data
from offchain.eventbus.consumer import StreamConsumer
from offchain.eventbus.idempotent import claim_events
from offchain.eventbus.messages import Event, StreamNames
from offchain.persistence.notifications import WebhookDelivery, WebhookEndpoint, WebhookEvent
from offchain.platform.app import AppResources
from offchain.platform.logging import get_logger
from offchain.services.notifications.metrics import NotificationMetrics

log = get_logger(__name__)

GROUP = "notifications.webhooks"
WAKEUP = "webhook_wakeup"


def _created_at(event: Event) -> datetime:
    try:
        created = datetime.fromisoformat(event.created_at)
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


async def store_event(
    session: AsyncSession, event: Event, *, metrics: NotificationMetrics | None = None
) -> int:
    """Store `event` for its partner and queue its deliveries; returns how many were queued.

    The unique outbox id makes a second copy of one outbox event a no-op even without the
    consumer's own dedupe (a replay of the outbox through another consumer group, say).
    """
    if event.partner_id is None:
        return 0  # platform-wide events have no partner to tell
    partner_id = uuid.UUID(event.partner_id)
    stored = (
        await session.execute(
            insert(WebhookEvent)
            .values(
                partner_id=partner_id,
                outbox_id=event.id,
                type=event.topic,
                data=partner_data(event.topic, event.payload),
                created_at=_created_at(event),
            )
            .on_conflict_do_nothing(index_elements=[WebhookEvent.outbox_id])
            .returning(WebhookEvent.id)
        )
    ).scalar_one_or_none()
    if stored is None:
        return 0
    subscribed = select(
        literal(partner_id).label("partner_id"),
        literal(stored).label("event_id"),
        WebhookEndpoint.id.label("endpoint_id"),
    ).where(
        WebhookEndpoint.partner_id == partner_id,
        WebhookEndpoint.deleted_at.is_(None),
        or_(
            WebhookEndpoint.event_types.contains([event.topic]),
            WebhookEndpoint.event_types.contains([ALL_TYPES]),
        ),
    )
    queued = await session.execute(
        insert(WebhookDelivery)
        .from_select(["partner_id", "event_id", "endpoint_id"], subscribed)
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.id)
    )
    count = len(queued.all())
    if metrics is not None:
        metrics.events_stored.labels(event.topic).inc()
        metrics.deliveries_created.inc(count)
    log.info("webhook.event_stored", event_id=str(stored), type=event.topic, deliveries=count)
    return count


# `store_event` for many events in one statement: events stored (a second copy of an outbox id
# is a no-op), then one delivery per subscribed endpoint, and per stored event its count.
_STORE_MANY = text(
    """
    WITH incoming AS (
        SELECT * FROM unnest(
            CAST(:partner_id AS uuid[]), CAST(:outbox_id AS bigint[]), CAST(:type AS text[]),
            CAST(:data AS text[]), CAST(:created_at AS timestamptz[])
        ) WITH ORDINALITY AS t(partner_id, outbox_id, type, data, created_at, n)
    ), stored AS (
        INSERT INTO caas_webhook_events (partner_id, outbox_id, type, data, created_at)
        SELECT partner_id, outbox_id, type, CAST(data AS jsonb), created_at FROM incoming ORDER BY n
        ON CONFLICT (outbox_id) DO NOTHING
        RETURNING id, partner_id, type
    ), queued AS (
        INSERT INTO caas_webhook_deliveries (partner_id, event_id, endpoint_id)
        SELECT s.partner_id, s.id, e.id
        FROM stored s JOIN caas_webhook_endpoints e
          ON e.partner_id = s.partner_id AND e.deleted_at IS NULL
         AND (CAST(s.type AS varchar) = ANY(e.event_types)
              OR CAST(:all_types AS varchar) = ANY(e.event_types))
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )
    SELECT s.id, s.type, (SELECT count(*) FROM queued q WHERE q.event_id = s.id) AS deliveries
    FROM stored s
    """
)


async def store_events(
    session: AsyncSession, events: Sequence[Event], *, metrics: NotificationMetrics | None = None
) -> int:
    """`store_event` for each of `events` (distinct outbox ids), in one round trip; returns how
    many deliveries were queued. Per event two ORM statements were most of the intake's CPU."""
    partnered = [event for event in events if event.partner_id is not None]
    if not partnered:
        return 0
    rows = (
        await session.execute(
            _STORE_MANY,
            {
                "partner_id": [uuid.UUID(str(event.partner_id)) for event in partnered],
                "outbox_id": [event.id for event in partnered],
                "type": [event.topic for event in partnered],
                "data": [
                    json.dumps(partner_data(event.topic, event.payload), separators=(",", ":"))
                    for event in partnered
                ],
                "created_at": [_created_at(event) for event in partnered],
                "all_types": ALL_TYPES,
            },
        )
    ).all()
    queued = 0
    for stored, topic, count in rows:
        queued += count
        if metrics is not None:
            metrics.events_stored.labels(topic).inc()
            metrics.deliveries_created.inc(count)
        log.info("webhook.event_stored", event_id=str(stored), type=topic, deliveries=count)
    return queued


async def run_event_intake(
    resources: AppResources, stop: asyncio.Event, *, metrics: NotificationMetrics | None = None
) -> None:
    """Background job of the notifications service (offchain.platform.app.BackgroundTask)."""
    if resources.db is None or resources.redis is None:
        await stop.wait()
        return
    settings = resources.settings
    wakeup: asyncio.Event = resources.extras.setdefault(WAKEUP, asyncio.Event())

    async def handle_batch(events: list[Event]) -> None:
        # what one read brought, in one transaction: claimed together, each stored once
        assert resources.db is not None
        async with resources.db.worker_session() as session:
            fresh = await claim_events(session, consumer=GROUP, event_ids=[str(e.id) for e in events])
            chosen = []
            for event in events:
                if str(event.id) in fresh:
                    fresh.discard(str(event.id))  # twice in the batch: stored once
                    chosen.append(event)
            await store_events(session, chosen, metrics=metrics)
        wakeup.set()  # after the commit: the worker sees the new deliveries at once

    async def handle(event: Event) -> None:
        # a read that brought one event (most of them, when events trickle in), or a failed
        # batch's events one by one: the same claim and statement as a batch
        await handle_batch([event])

    # Several consumers of the group in this process: each read (up to a batch of events) is one
    # short transaction, so intake throughput grows with them until PostgreSQL is the limit.
    # Partners get no ordering guarantee between events anyway (retries reorder them); each
    # carries created_at.
    base = f"{socket.gethostname()}-{os.getpid()}"
    consumers = [
        StreamConsumer(
            redis=resources.redis,
            group=GROUP,
            name=f"{base}-{n}",
            topics=list(PARTNER_EVENT_TYPES),
            handler=handle,
            batch_handler=handle_batch,
            names=StreamNames(settings.events.stream_prefix),
            max_deliveries=settings.events.max_deliveries,
            retry_idle_ms=settings.events.retry_idle_ms,
        )
        for n in range(settings.notifications.intake_concurrency)
    ]
    await asyncio.gather(*(consumer.run(stop) for consumer in consumers))
