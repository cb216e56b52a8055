"""Notices the provider did not confirm: an outcome, recorded once per reference, not a fault.

A `charge.success` (or `sme.payment.received`) is only a hint; the provider's verify decides.
When verify answers definitely -- Paystack: "Transaction reference not found", or a status
other than success -- nothing will change by asking again a few seconds later, so the notice
ends here: a `caas_payment_notices` row in status `not_confirmed` (its count of notices goes
up if the notice comes again), a warning in the log, and
`caas_payment_notices_not_confirmed_total{provider,reason}` counted. It is not retried and not
dead-lettered (the dead-letter alerts are for faults). Operators list the rows and may have the
provider asked again (`reverify`), which takes the payment in if it is confirmed by then.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain import money_movement as mm
from offchain.persistence.money import PaymentNotice
from offchain.platform.logging import get_logger
from offchain.rails.paystack import wire

log = get_logger(__name__)
PROVIDER_OF_TOPIC = {"paystack.charge.success": mm.PAYSTACK, "sme.payment.received": mm.SME}
# what a notice claimed and an operator may need to tell notices apart: never the payer
CLAIMED_FIELDS = ("amount", "currency", "channel", "paid_at", "status")


class NoticeMetrics:
    def __init__(self) -> None:
        self.not_confirmed = Counter(
            "caas_payment_notices_not_confirmed_total",
            "Payment notices (webhooks) the provider's verify did not confirm, by provider and reason "
            "(not_found, not_successful, unusable_reference).",
            ["provider", "reason"],
            registry=None,
        )

    def register(self, registry: CollectorRegistry) -> NoticeMetrics:
        registry.register(self.not_confirmed)
        return self


def _claimed(data: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name in CLAIMED_FIELDS:
        value = data.get(name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            kept[name] = value
        elif isinstance(value, str):
            kept[name] = wire.storable(value)[:100]
    return kept


def _stored_reference(data: dict[str, Any]) -> str:
    reference = data.get("reference")
    text = wire.storable(reference) if isinstance(reference, str) else ""
    return text[: wire.MAX_REFERENCE] or "(none)"


async def record_not_confirmed(
    session: AsyncSession,
    *,
    topic: str,
    data: dict[str, Any],
    reason: str,
    detail: str,
    provider_status: str | None = None,
) -> uuid.UUID:
    """The notice ends as not confirmed: its row created, or counted once more."""
    provider = PROVIDER_OF_TOPIC.get(topic, topic.split(".", 1)[0][:16])
    values = {
        "provider": provider,
        "reference": _stored_reference(data),
        "topic": topic[:64],
        "reason": reason,
        "provider_status": wire.storable(provider_status)[:32] if provider_status else None,
        "detail": wire.storable(detail)[:1000],
        "claimed": _claimed(data),
    }
    insert = pg_insert(PaymentNotice).values(values)
    upsert = insert.on_conflict_do_update(
        index_elements=[PaymentNotice.provider, PaymentNotice.reference],
        set_={
            "notices": PaymentNotice.notices + 1,
            "last_seen_at": func.now(),
            "reason": insert.excluded.reason,
            "provider_status": insert.excluded.provider_status,
            "detail": insert.excluded.detail,
        },
        # a notice already confirmed (a reverify took the payment in) stays confirmed
        where=PaymentNotice.status == "not_confirmed",
    ).returning(PaymentNotice.id)
    notice_id = (await session.execute(upsert)).scalar_one_or_none()
    if notice_id is None:
        notice_id = (
            await session.execute(
                select(PaymentNotice.id).where(
                    PaymentNotice.provider == values["provider"],
                    PaymentNotice.reference == values["reference"],
                )
            )
        ).scalar_one()
    log.warning(
        "payment.not_confirmed",
        provider=provider,
        reference=values["reference"],
        reason=reason,
        provider_status=provider_status,
        notice_id=str(notice_id),
    )
    return notice_id


def notice_view(row: PaymentNotice) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "provider": row.provider,
        "reference": row.reference,
        "topic": row.topic,
        "status": row.status,
        "reason": row.reason,
        "provider_status": row.provider_status,
        "detail": row.detail,
        "claimed": dict(row.claimed or {}),
        "notices": row.notices,
        "payment_id": str(row.payment_id) if row.payment_id else None,
        "first_seen_at": row.first_seen_at,
        "last_seen_at": row.last_seen_at,
    }


async def list_notices(
    session: AsyncSession, *, status: str | None, limit: int, before: datetime | None = None
) -> list[PaymentNotice]:
    query = select(PaymentNotice).order_by(PaymentNotice.last_seen_at.desc(), PaymentNotice.id).limit(limit)
    if status:
        query = query.where(PaymentNotice.status == status)
    if before is not None:
        query = query.where(PaymentNotice.last_seen_at < before.astimezone(UTC))
    return list((await session.execute(query)).scalars())


async def mark_confirmed(session: AsyncSession, row: PaymentNotice, payment_id: uuid.UUID) -> None:
    row.status = "confirmed"
    row.payment_id = payment_id
    row.detail = f"confirmed by the provider on reverify; payment {payment_id}"
    row.last_seen_at = datetime.now(UTC)
