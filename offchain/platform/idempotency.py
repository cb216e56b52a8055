"""`Idempotency-Key` on partner POSTs (same key + same body ⇒ the original response).

- The first request with a key claims it (a committed row, state `in_flight`), runs, and stores
  its response (`completed`) — 2xx and 4xx alike, since both are the answer to that request.
- The same key with the same body gets the stored response again, marked
  `Idempotent-Replayed: true`; with another body, 409; while the first is still running, 409.
- A request that fails with a server error releases its claim so the client's retry can run.
- Keys are kept for `ttl` (at least 72 hours) and are scoped to the partner.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import bindparam, delete, func, null, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.credit import IdempotencyKey
from offchain.platform.db import Database
from offchain.platform.problems import Problem, problem_response

HEADER = "Idempotency-Key"
MIN_TTL = timedelta(hours=72)
_KEY_REUSED = "urn:caas:problem:idempotency-key-reused"
_IN_FLIGHT = "urn:caas:problem:idempotency-key-in-flight"
_BAD_KEY = "urn:caas:problem:invalid-idempotency-key"


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Same JSON meaning ⇒ same fingerprint, whatever the key order or whitespace."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _validated(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise Problem(
            400,
            _BAD_KEY,
            title="Invalid Idempotency-Key",
            detail="an Idempotency-Key is 1-255 printable characters",
            errors=[{"field": HEADER, "reason": "must be 1-255 printable characters"}],
        )
    return key


def _claim_statement() -> Any:
    """One statement: a new key is claimed, and a lapsed one is taken over as if new.

    Built once with bind parameters: SQLAlchemy then reuses its cache key and compiled form,
    which for an INSERT built with literal values per request cost more than the round trip.
    """
    table = IdempotencyKey.__table__
    claim = insert(table).values(
        partner_id=bindparam("partner_id"),
        key=bindparam("key"),
        method=bindparam("method"),
        path=bindparam("path"),
        request_hash=bindparam("request_hash"),
        expires_at=bindparam("expires_at"),
    )
    return claim.on_conflict_do_update(
        index_elements=[table.c.partner_id, table.c.key],
        set_={
            "method": claim.excluded.method,
            "path": claim.excluded.path,
            "request_hash": claim.excluded.request_hash,
            "state": "in_flight",
            "response_status": null(),
            "response_body": null(),
            "created_at": func.now(),
            "expires_at": claim.excluded.expires_at,
        },
        where=table.c.expires_at < bindparam("now"),
    ).returning(table.c.key)


_CLAIM = _claim_statement()


async def run_idempotent(
    request: Request,
    *,
    db: Database,
    partner_id: uuid.UUID,
    handler: Callable[[], Awaitable[tuple[int, Any]]] | None = None,
    in_transaction: Callable[[AsyncSession], Awaitable[tuple[int, Any]]] | None = None,
    ttl: timedelta = MIN_TTL,
) -> JSONResponse:
    """Run the request's work (returning status and JSON body) at most once per partner key.

    `handler` manages its own transactions. `in_transaction(session)` is given the partner's
    transaction instead, and the key is completed in that same transaction: the answer is stored
    exactly when the work commits, and a request costs one transaction fewer.
    """
    if (handler is None) == (in_transaction is None):
        raise TypeError("pass exactly one of handler and in_transaction")
    raw_key = request.headers.get(HEADER)
    if in_transaction is not None:
        handler = _in_partner_transaction(db, partner_id, in_transaction)
    assert handler is not None
    if raw_key is None:
        status, body = await _answer(request, handler)
        return JSONResponse(jsonable_encoder(body), status_code=status, media_type=_media(status))
    key = _validated(raw_key)
    fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
    now = datetime.now(UTC)
    this_key = (IdempotencyKey.partner_id == partner_id) & (IdempotencyKey.key == key)

    async with db.partner_session(partner_id) as session:
        claimed = await session.execute(
            _CLAIM,
            {
                "partner_id": partner_id,
                "key": key,
                "method": request.method,
                "path": request.url.path,
                "request_hash": fingerprint,
                "expires_at": now + max(ttl, MIN_TTL),
                "now": now,
            },
        )
        is_first = claimed.scalar_one_or_none() is not None
        existing = None
        if not is_first:
            existing = (
                await session.execute(
                    select(IdempotencyKey).where(
                        IdempotencyKey.partner_id == partner_id, IdempotencyKey.key == key
                    )
                )
            ).scalar_one()

    if existing is not None:
        if existing.request_hash != fingerprint:
            raise Problem(
                409,
                _KEY_REUSED,
                title="Idempotency-Key reused",
                detail="this Idempotency-Key was used with a different request",
                errors=[{"field": HEADER, "reason": "already used with another method, path or body"}],
            )
        if existing.state != "completed":
            raise Problem(
                409,
                _IN_FLIGHT,
                title="Request in flight",
                detail="a request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            )
        status = existing.response_status or 200
        return JSONResponse(
            existing.response_body,
            status_code=status,
            media_type=_media(status),
            headers={"Idempotent-Replayed": "true"},
        )

    completed: list[bool] = []
    if in_transaction is not None:
        handler = _in_partner_transaction(db, partner_id, in_transaction, complete=this_key, done=completed)
    try:
        status, body = await _answer(request, handler)
    except BaseException:
        async with db.partner_session(partner_id) as session:
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.partner_id == partner_id, IdempotencyKey.key == key
                )
            )
        raise
    encoded = jsonable_encoder(body)
    if not completed:  # a refusal (the work rolled back) or a self-managed handler
        async with db.partner_session(partner_id) as session:
            await session.execute(_complete(this_key, status, encoded))
    return JSONResponse(encoded, status_code=status, media_type=_media(status))


def _complete(this_key: Any, status: int, encoded: Any) -> Any:
    return (
        update(IdempotencyKey)
        .where(this_key)
        .values(state="completed", response_status=status, response_body=encoded)
    )


def _in_partner_transaction(
    db: Database,
    partner_id: uuid.UUID,
    work: Callable[[AsyncSession], Awaitable[tuple[int, Any]]],
    *,
    complete: Any = None,
    done: list[bool] | None = None,
) -> Callable[[], Awaitable[tuple[int, Any]]]:
    async def run() -> tuple[int, Any]:
        async with db.partner_session(partner_id) as session:
            status, body = await work(session)
            if complete is not None:
                body = jsonable_encoder(body)
                await session.execute(_complete(complete, status, body))
        if done is not None:
            done.append(True)  # committed: the answer is stored
        return status, body

    return run


async def _answer(request: Request, handler: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
    """The handler's answer; a 4xx refusal is an answer too (stored and replayed)."""
    try:
        return await handler()
    except Problem as problem:
        if problem.status >= 500:
            raise
        response = problem_response(
            request,
            problem.status,
            type=problem.type,
            title=problem.title,
            detail=problem.detail,
            errors=problem.errors,
            **problem.extensions,
        )
        return problem.status, json.loads(response.body)


def _media(status: int) -> str:
    return "application/problem+json" if status >= 400 else "application/json"
