"""`POST /v1/webhooks/paystack`: Paystack's signed deliveries (DESIGN §4).

Source allowlist, then the HMAC-SHA512 signature on the raw bytes, then parsing: a bad delivery
is refused and changes nothing. An accepted event is claimed by its dedupe key and put on the
outbox in one transaction, so a delivery repeated (Paystack retries for 72 hours, and may send
one event twice, concurrently) has exactly one effect downstream. The webhook is only a hint:
the repayment and disbursement services verify every amount and status with Paystack before
money moves. Event types we do not act on are acknowledged with 200 (anything else makes
Paystack retry) and dropped.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from offchain.eventbus.outbox import publish_once
from offchain.platform.access import public
from offchain.platform.deps import DatabaseDep
from offchain.platform.problems import Problem
from offchain.rails.paystack.webhooks import (
    MalformedEvent,
    TransferEvent,
    UnknownEvent,
    WebhookRejected,
    WebhookVerifier,
)

# no token: the provider's signature over the raw body authenticates every call
router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(public("signed by Paystack (x-paystack-signature, HMAC-SHA512 of the body)"))],
)
CONSUMER = "gateway.paystack-webhooks"
TOPIC_PREFIX = "paystack."

_PROBLEM = {"application/problem+json": {}}


def topic_of(event_type: str) -> str:
    """Outbox topic of a Paystack event: `paystack.charge.success`, `paystack.transfer.failed`, ..."""
    return TOPIC_PREFIX + event_type


@router.post(
    "/webhooks/paystack",
    status_code=200,
    responses={
        400: {"description": "signed, but not a Paystack event we can read", "content": _PROBLEM},
        401: {"description": "missing or invalid x-paystack-signature", "content": _PROBLEM},
        403: {"description": "the source address is not on the Paystack allowlist", "content": _PROBLEM},
    },
    summary="Paystack webhooks (charge.success, transfer.*), signed x-paystack-signature",
)
async def paystack_webhook(request: Request, db: DatabaseDep) -> JSONResponse:
    body = await request.body()
    verifier = WebhookVerifier.from_settings(request.app.state.settings.rails)
    source_ip = request.client.host if request.client else None
    try:
        event = verifier(body, request.headers, source_ip=source_ip)
    except WebhookRejected as error:
        kind = "malformed-event" if isinstance(error, MalformedEvent) else "webhook-rejected"
        raise Problem(
            error.status,
            f"urn:caas:problem:{kind}",
            title="Webhook refused",
            detail=error.reason,
            errors=[
                {"field": "x-paystack-signature" if error.status == 401 else "body", "reason": error.reason}
            ],
        ) from error
    if isinstance(event, UnknownEvent):
        return JSONResponse({"status": "ignored", "event": event.event})
    raw: dict[str, Any] = json.loads(body)
    dedupe_key = event.dedupe_key
    if isinstance(event, TransferEvent):
        # a transfer retried under its reference is a new transfer (new id) with events of its own
        dedupe_key = f"{dedupe_key}:{event.data.id}"
    async with db.worker_session() as session:
        published = await publish_once(
            session,
            topic_of(event.event),
            {"event": event.event, "data": raw.get("data")},
            consumer=CONSUMER,
            event_id=dedupe_key,
            key=event.data.reference,
        )
    if published is None:
        return JSONResponse({"status": "duplicate", "event": event.event})
    return JSONResponse({"status": "accepted", "event": event.event})
