"""Partner webhook API (DESIGN §4): endpoints, the events of the last 30 days, replay.

Served by the gateway (8000, the public API) and by the notifications service (8007).
"""

# No `from __future__ import annotations`: FastAPI must see the closures in the dependencies.

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from offchain.domain.notifications.envelope import PARTNER_EVENT_TYPES
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep, SettingsDep
from offchain.platform.idempotency import run_idempotent
from offchain.platform.inputs import Cursor, Timestamp
from offchain.platform.limits import limited
from offchain.platform.openapi_client import IdempotencyKey
from offchain.platform.outbound import OutboundPolicy
from offchain.platform.pagination import MAX_LIMIT
from offchain.services.notifications import schemas, usecases
from offchain.services.notifications.secrets import SecretBox, secret_box

router = APIRouter(prefix="/v1", tags=["webhooks"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "the token lacks the permission this call needs", **PROBLEM},
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
    429: {"description": "rate limit exceeded (see RateLimit-* and Retry-After)", **PROBLEM},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such resource for this partner", **PROBLEM}
}
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "the body is not JSON", **PROBLEM}}


# The idempotency store keeps answers for replays (72 h, plain JSONB): a signing secret goes in
# sealed with the secrets key and is opened only on the way out, so it is never at rest in clear.
_SEALED = "sealed:"


def _sealed(body: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    return {**body, "secret": _SEALED + box.encrypt(body["secret"])}


def _revealed(response: JSONResponse, box: SecretBox) -> JSONResponse:
    body = json.loads(bytes(response.body))
    secret = body.get("secret") if isinstance(body, dict) else None
    if not (isinstance(secret, str) and secret.startswith(_SEALED)):
        return response  # a problem answer
    body["secret"] = box.decrypt(secret.removeprefix(_SEALED))
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
    }
    return JSONResponse(body, status_code=response.status_code, headers=headers)


