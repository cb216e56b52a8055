"""`POST /v1/webhooks/paystack`: Paystack's signed deliveries (DESIGN §4).

Source allowlist, then the HMAC-SHA512 signature on the raw bytes, then parsing: a bad delivery
is refused and changes nothing. An accepted event is claimed by its dedupe key and put on the
outbox in one transaction, so a delivery repeated (Paystack retries for 72 hours, and may send
one event twice, concurrently) has exactly one effect downstream. The webhook is only a hint:
the repayment and disbursement services verify every amount and status with Paystack before
money moves. Event types we do not act on are acknowledged with 200 (anything else makes
Paystack retry) and dropped; so is a signed event that can never be a payment of ours (a
reference Paystack could not have issued). Every answer is counted by outcome
(`caas_paystack_webhooks_total`). The decided answer to each kind of odd body: docs/PAYSTACK.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field

from offchain.eventbus.outbox import publish_once
from offchain.platform.access import public
from offchain.platform.deps import DatabaseDep
from offchain.platform.logging import get_logger
from offchain.platform.problems import Problem
from offchain.rails.paystack.webhooks import (
    MalformedEvent,
    TransferEvent,
    UnknownEvent,
    UnusableEvent,
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
log = get_logger(__name__)

_PROBLEM: dict[str, Any] = {"application/problem+json": {}}


class WebhookAck(BaseModel):
    """What the intake did with a delivery (Paystack only looks at the 200)."""

    status: str = Field(description="accepted | duplicate | ignored (a type we do not act on, or unusable)")
    event: str
    reason: str | None = Field(default=None, description="why an event of a type we act on was ignored")


class PaystackWebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "caas_paystack_webhooks_total",
            "Paystack webhook deliveries by event and outcome (accepted, duplicate, ignored, "
            "unusable, malformed, refused).",
            ["event", "outcome"],
            registry=registry,
        )
        # event types are Paystack's to add: unknown ones share one label value
        self.known = {
            "charge.success",
            "transfer.success",
            "transfer.failed",
            "transfer.reversed",
            "dedicatedaccount.assign.success",
            "dedicatedaccount.assign.failed",
        }

    def count(self, event: str, outcome: str) -> None:
        self.deliveries.labels(event if event in self.known else "other", outcome).inc()


def topic_of(event_type: str) -> str:
    """Outbox topic of a Paystack event: `paystack.charge.success`, `paystack.transfer.failed`, ..."""
    return TOPIC_PREFIX + event_type


def _count(request: Request, event: str, outcome: str) -> None:
    metrics: PaystackWebhookMetrics | None = getattr(request.app.state, "paystack_metrics", None)
    if metrics is not None:
        metrics.count(event, outcome)


@router.post(
    "/webhooks/paystack",
    status_code=200,
    response_model=WebhookAck,
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
        event, payload = verifier.read(body, request.headers, source_ip=source_ip)
    except WebhookRejected as error:
        malformed = isinstance(error, MalformedEvent)
        _count(request, "other", "malformed" if malformed else "refused")
        if malformed:
            # signed by Paystack's key, and still unreadable: Paystack changed a shape, or the key
            # leaked. Either way an operator must look (and Paystack retries meanwhile).
            log.error(
                "paystack.webhook_malformed",
                reason=error.reason[:500],
                body_sha256=hashlib.sha256(body).hexdigest(),
                size=len(body),
            )
        kind = "malformed-event" if malformed else "webhook-rejected"
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
        _count(request, event.event, "ignored")
        return JSONResponse(WebhookAck(status="ignored", event=event.event).model_dump(exclude_none=True))
    if isinstance(event, UnusableEvent):
        _count(request, event.event, "unusable")
        log.warning(
            "paystack.webhook_unusable",
            paystack_event=event.event,
            reason=event.reason,
            body_sha256=hashlib.sha256(body).hexdigest(),
        )
        ack = WebhookAck(status="ignored", event=event.event, reason=event.reason)
        return JSONResponse(ack.model_dump())
    dedupe_key = event.dedupe_key
    if isinstance(event, TransferEvent):
        # a transfer retried under its reference is a new transfer (new id) with events of its own
        dedupe_key = f"{dedupe_key}:{event.data.id}"
    async with db.worker_session() as session:
        published = await publish_once(
            session,
            topic_of(event.event),
            {"event": event.event, "data": payload.get("data")},
            consumer=CONSUMER,
            event_id=dedupe_key,
            key=event.data.reference,
        )
    outcome = "duplicate" if published is None else "accepted"
    _count(request, event.event, outcome)
    return JSONResponse(WebhookAck(status=outcome, event=event.event).model_dump(exclude_none=True))
