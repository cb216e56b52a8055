"""`POST /v1/events/sme`: signed events from the SME platform (DESIGN §4).

The signature is verified on the raw body before anything is parsed; a bad one is a 401 and
changes nothing. A known event is handed to the outbox in the same transaction that records its
dedupe key, so a redelivery (same event, or the same payment re-sent as a new event) has exactly
one effect. Unknown event types are acknowledged and ignored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from offchain.eventbus.idempotent import claim_event
from offchain.eventbus.outbox import publish
from offchain.platform.access import public
from offchain.platform.deps import DatabaseDep
from offchain.platform.problems import Problem
from offchain.rails.sme.events import (
    InvalidSmeSignature,
    MalformedSmeEvent,
    SmeEventVerifier,
    UnknownSmeEvent,
)
from offchain.services.gateway.schemas import SmeEventAck

# no token: the provider's signature over the raw body authenticates every call
router = APIRouter(
    prefix="/v1", dependencies=[Depends(public("signed by the SME platform (x-sme-signature over the body)"))]
)
CONSUMER = "gateway.sme-events"


@router.post(
    "/events/sme",
    status_code=202,
    response_model=SmeEventAck,
    responses={
        200: {
            "description": "a duplicate, or an event type this platform does not act on",
            "model": SmeEventAck,
        },
        401: {
            "description": "missing or invalid x-sme-signature",
            "content": {"application/problem+json": {}},
        },
        400: {
            "description": "signed, but not a well-formed event",
            "content": {"application/problem+json": {}},
        },
    },
    summary="SME platform events (sme.kyc.verified, sme.payment.received), signed x-sme-signature",
)
async def sme_event(request: Request, db: DatabaseDep) -> JSONResponse:
    body = await request.body()
    verifier = SmeEventVerifier.from_settings(request.app.state.settings.rails)
    try:
        event = verifier(body, request.headers)
    except InvalidSmeSignature as error:
        raise Problem(
            401, "urn:caas:problem:invalid-signature", title="Invalid signature", detail=str(error)
        ) from error
    except MalformedSmeEvent as error:
        raise Problem(
            400,
            "urn:caas:problem:malformed-event",
            title="Malformed event",
            detail=str(error),
            errors=[{"field": "body", "reason": str(error)}],
        ) from error
    if isinstance(event, UnknownSmeEvent):
        return JSONResponse({"status": "ignored", "type": event.type}, status_code=200)
    async with db.worker_session() as session:
        if not await claim_event(session, consumer=CONSUMER, event_id=event.dedupe_key):
            return JSONResponse({"status": "duplicate", "id": event.id}, status_code=200)
        payload: dict[str, Any] = {
            "id": event.id,
            "created_at": event.created_at,
            "data": event.data.model_dump(),
        }
        await publish(session, event.type, payload, key=event.dedupe_key)
    return JSONResponse({"status": "accepted", "id": event.id}, status_code=202)
