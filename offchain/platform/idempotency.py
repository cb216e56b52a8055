"""`Idempotency-Key` on partner POSTs (same key + same body ⇒ the original response).

- The first request with a key claims it (a committed row, state `in_flight`), runs, and stores
  its response (`completed`) — 2xx and 4xx alike, since both are the answer to that request.
- The same key with the same body gets the stored response again, marked
  `Idempotent-Replayed: true`; with another body, 409; while the first is still running, 409.
- A request that fails with a server error releases its claim so the client's retry can run.
- Keys are kept for `ttl` (at least 72 hours) and are scoped to the partner.

Work that runs in the partner's transaction (`in_transaction`) takes its key in that same
transaction: a transaction-scoped advisory lock on (partner, key) says "in flight" to a
concurrent duplicate, and the key row, the work and the stored answer commit together or not at
all, so a crash or a server error leaves nothing to release. That is one transaction instead of
two (3 round trips and a commit fewer on every submission). A 4xx refusal rolls the work back and
is then stored as the key's answer in a short transaction of its own.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import Table, bindparam, delete, func, null, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.persistence.credit import IdempotencyKey
from offchain.platform.db import Database
from offchain.platform.problems import Problem, render_problem

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
    # printable ASCII, as the OpenAPI declares it (offchain.platform.openapi_client.IdempotencyKey):
    # a header value outside ASCII reaches us as latin-1 guesswork
    if not 1 <= len(key) <= 255 or not (key.isascii() and key.isprintable()):
        raise Problem(
            400,
            _BAD_KEY,
            title="Invalid Idempotency-Key",
            detail="an Idempotency-Key is 1-255 printable ASCII characters",
            errors=[{"field": HEADER, "reason": "must be 1-255 printable ASCII characters"}],
        )
    return key


def _claim_statement() -> Any:
    """One statement: a new key is claimed, and a lapsed one is taken over as if new.

    Built once with bind parameters: SQLAlchemy then reuses its cache key and compiled form,
    which for an INSERT built with literal values per request cost more than the round trip.
    """
    table = cast(Table, IdempotencyKey.__table__)
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

# Advisory locks of this class (the two-int form; other advisory locks use the one-bigint form)
# mark a key whose first request is running. hashtext is 32 bits: two different keys colliding
# while both run gives one of them a spurious "in flight" 409, which a retry clears.
_LOCK_CLASS = 0x1DE4
_LOCK_AND_CLAIM = text(
    """
    WITH lock AS (
        SELECT pg_try_advisory_xact_lock(:lock_class, hashtext(:lock_scope)) AS held
    ), claim AS (
        INSERT INTO caas_idempotency_keys (partner_id, key, method, path, request_hash, expires_at)
        SELECT CAST(:partner_id AS uuid), :key, :method, :path, :request_hash,
               CAST(:expires_at AS timestamptz)
          FROM lock
         WHERE lock.held
        ON CONFLICT (partner_id, key) DO UPDATE
           SET method = excluded.method, path = excluded.path,
               request_hash = excluded.request_hash, state = 'in_flight',
               response_status = NULL, response_body = NULL, created_at = now(),
               expires_at = excluded.expires_at
         WHERE caas_idempotency_keys.expires_at < CAST(:now AS timestamptz)
        RETURNING key
    )
    SELECT (SELECT held FROM lock) AS held, EXISTS (SELECT 1 FROM claim) AS claimed
    """
)


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

    `handler` manages its own transactions (the key is claimed before and completed after, each
    in a transaction of its own). `in_transaction(session)` is given the partner's transaction
    instead, and the key is claimed and completed in that same transaction (see the module).
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
    claim = {
        "partner_id": partner_id,
        "key": key,
        "method": request.method,
        "path": request.url.path,
        "request_hash": fingerprint,
        "expires_at": now + max(ttl, MIN_TTL),
        "now": now,
    }
    if in_transaction is not None:
        locked_claim = {**claim, "lock_class": _LOCK_CLASS, "lock_scope": f"{partner_id}:{key}"}
        return await _in_one_transaction(request, db, partner_id, locked_claim, in_transaction)

    async with db.partner_session(partner_id) as session:
        claimed = await session.execute(_CLAIM, claim)
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
        return _replay(existing, fingerprint)

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
    async with db.partner_session(partner_id) as session:  # the handler committed its own work
        await _complete(session, partner_id, key, status, encoded)
    return JSONResponse(encoded, status_code=status, media_type=_media(status))


def _replay(existing: IdempotencyKey, fingerprint: str) -> JSONResponse:
    """The stored answer for a key seen before, or why there is none to give."""
    if existing.request_hash != fingerprint:
        raise Problem(
            409,
            _KEY_REUSED,
            title="Idempotency-Key reused",
            detail="this Idempotency-Key was used with a different request",
            errors=[{"field": HEADER, "reason": "already used with another method, path or body"}],
        )
    if existing.state != "completed":
        raise _in_flight()
    status = existing.response_status or 200
    return JSONResponse(
        existing.response_body,
        status_code=status,
        media_type=_media(status),
        headers={"Idempotent-Replayed": "true"},
    )


class _Refused(Exception):
    """The work refused the request (4xx): its transaction rolls back, the answer is stored after."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


