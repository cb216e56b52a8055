"""Use cases of the partner webhook API. Sessions are partner-scoped (row-level security): another
partner's endpoint or event is simply not found, a 404."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.notifications import signing
from offchain.domain.notifications.envelope import ALL_TYPES
from offchain.persistence.notifications import WebhookDelivery, WebhookEndpoint, WebhookEvent
from offchain.platform.outbound import OutboundPolicy, UrlRefused
from offchain.platform.pagination import decode_cursor, encode_cursor
from offchain.platform.problems import VALIDATION_ERROR, Problem, not_found
from offchain.services.notifications import schemas
from offchain.services.notifications.secrets import SecretBox

NO_ENDPOINT = "urn:caas:problem:no-subscribed-endpoint"


def endpoint_view(endpoint: WebhookEndpoint) -> schemas.EndpointOut:
    return schemas.EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        created_at=endpoint.created_at,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
    )


# -- endpoints ---------------------------------------------------------------------------------


async def create_endpoint(
    *,
    session: AsyncSession,
    partner_id: uuid.UUID,
    body: schemas.EndpointIn,
    box: SecretBox,
    outbound: OutboundPolicy,
) -> schemas.EndpointCreated:
    try:
        # resolved and every address checked now; each delivery checks again (GuardedResolver)
        url = await outbound.check_url(body.url, unresolvable_ok=True)
    except UrlRefused as error:
        raise Problem(
            422,
            VALIDATION_ERROR,
            title="Request validation failed",
            detail=f"url {error}",
            errors=[{"field": "body.url", "reason": str(error)}],
        ) from error
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        partner_id=partner_id,
        url=url,
        description=body.description,
        event_types=body.event_types,
        secret_ciphertext=box.encrypt(secret),
    )
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return schemas.EndpointCreated(**endpoint_view(endpoint).model_dump(), secret=secret)


async def _endpoint(session: AsyncSession, endpoint_id: uuid.UUID, *, lock: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None)
    )
    if lock:
        query = query.with_for_update()
    endpoint = (await session.execute(query)).scalar_one_or_none()
    if endpoint is None:
        raise not_found("webhook endpoint", endpoint_id)
    return endpoint


async def list_endpoints(*, session: AsyncSession) -> schemas.EndpointList:
    rows = (
        await session.execute(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.deleted_at.is_(None))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    ).scalars()
    return schemas.EndpointList(data=[endpoint_view(row) for row in rows])


async def get_endpoint(*, session: AsyncSession, endpoint_id: uuid.UUID) -> schemas.EndpointOut:
    return endpoint_view(await _endpoint(session, endpoint_id))


async def delete_endpoint(*, session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    endpoint = await _endpoint(session, endpoint_id, lock=True)
    endpoint.deleted_at = datetime.now(UTC)
    # nothing more goes to a deleted endpoint; its history stays listable
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending")
        .values(status="cancelled", next_attempt_at=None, last_error="endpoint deleted")
    )


async def rotate_secret(
    *,
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    box: SecretBox,
    overlap_s: int,
) -> schemas.SecretRotated:
    endpoint = await _endpoint(session, endpoint_id, lock=True)
    secret = signing.new_secret()
    now = datetime.now(UTC)
    if overlap_s > 0:
        endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext
        endpoint.previous_secret_expires_at = now + timedelta(seconds=overlap_s)
    else:
        endpoint.previous_secret_ciphertext = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_ciphertext = box.encrypt(secret)
    return schemas.SecretRotated(
        id=endpoint.id, secret=secret, previous_secret_expires_at=endpoint.previous_secret_expires_at
    )


# -- events ------------------------------------------------------------------------------------


def delivery_view(delivery: WebhookDelivery) -> schemas.DeliveryOut:
    return schemas.DeliveryOut(
        endpoint_id=delivery.endpoint_id,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        last_attempt_at=delivery.last_attempt_at,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
        dead_at=delivery.dead_at,
    )


async def _deliveries(
    session: AsyncSession, event_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[schemas.DeliveryOut]]:
    found: dict[uuid.UUID, list[schemas.DeliveryOut]] = defaultdict(list)
    if not event_ids:
        return found
    rows = (
        await session.execute(
            select(WebhookDelivery)
            .where(WebhookDelivery.event_id.in_(event_ids))
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
    ).scalars()
    for row in rows:
        found[row.event_id].append(delivery_view(row))
    return found


def _event_view(event: WebhookEvent, deliveries: list[schemas.DeliveryOut]) -> schemas.EventOut:
    return schemas.EventOut(
        id=event.id, type=event.type, created_at=event.created_at, data=event.data, deliveries=deliveries
    )


async def list_events(
    *,
    session: AsyncSession,
    limit: int,
    cursor: str | None,
    event_type: str | None,
    since: datetime | None,
    listing_days: int,
    now: datetime | None = None,
) -> schemas.EventPage:
    """Newest first, never older than `listing_days` (whatever `since` asks for)."""
    now = now or datetime.now(UTC)
    oldest = now - timedelta(days=listing_days)
    if since is not None:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        oldest = max(oldest, since)
    query = (
        select(WebhookEvent)
        .where(WebhookEvent.created_at >= oldest)
        .order_by(WebhookEvent.created_at.desc(), WebhookEvent.id.desc())
        .limit(limit + 1)
    )
    if event_type:
        query = query.where(WebhookEvent.type == event_type)
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(tuple_(WebhookEvent.created_at, WebhookEvent.id) < tuple_(created_at, row_id))
    rows = list((await session.execute(query)).scalars().all())
    page, more = rows[:limit], len(rows) > limit
    deliveries = await _deliveries(session, [row.id for row in page])
    return schemas.EventPage(
        data=[_event_view(row, deliveries.get(row.id, [])) for row in page],
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
    )


async def _event(session: AsyncSession, event_id: uuid.UUID, listing_days: int) -> WebhookEvent:
    event = (
        await session.execute(
            select(WebhookEvent).where(
                WebhookEvent.id == event_id,
                WebhookEvent.created_at >= datetime.now(UTC) - timedelta(days=listing_days),
            )
        )
    ).scalar_one_or_none()
    if event is None:
        raise not_found("event", event_id)
    return event


async def get_event(*, session: AsyncSession, event_id: uuid.UUID, listing_days: int) -> schemas.EventOut:
    event = await _event(session, event_id, listing_days)
    return _event_view(event, (await _deliveries(session, [event.id])).get(event.id, []))


async def replay_event(
    *,
    session: AsyncSession,
    partner_id: uuid.UUID,
    event_id: uuid.UUID,
    endpoint_id: uuid.UUID | None,
    listing_days: int,
) -> schemas.ReplayOut:
    """(Re)queue the event for delivery now, with a fresh retry window, to one or every endpoint."""
    event = await _event(session, event_id, listing_days)
    if endpoint_id is not None:
        endpoints = [(await _endpoint(session, endpoint_id)).id]
    else:
        endpoints = list(
            (
                await session.execute(
                    select(WebhookEndpoint.id).where(
                        WebhookEndpoint.deleted_at.is_(None),
                        or_(
                            WebhookEndpoint.event_types.contains([event.type]),
                            WebhookEndpoint.event_types.contains([ALL_TYPES]),
                        ),
                    )
                )
            ).scalars()
        )
    if not endpoints:
        raise Problem(
            409,
            NO_ENDPOINT,
            title="No endpoint to send to",
            detail=f"no webhook endpoint of this partner subscribes to {event.type}",
        )
    statement = insert(WebhookDelivery).values(
        [{"partner_id": partner_id, "event_id": event.id, "endpoint_id": e} for e in endpoints]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[WebhookDelivery.event_id, WebhookDelivery.endpoint_id],
            set_={
                "status": "pending",
                "failures": 0,
                "window_started_at": func.now(),
                "next_attempt_at": func.now(),
                "dead_at": None,
                "updated_at": func.now(),
            },
        )
    )
    rows = (
        await session.execute(
            select(WebhookDelivery)
            .where(and_(WebhookDelivery.event_id == event.id, WebhookDelivery.endpoint_id.in_(endpoints)))
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
            .execution_options(populate_existing=True)
        )
    ).scalars()
    return schemas.ReplayOut(event_id=event.id, deliveries=[delivery_view(row) for row in rows])
