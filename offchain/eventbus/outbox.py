"""Producer side: write events into the outbox, in the caller's transaction.

An event exists exactly when the change it announces was committed: no dual write to Redis.
The relay (offchain.eventbus.relay) moves committed rows to Redis Streams afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.models import OutboxMessage
from offchain.platform.logging import bound_context
from offchain.platform.tracing import inject_context


@dataclass(frozen=True)
class OutgoingEvent:
    """One event for `publish_many`."""

    topic: str
    payload: dict[str, Any]
    key: str | None = None
    partner_id: uuid.UUID | str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


async def publish(
    session: AsyncSession,
    topic: str,
    payload: dict[str, Any],
    *,
    key: str | None = None,
    partner_id: uuid.UUID | str | None = None,
    headers: dict[str, Any] | None = None,
) -> int:
    """Add an event to the caller's transaction; returns its outbox id.

    Without `partner_id` the event belongs to the session's partner scope (`caas.partner_id`),
    or to nobody when there is none. The request id and the trace context (W3C `traceparent`),
    if any, ride along in the headers.
    """
    merged = dict(headers or {})
    request_id = bound_context().get("request_id")
    if request_id:
        merged.setdefault("request_id", request_id)
    inject_context(merged)  # traceparent: the consumer's span continues this trace
    values: dict[str, Any] = {"topic": topic, "key": key, "payload": payload, "headers": merged}
    if partner_id is None:
        statement = _PUBLISH_IN_SCOPE
    else:
        statement, values["partner_id"] = _PUBLISH_FOR_PARTNER, partner_id
    return int((await session.execute(statement, values)).scalar_one())


def _publish_statement(partner_id: Any) -> Any:
    # Built once with bind parameters: SQLAlchemy then reuses its cache key and compiled form
    # (an INSERT built per call was a tenth of a submission's CPU).
    return (
        insert(OutboxMessage)
        .values(
            topic=bindparam("topic"),
            key=bindparam("key"),
            payload=bindparam("payload", type_=OutboxMessage.__table__.c.payload.type),
            headers=bindparam("headers", type_=OutboxMessage.__table__.c.headers.type),
            partner_id=partner_id,
        )
        .returning(OutboxMessage.id)
    )


_PUBLISH_IN_SCOPE = _publish_statement(func.caas_current_partner())
_PUBLISH_FOR_PARTNER = _publish_statement(
    bindparam("partner_id", type_=OutboxMessage.__table__.c.partner_id.type)
)


# claim (consumer, event id) and add the event in one statement: nothing is added when the claim
# is not new (a concurrent duplicate waits on the key until the first commits, then finds it)
_PUBLISH_ONCE = text(
    "WITH claimed AS ("
    " INSERT INTO caas_consumed_events (consumer, event_id) VALUES (:consumer, :event_id)"
    " ON CONFLICT DO NOTHING RETURNING event_id) "
    "INSERT INTO caas_outbox (topic, key, payload, headers, partner_id) "
    "SELECT :topic, :key, :payload, :headers, caas_current_partner() FROM claimed "
    "RETURNING id"
).bindparams(
    bindparam("payload", type_=OutboxMessage.__table__.c.payload.type),
    bindparam("headers", type_=OutboxMessage.__table__.c.headers.type),
)


async def publish_once(
    session: AsyncSession,
    topic: str,
    payload: dict[str, Any],
    *,
    consumer: str,
    event_id: str,
    key: str | None = None,
) -> int | None:
    """`claim_event(consumer, event_id)` and, the first time only, `publish` in the session's
    partner scope: one round trip instead of two. Returns the outbox id, or None for a repeat."""
    headers: dict[str, Any] = {}
    request_id = bound_context().get("request_id")
    if request_id:
        headers["request_id"] = request_id
    inject_context(headers)
    values = {
        "consumer": consumer,
        "event_id": event_id,
        "topic": topic,
        "key": key,
        "payload": payload,
        "headers": headers,
    }
    found = (await session.execute(_PUBLISH_ONCE, values)).scalar_one_or_none()
    return None if found is None else int(found)


_PUBLISH_MANY = text(
    "INSERT INTO caas_outbox (topic, key, payload, headers, partner_id) "
    "SELECT t.topic, t.key, CAST(t.payload AS jsonb), CAST(t.headers AS jsonb), t.partner_id "
    "FROM unnest(CAST(:topic AS text[]), CAST(:key AS text[]), CAST(:payload AS text[]), "
    "CAST(:headers AS text[]), CAST(:partner_id AS uuid[])) WITH ORDINALITY "
    "AS t(topic, key, payload, headers, partner_id, n) ORDER BY t.n"
)


async def publish_many(session: AsyncSession, events: Sequence[OutgoingEvent]) -> None:
    """Add many events to the caller's transaction in one statement (outbox ids in list order).

    For bulk producers such as the chain indexer, where one `publish` round trip per event would
    cost more than everything else in the batch. The partner of each event is explicit (None:
    platform-wide); the session's partner scope is not consulted.
    """
    if not events:
        return
    request_id = bound_context().get("request_id")
    headers = []
    for event in events:
        merged = dict(event.headers or {})
        if request_id:
            merged.setdefault("request_id", request_id)
        inject_context(merged)
        headers.append(json.dumps(merged, separators=(",", ":")))
    await session.execute(
        _PUBLISH_MANY,
        {
            "topic": [event.topic for event in events],
            "key": [event.key for event in events],
            "payload": [json.dumps(event.payload, separators=(",", ":"), default=str) for event in events],
            "headers": headers,
            "partner_id": [
                uuid.UUID(str(event.partner_id)) if event.partner_id else None for event in events
            ],
        },
    )
