"""Idempotent consumers: record (consumer, event id) in the same transaction as the effects.

If the handler's transaction commits, the event is marked handled with it; if the process dies
before XACK, the redelivered event finds its mark and is skipped. If the handler fails, the
rollback removes the mark too, so the retry runs the handler again. Effects happen once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.eventbus.consumer import Handler
from offchain.eventbus.messages import Event
from offchain.persistence.models import ConsumedEvent
from offchain.platform.db import Database

SessionHandler = Callable[[AsyncSession, Event], Awaitable[None]]


async def claim_event(session: AsyncSession, *, consumer: str, event_id: str) -> bool:
    """True the first time `consumer` sees `event_id` (in this transaction's view).

    A concurrent duplicate blocks on the primary key until the first transaction ends, then
    sees the conflict: two replicas cannot both handle one event.
    """
    statement = (
        insert(ConsumedEvent)
        .values(consumer=consumer, event_id=event_id)
        .on_conflict_do_nothing()
        .returning(ConsumedEvent.event_id)
    )
    return (await session.execute(statement)).first() is not None


async def claim_events(session: AsyncSession, *, consumer: str, event_ids: list[str]) -> set[str]:
    """`claim_event` for a batch in one statement: the ids `consumer` sees for the first time."""
    unique = sorted(set(event_ids))  # in key order: two batches sharing ids cannot deadlock
    if not unique:
        return set()
    statement = (
        insert(ConsumedEvent)
        .values([{"consumer": consumer, "event_id": event_id} for event_id in unique])
        .on_conflict_do_nothing()
        .returning(ConsumedEvent.event_id)
    )
    return set((await session.execute(statement)).scalars())


def idempotent(db: Database, consumer: str, handler: SessionHandler) -> Handler:
    """Wrap `handler(session, event)` so it runs at most once per event for `consumer`.

    The session is a worker transaction; a handler acting for one partner can narrow it with
    offchain.platform.db.set_partner(session, event.partner_id).
    """

    async def run(event: Event) -> None:
        async with db.worker_session() as session:
            if await claim_event(session, consumer=consumer, event_id=str(event.id)):
                await handler(session, event)

    return run
