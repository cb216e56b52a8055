"""Producer side: write events into the outbox, in the caller's transaction.

An event exists exactly when the change it announces was committed: no dual write to Redis.
The relay (offchain.eventbus.relay) moves committed rows to Redis Streams afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.models import OutboxMessage
from offchain.platform.logging import bound_context


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
    or to nobody when there is none. The request id, if any, rides along for tracing.
    """
    merged = dict(headers or {})
    request_id = bound_context().get("request_id")
    if request_id:
        merged.setdefault("request_id", request_id)
    statement = (
        insert(OutboxMessage)
        .values(
            topic=topic,
            key=key,
            payload=payload,
            headers=merged,
            partner_id=partner_id if partner_id is not None else func.caas_current_partner(),
        )
        .returning(OutboxMessage.id)
    )
    return int((await session.execute(statement)).scalar_one())
