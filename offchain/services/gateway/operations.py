"""Operator routes that have no partner route beside them (served by the gateway, the one
published port): dead letters (a webhook event's replay across partners is notifications'
operator_routes.py, mounted beside these).

Operators are the lender's staff (`caas:operations:read` / `caas:operations:manage`, tokens of
the SME auth service without `partner_id`); every action here is in the audit log under
`operator:<sub>`. The other platform-wide actions keep their paths (close of business,
trial balance and reconciliation, suspense and manual matching, payout release/retry/OTP,
monitoring flags, the audit log): see docs/SECURITY.md.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import select

from offchain.eventbus.messages import StreamNames
from offchain.persistence.notifications import WebhookDelivery
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.deps import DatabaseDep, RedisDep, SettingsDep
from offchain.platform.problems import NOT_FOUND, Problem

router = APIRouter(prefix="/v1/operations", tags=["operations"])

OperatorRead = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_READ))]
OperatorManage = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_MANAGE))]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "not an operator token, or it lacks the permission", **PROBLEM},
    404: {"description": "not found", **PROBLEM},
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
}
Group = Annotated[str, Path(pattern=r"^[a-z0-9._-]{1,100}$")]


# a Redis stream id is two unsigned 64-bit numbers (milliseconds-sequence): at most 19 digits
# each keeps every id below 2**64, so XRANGE never sees one it refuses (a 500 before)
MessageId = Annotated[str, Path(pattern=r"^[0-9]{1,19}-[0-9]{1,19}$")]


def _dead_letter_view(group: str, message_id: str, fields: dict[str, str]) -> dict[str, Any]:
    return {
        "group": group,
        "message_id": message_id,
        "topic": fields.get("topic"),
        "outbox_id": fields.get("outbox_id"),
        "partner_id": fields.get("partner_id") or None,
        "stream": fields.get("dead_letter_stream"),
        "deliveries": int(fields.get("dead_letter_deliveries") or 0),
        "error": fields.get("dead_letter_error"),
        "created_at": fields.get("created_at"),
    }


def _decoded(fields: dict[Any, Any] | None) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in (fields or {}).items()
    }


@router.get(
    "/dead-letters",
    responses=ERRORS,
    summary="Messages no consumer could handle, and dead webhook deliveries",
)
async def dead_letters(
    operator: OperatorRead,
    db: DatabaseDep,
    redis: RedisDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    names = StreamNames(settings.events.stream_prefix)
    prefix = names.dead_letter("")
    messages = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=500):
        stream = key.decode() if isinstance(key, bytes) else str(key)
        group = stream.removeprefix(prefix)
        for message_id, fields in await redis.xrevrange(stream, count=limit) or []:
            mid = message_id.decode() if isinstance(message_id, bytes) else str(message_id)
            messages.append(_dead_letter_view(group, mid, _decoded(fields)))
    async with db.worker_session() as session:
        dead = (
            await session.execute(
                select(WebhookDelivery)
                .where(WebhookDelivery.status == "dead")
                .order_by(WebhookDelivery.dead_at.desc())
                .limit(limit)
            )
        ).scalars()
        deliveries = [
            {
                "delivery_id": str(d.id),
                "partner_id": str(d.partner_id),
                "event_id": str(d.event_id),
                "endpoint_id": str(d.endpoint_id),
                "attempts": d.attempts,
                "last_status_code": d.last_status_code,
                "dead_at": d.dead_at.isoformat() if d.dead_at else None,
            }
            for d in dead
        ]
    return {"messages": messages[:limit], "webhook_deliveries": deliveries}


@router.post(
    "/dead-letters/{group}/{message_id}/requeue",
    status_code=202,
    responses=ERRORS,
    summary="Put a dead-lettered message back on its stream (its consumers dedupe on the outbox id)",
)
async def requeue_dead_letter(
    group: Group,
    message_id: MessageId,
    operator: OperatorManage,
    db: DatabaseDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    names = StreamNames(settings.events.stream_prefix)
    dead_stream = names.dead_letter(group)
    found = await redis.xrange(dead_stream, min=message_id, max=message_id, count=1)
    if not found:
        raise Problem(404, NOT_FOUND, title="No such dead letter")
    fields = _decoded(found[0][1])
    stream = fields.get("dead_letter_stream") or ""
    if not stream.startswith(names.topic("")):
        raise Problem(
            409, "urn:caas:problem:dead-letter-unroutable", title="The dead letter names no event stream"
        )
    original = {k: v for k, v in fields.items() if not k.startswith("dead_letter_")}
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(stream, original)  # type: ignore[arg-type]
    pipe.xdel(dead_stream, message_id)
    new_id, _ = await pipe.execute()
    async with db.worker_session() as session:
        await record_action(
            session,
            actor=operator.actor,
            action="dead_letter.requeue",
            subject_type="dead_letter",
            subject_id=f"{group}:{message_id}",
            partner_id=uuid.UUID(fields["partner_id"]) if fields.get("partner_id") else None,
            before=_dead_letter_view(group, message_id, fields),
            after={
                "stream": stream,
                "message_id": new_id.decode() if isinstance(new_id, bytes) else str(new_id),
            },
        )
    return {"requeued": True, "stream": stream, "topic": original.get("topic")}
