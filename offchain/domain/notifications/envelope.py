"""The partner-facing shape of an event: `{id, type, created_at, data}`.

Producers publish outbox payloads written for other services as well as for partners; `data` is
the payload without the parts that are internal to the platform.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# DESIGN §4: what partners can subscribe to.
PARTNER_EVENT_TYPES = (
    "credit.application.submitted",
    "credit.application.approved",
    "credit.application.declined",
    "credit.offer.accepted",
    "credit.disbursement.completed",
    "credit.repayment.received",
    "credit.repayment.due",
    "credit.repayment.missed",
    "credit.collection.initiated",
    "credit.loan.repaid",
    "credit.loan.defaulted",
)
ALL_TYPES = "*"

# Keys producers add for other services (underwriting reads the token's claims); never sent out.
INTERNAL_KEYS = frozenset({"partner_claims", "internal"})


def partner_data(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    if event_type == "credit.application.submitted" and isinstance(payload.get("application"), dict):
        # the gateway publishes the public application view under "application"
        return dict(payload["application"])
    return {key: value for key, value in payload.items() if key not in INTERNAL_KEYS}


def envelope(*, event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "created_at": created_at.isoformat(), "data": data}


def subscribed(event_types: list[str], event_type: str) -> bool:
    return ALL_TYPES in event_types or event_type in event_types