# The gateway's dependency: permission check, then the partner's rate limit where the app has one.
ManageWrite = Annotated[Principal, Depends(limited(auth.WEBHOOK_MANAGE, "write"))]
ManageRead = Annotated[Principal, Depends(limited(auth.WEBHOOK_MANAGE, "read"))]


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=schemas.EndpointCreated,
    responses={409: {"description": "Idempotency-Key conflict", **PROBLEM}, **BAD_BODY, **COMMON_ERRORS},
    summary="Subscribe an endpoint to event types; the answer holds its signing secret, once",
)
async def create_endpoint(
    request: Request,
    body: schemas.EndpointIn,
    principal: ManageWrite,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    box = secret_box(settings.notifications)

    async def handle() -> tuple[int, Any]:
        async with db.partner_session(principal.partner_id) as session:
            created = await usecases.create_endpoint(
                session=session,
                partner_id=principal.partner_id,
                body=body,
                box=box,
                outbound=OutboundPolicy.from_settings(settings),
            )
            after = created.model_dump(mode="json", exclude={"secret"})
            await record_action(
                session,
                actor=principal.subject,
                action="webhook_endpoint.create",
                subject_type="webhook_endpoint",
                subject_id=str(after.get("id")),
                partner_id=principal.partner_id,
                after=after,
            )
        return 201, _sealed(created.model_dump(mode="json"), box)

    return _revealed(
        await run_idempotent(request, db=db, partner_id=principal.partner_id, handler=handle), box
    )


@router.get("/webhook-endpoints", response_model=schemas.EndpointList, responses=COMMON_ERRORS)
async def list_endpoints(principal: ManageRead, db: DatabaseDep) -> schemas.EndpointList:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.list_endpoints(session=session)


@router.get(
    "/webhook-endpoints/{endpoint_id}",
    response_model=schemas.EndpointOut,
    responses={**NOT_FOUND, **COMMON_ERRORS},
)
async def get_endpoint(endpoint_id: uuid.UUID, principal: ManageRead, db: DatabaseDep) -> schemas.EndpointOut:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.get_endpoint(session=session, endpoint_id=endpoint_id)


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    status_code=204,
    responses={**NOT_FOUND, **COMMON_ERRORS},
    summary="Unsubscribe: pending deliveries to it are cancelled; its history stays listable",
)
async def delete_endpoint(endpoint_id: uuid.UUID, principal: ManageWrite, db: DatabaseDep) -> Response:
    async with db.partner_session(principal.partner_id) as session:
        await usecases.delete_endpoint(session=session, endpoint_id=endpoint_id)
        await record_action(
            session,
            actor=principal.subject,
            action="webhook_endpoint.delete",
            subject_type="webhook_endpoint",
            subject_id=endpoint_id,
            partner_id=principal.partner_id,
        )
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=schemas.SecretRotated,
    responses={
        **NOT_FOUND,
        409: {"description": "Idempotency-Key conflict", **PROBLEM},
        **BAD_BODY,
        **COMMON_ERRORS,
    },
    summary="New signing secret; the old one keeps signing too until previous_secret_expires_at",
)
async def rotate_secret(
    request: Request,
    endpoint_id: uuid.UUID,
    principal: ManageWrite,
    db: DatabaseDep,
    settings: SettingsDep,
    body: Annotated[schemas.RotateSecretIn | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    overlap = settings.notifications.rotation_overlap_s
    if body is not None and body.expire_previous_in_s is not None:
        overlap = body.expire_previous_in_s

    box = secret_box(settings.notifications)

    async def handle() -> tuple[int, Any]:
        async with db.partner_session(principal.partner_id) as session:
            rotated = await usecases.rotate_secret(
                session=session,
                endpoint_id=endpoint_id,
                box=box,
                overlap_s=overlap,
            )
            await record_action(
                session,
                actor=principal.subject,
                action="webhook_endpoint.rotate_secret",
                subject_type="webhook_endpoint",
                subject_id=endpoint_id,
                partner_id=principal.partner_id,
                overlap_s=overlap,
            )
        return 200, _sealed(rotated.model_dump(mode="json"), box)

    return _revealed(
        await run_idempotent(request, db=db, partner_id=principal.partner_id, handler=handle), box
    )


@router.get(
    "/events",
    response_model=schemas.EventPage,
    responses={400: {"description": "a cursor this API did not issue", **PROBLEM}, **COMMON_ERRORS},
    summary="This partner's events of the last 30 days, newest first, with each endpoint's delivery state",
)
async def list_events(
    principal: ManageRead,
    db: DatabaseDep,
    settings: SettingsDep,
    type: Annotated[Literal[PARTNER_EVENT_TYPES] | None, Query(description="one event type")] = None,  # type: ignore[valid-type]
    since: Annotated[Timestamp | None, Query(description="only events created at or after this time")] = None,
    cursor: Annotated[Cursor | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
) -> schemas.EventPage:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.list_events(
            session=session,
            limit=limit,
            cursor=cursor,
            event_type=type,
            since=since,
            listing_days=settings.notifications.event_listing_days,
        )


# `:uuid`: /v1/events/sme (the gateway's SME intake, POST) is not an event id; a GET there is a 405
@router.get(
    "/events/{event_id:uuid}", response_model=schemas.EventOut, responses={**NOT_FOUND, **COMMON_ERRORS}
)
async def get_event(
    event_id: uuid.UUID, principal: ManageRead, db: DatabaseDep, settings: SettingsDep
) -> schemas.EventOut:
    async with db.partner_session(principal.partner_id) as session:
        return await usecases.get_event(
            session=session, event_id=event_id, listing_days=settings.notifications.event_listing_days
        )


@router.post(
    "/events/{event_id:uuid}/replay",
    status_code=202,
    response_model=schemas.ReplayOut,
    responses={
        **NOT_FOUND,
        409: {"description": "no endpoint subscribes to the event, or Idempotency-Key conflict", **PROBLEM},
        **BAD_BODY,
        **COMMON_ERRORS,
    },
    summary="Send the event again now, with a fresh retry window (Idempotency-Key supported)",
)
async def replay_event(
    request: Request,
    event_id: uuid.UUID,
    principal: ManageWrite,
    db: DatabaseDep,
    settings: SettingsDep,
    body: Annotated[schemas.ReplayIn | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def handle() -> tuple[int, Any]:
        async with db.partner_session(principal.partner_id) as session:
            replayed = await usecases.replay_event(
                session=session,
                partner_id=principal.partner_id,
                event_id=event_id,
                endpoint_id=body.endpoint_id if body is not None else None,
                listing_days=settings.notifications.event_listing_days,
            )
            await record_action(
                session,
                actor=principal.subject,
                action="event.replay",
                subject_type="event",
                subject_id=event_id,
                partner_id=principal.partner_id,
            )
        return 202, replayed.model_dump(mode="json")

    return await run_idempotent(request, db=db, partner_id=principal.partner_id, handler=handle)
