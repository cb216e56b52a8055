"""Opaque keyset cursors: (created_at, id) of the last row, URL-safe base64."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

from offchain.platform.problems import Problem

MAX_LIMIT = 100
MAX_CURSOR = 512  # what encode_cursor issues is ~100 characters


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor names; 400 for anything this API did not issue: bad base64,
    JSON nested past the parser's depth, a time that is not a time in UTC (year 10000 there:
    `9999-12-31T23:59:59-12:00`), a wrong shape."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, row_id = json.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("no offset")
        return when.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise Problem(
            400,
            "urn:caas:problem:invalid-cursor",
            title="Invalid cursor",
            detail="pass back the next_cursor of a previous page unchanged",
            errors=[{"field": "cursor", "reason": "not a cursor this API issued"}],
        ) from error
