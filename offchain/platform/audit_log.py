"""The append-only audit log of privileged actions: who did what to which subject, when, and the
state before and after (caas_audit_log; a trigger refuses UPDATE, DELETE and TRUNCATE).

Written in the same transaction as the action itself, so an action and its audit entry exist
together or not at all.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.models import AuditLogEntry
from offchain.platform.logging import bound_context


async def record_action(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | uuid.UUID,
    partner_id: uuid.UUID | str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    **details: Any,
) -> None:
    await session.execute(
        insert(AuditLogEntry).values(
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=str(subject_id),
            partner_id=partner_id,
            request_id=bound_context().get("request_id"),
            details={"before": before, "after": after, **details},
        )
    )