async def _in_one_transaction(
    request: Request,
    db: Database,
    partner_id: uuid.UUID,
    claim: dict[str, Any],
    work: Callable[[AsyncSession], Awaitable[tuple[int, Any]]],
) -> JSONResponse:
    try:
        async with db.partner_session(partner_id) as session:
            held, claimed = (await session.execute(_LOCK_AND_CLAIM, claim)).one()
            if not held:
                raise _in_flight()
            if not claimed:
                this_key = (IdempotencyKey.partner_id == partner_id) & (IdempotencyKey.key == claim["key"])
                existing = (await session.execute(select(IdempotencyKey).where(this_key))).scalar_one()
                return _replay(existing, claim["request_hash"])
            try:
                status, body = await work(session)
            except Problem as problem:
                if problem.status >= 500:
                    raise
                raise _Refused(problem) from problem
            encoded = jsonable_encoder(body)
            await _complete(session, partner_id, claim["key"], status, encoded)
    except _Refused as refused:
        status, encoded = _problem_answer(request, refused.problem)
        async with db.partner_session(partner_id) as session:
            held, claimed = (await session.execute(_LOCK_AND_CLAIM, claim)).one()
            if held and claimed:  # else a retry got there first and gives its own answer
                await _complete(session, partner_id, claim["key"], status, encoded)
    return JSONResponse(encoded, status_code=status, media_type=_media(status))


def _in_flight() -> Problem:
    return Problem(
        409,
        _IN_FLIGHT,
        title="Request in flight",
        detail="a request with this Idempotency-Key is still being processed; retry shortly",
        headers={"Retry-After": "1"},
    )


# built once with bind parameters (see _claim_statement)
_COMPLETE = (
    update(IdempotencyKey)
    .where(IdempotencyKey.partner_id == bindparam("k_partner"), IdempotencyKey.key == bindparam("k_key"))
    .values(
        state="completed",
        response_status=bindparam("k_status"),
        response_body=bindparam("k_body", type_=IdempotencyKey.__table__.c.response_body.type),
    )
)


async def _complete(
    session: AsyncSession, partner_id: uuid.UUID | str, key: str, status: int, encoded: Any
) -> None:
    await session.execute(
        _COMPLETE,
        {"k_partner": uuid.UUID(str(partner_id)), "k_key": key, "k_status": status, "k_body": encoded},
    )


def _in_partner_transaction(
    db: Database, partner_id: uuid.UUID, work: Callable[[AsyncSession], Awaitable[tuple[int, Any]]]
) -> Callable[[], Awaitable[tuple[int, Any]]]:
    async def run() -> tuple[int, Any]:
        async with db.partner_session(partner_id) as session:
            return await work(session)

    return run


async def _answer(request: Request, handler: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
    """The handler's answer; a 4xx refusal is an answer too (stored and replayed)."""
    try:
        return await handler()
    except Problem as problem:
        if problem.status >= 500:
            raise
        return _problem_answer(request, problem)


def _problem_answer(request: Request, problem: Problem) -> tuple[int, Any]:
    return problem.status, json.loads(bytes(render_problem(request, problem).body))


def _media(status: int) -> str:
    return "application/problem+json" if status >= 400 else "application/json"
