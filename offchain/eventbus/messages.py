"""What travels on the bus: stream names and the wire encoding of one outbox row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StreamNames:
    """One Redis stream per topic, one dead-letter stream per consumer group."""

    prefix: str = "caas"

    def topic(self, topic: str) -> str:
        return f"{self.prefix}:events:{topic}"

    def dead_letter(self, group: str) -> str:
        return f"{self.prefix}:dead-letter:{group}"


@dataclass(frozen=True)
class Event:
    id: int  # the outbox id: stable across relays and replays, so consumers dedupe on it
    topic: str
    payload: dict[str, Any]
    key: str | None = None
    partner_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    stream_id: str = ""  # this delivery's Redis message id
    deliveries: int = 1


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def encode(
    *,
    outbox_id: int,
    topic: str,
    payload: dict[str, Any],
    key: str | None,
    partner_id: Any,
    headers: dict[str, Any],
    created_at: datetime | str,
) -> dict[str, str]:
    return {
        "outbox_id": str(outbox_id),
        "topic": topic,
        "key": key or "",
        "partner_id": str(partner_id) if partner_id else "",
        "payload": _json(payload),
        "headers": _json(headers or {}),
        "created_at": created_at.isoformat() if isinstance(created_at, datetime) else created_at,
    }


def decode(stream_id: str, fields: dict[str, str], deliveries: int = 1) -> Event:
    return Event(
        id=int(fields["outbox_id"]),
        topic=fields["topic"],
        payload=json.loads(fields["payload"]),
        key=fields.get("key") or None,
        partner_id=fields.get("partner_id") or None,
        headers=json.loads(fields.get("headers") or "{}"),
        created_at=fields.get("created_at", ""),
        stream_id=stream_id,
        deliveries=deliveries,
    )
