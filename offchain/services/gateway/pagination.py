"""Opaque keyset cursors: (created_at, id) of the last row, URL-safe base64."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from offchain.platform.problems import Problem

MAX_LIMIT = 100


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), uuid.UUID(row_id)
    except (ValueError, TypeError) as error:
        raise Problem(
            400,
            "urn:caas:problem:invalid-cursor",
            title="Invalid cursor",
            detail="pass back the next_cursor of a previous page unchanged",
            errors=[{"field": "cursor", "reason": "not a cursor this API issued"}],
        ) from error
