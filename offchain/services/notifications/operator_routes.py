"""Operators' webhook routes (served by the gateway, the one published port): any partner's
webhook event sent again, in that partner's scope, audited under `operator:<sub>`."""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel
from sqlalchemy import select

from offchain.persistence.notifications import WebhookEvent
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.deps import DatabaseDep, SettingsDep
from offchain.platform.problems import not_found
from offchain.services.notifications import usecases as notifications

router = APIRouter(prefix="/v1/operations", tags=["operations"])

OperatorManage = Annotated[auth.Operator, Depends(auth.require_operator(auth.OPERATIONS_MANAGE))]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token", **PROBLEM},
    403: {"description": "not an operator token, or it lacks the permission", **PROBLEM},
    404: {"description": "not found", **PROBLEM},
    422: {"description": "a field failed validation (errors: [{field, reason}])", **PROBLEM},
}


class OperatorReplayIn(BaseModel):
    endpoint_id: uuid.UUID | None = None


@router.post(
    "/events/{event_id}/replay",
    status_code=202,
    responses={409: {"description": "no endpoint subscribes to the event", **PROBLEM}, **ERRORS},
    summary="Send any partner's webhook event again, with a fresh retry window",
)
async def replay_any_event(
    event_id: uuid.UUID,
    operator: OperatorManage,
    db: DatabaseDep,
    settings: SettingsDep,
    body: Annotated[OperatorReplayIn | None, Body()] = None,
) -> dict[str, Any]:
    async with db.worker_session() as session:
        partner_id = await session.scalar(select(WebhookEvent.partner_id).where(WebhookEvent.id == event_id))
    if partner_id is None:
        raise not_found("event", event_id)
    # the replay itself runs in the event's partner scope, exactly as the partner's own would
    async with db.partner_session(partner_id) as session:
        replayed = await notifications.replay_event(
            session=session,
            partner_id=partner_id,
            event_id=event_id,
            endpoint_id=body.endpoint_id if body is not None else None,
            listing_days=settings.notifications.event_listing_days,
        )
    out = json.loads(replayed.model_dump_json())
    async with db.worker_session() as session:
        await record_action(
            session,
            actor=operator.actor,
            action="event.replay",
            subject_type="event",
            subject_id=event_id,
            partner_id=partner_id,
            after=out,
        )
    return out
