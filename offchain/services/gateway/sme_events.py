"""`POST /v1/events/sme`: signed events from the SME platform (DESIGN §4).

The signature is verified on the raw body before anything is parsed; a bad one is a 401 and
changes nothing. A known event is handed to the outbox in the same transaction that records its
dedupe key, so a redelivery (same event, or the same payment re-sent as a new event) has exactly
one effect. Unknown event types are acknowledged and ignored.

The SME platform retries every delivery it does not get a 2xx for. So every answer is decided:
- 401: the signature does not check out (not the SME platform's, or another secret): refused;
- 202 `accepted`: taken in, once;
- 200 `duplicate` (taken in before) or `ignored` (a type this platform does not act on);
- 200 `rejected`: signed by the platform but never processable as sent (not JSON, the wrong
  shape, a NUL character, nested past 16 levels, an id past 150 characters). Retrying cannot
  change that, so the platform is told to stop; the rejection is logged (`sme_event.rejected`)
  and published once per body as `sme.event.rejected` (type, reason, body digest) for operators.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from offchain.eventbus.idempotent import claim_event
from offchain.eventbus.outbox import publish
from offchain.platform.access import public
from offchain.platform.db import Database
from offchain.platform.deps import DatabaseDep
from offchain.platform.logging import get_logger
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
REJECTED = "sme.event.rejected"
log = get_logger(__name__)


async def _rejected(db: Database, body: bytes, reason: str) -> JSONResponse:
    digest = hashlib.sha256(body).hexdigest()
    log.warning("sme_event.rejected", reason=reason, body_sha256=digest, size=len(body))
    async with db.worker_session() as session:
        if await claim_event(session, consumer=f"{CONSUMER}.rejected", event_id=digest):
            await publish(
                session,
                REJECTED,
                {"reason": reason.replace("\x00", ""), "body_sha256": digest, "size": len(body)},
                key=digest,
            )
    return JSONResponse({"status": "rejected", "reason": reason}, status_code=200)


@router.post(
    "/events/sme",
    status_code=202,
    response_model=SmeEventAck,
    responses={
        200: {
            "description": "a duplicate, an event type this platform does not act on, or a signed "
            "event that can never be processed as sent (status rejected, with the reason)",
            "model": SmeEventAck,
        },
        401: {
            "description": "missing or invalid x-sme-signature",
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
        return await _rejected(db, body, str(error))
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
