"""Issue 14's edges, each on the real apps (PostgreSQL, Redis, a real uvicorn where the wire
matters): the body limit, rate limits on every partner route, failed authentications per address,
tokens with absurd claims, partners apart from each other's unmatched money and ledger, and
operators' actions in the audit log under their own identity."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from identities import DEV_JWT_SECRET, SERVICE_KEY, operator_headers, service_headers
from permission_matrix_rules import concrete, rule_for
from sqlalchemy import insert, select

from offchain.chain.artifacts import compile_contract
from offchain.domain import ledger as L
from offchain.eventbus.messages import StreamNames
from offchain.persistence import ledger
from offchain.persistence.models import AuditLogEntry, Loan, Partner
from offchain.persistence.money import Payment
from offchain.platform import auth
from offchain.platform.access import Kind, routes_with_rules
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app
from offchain.stack.runner import InProcessServers, NamedApp

MIB = 1024 * 1024


def partner_headers(
    partner: uuid.UUID, permissions: tuple[str, ...] = auth.ALL_PERMISSIONS
) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {auth.issue_token(DEV_JWT_SECRET, partner_id=partner, permissions=permissions)}"
    }


def _random_address() -> str:
    """A client address of its own (the failure counters live in Redis for their window)."""
    value = uuid.uuid4().int
    return f"10.{value % 256}.{(value >> 8) % 256}.{(value >> 16) % 256}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the body limit, on the wire ------------------------------------------------------------------


@pytest_asyncio.fixture
async def gateway_server(settings: Settings) -> AsyncIterator[str]:
    port = _free_port()
    servers = InProcessServers([NamedApp("gateway", create_app("gateway", settings), port)])
    await servers.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await servers.stop()


def _raw_exchange(address: str, head: bytes, first_chunk: bytes) -> tuple[bytes, float]:
    """Send the head and a first piece of a (much larger) body, then read what comes back
    without sending another byte: the answer must not wait for the rest."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head + first_chunk)
        answer = b""
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 10:
            piece = sock.recv(65_536)
            if not piece:
                break
            answer += piece
            if b"}" in answer.split(b"\r\n\r\n", 1)[-1]:
                break
        return answer, time.monotonic() - started


@pytest.mark.asyncio
async def test_a_64_mib_body_is_refused_before_it_is_read(gateway_server: str) -> None:
    # an unauthenticated route of the public port, a declared 64 MiB body: 413 after 64 KiB
    head = (
        f"POST /v1/applications HTTP/1.1\r\nHost: {gateway_server}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {64 * MIB}\r\n\r\n"
    ).encode()
    answer, seconds = await asyncio.to_thread(_raw_exchange, gateway_server, head, b"[" * 65_536)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"application/problem+json" in headers.lower() and b"connection: close" in headers.lower()
    problem = json.loads(body[: body.rindex(b"}") + 1])
    assert problem["type"] == "urn:caas:problem:body-too-large" and problem["max_bytes"] == MIB
    assert seconds < 3, f"took {seconds:.1f} s: it read the body"

    # chunked (no Content-Length): counted while read, refused as soon as it passes 1 MiB
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += MIB
            yield b" " * MIB

    async with httpx.AsyncClient(timeout=30) as http:
        try:
            response = await http.post(
                f"http://{gateway_server}/v1/events/sme",
                content=chunks(),
                headers={"content-type": "application/json"},
            )
            status = response.status_code
            assert response.headers["content-type"].startswith("application/problem+json")
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            status = 413  # the server answered and closed the connection under the rest of the upload
    assert status == 413
    assert sent < 16 * MIB, f"{sent // MIB} MiB went up before the refusal"


# --- rate limits: every partner route ---------------------------------------------------------------


@pytest.fixture
def limited(settings: Settings) -> Settings:
    tiny = {"read": "2/minute", "write": "2/minute"}
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"rate_limits": tiny})})


def _partner_routes(service: str, app: Any) -> Iterator[tuple[str, str]]:
    for method, path, _ in routes_with_rules(app):
        if rule_for(service, method, path).kind in (Kind.PARTNER, Kind.SHARED):
            yield method, path


def test_every_partner_route_is_rate_limited_with_headers(limited: Settings) -> None:
    from fastapi.testclient import TestClient

    checked = 0
    for service in SERVICES:
        app = create_app(service, limited)
        with TestClient(app, raise_server_exceptions=False) as client:
            for method, path in _partner_routes(service, app):
                headers = partner_headers(uuid.uuid4())  # a quota of its own
                url = concrete(path)

                def call() -> httpx.Response:
                    if method == "GET":
                        return client.get(url, headers=headers)
                    return client.request(
                        method, url, headers={**headers, "content-type": "application/json"}, content=b"[]"
                    )

                first, second, third = call(), call(), call()
                assert first.headers.get("ratelimit-limit") == "2", (service, method, path, first.status_code)
                assert first.headers["ratelimit-remaining"] == "1", (service, method, path)
                assert second.headers["ratelimit-remaining"] == "0", (service, method, path)
                assert third.status_code == 429, (service, method, path, third.status_code)
                assert int(third.headers["retry-after"]) >= 1 and third.headers["ratelimit-remaining"] == "0"
                checked += 1
    print(
        f"\nrate limits: {checked} partner routes across {len(SERVICES)} services, each 429 on its third call"
    )
    assert checked >= 55  # 40 on the gateway, the rest where the internal ports serve them too


# --- failed authentications per client address ----------------------------------------------------


def test_failed_authentication_is_limited_per_address(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    strict = settings.model_copy(
        update={"limits": settings.limits.model_copy(update={"failed_auth": "5/minute"})}
    )
    app = create_app("gateway", strict)
    good = partner_headers(uuid.uuid4())
    forged = {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "x", "partner_id": str(uuid.uuid4()), "exp": 2**31}, "guess" * 8)
    }
    with TestClient(app, raise_server_exceptions=False, client=(_random_address(), 5000)) as client:
        # no token at all is not a guess: never counted
        assert {client.get("/v1/loans").status_code for _ in range(10)} == {401}
        assert client.get("/v1/loans", headers=good).status_code == 200
        statuses = [client.get("/v1/loans", headers=forged).status_code for _ in range(7)]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429], statuses
        blocked = client.get("/v1/loans", headers=good)
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert blocked.json()["type"] == "urn:caas:problem:too-many-failed-authentications"
        # service tokens are counted the same way on the internal ports
    internal = create_app("offers", strict)
    with TestClient(internal, raise_server_exceptions=False, client=(_random_address(), 5000)) as client:
        wrong = service_headers("gateway", "offers", key="a-guessed-service-key-0000000000")
        statuses = [client.get("/v1/pricing", headers=wrong).status_code for _ in range(6)]
        assert statuses == [401] * 5 + [429], statuses


# --- tokens with claims no clock reaches -----------------------------------------------------------


def test_absurd_time_claims_are_401_not_500(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    partner = uuid.uuid4()
    huge = jwt.encode({"sub": "x", "partner_id": str(partner), "exp": 10**400}, DEV_JWT_SECRET)
    negative = jwt.encode(
        {"sub": "x", "partner_id": str(partner), "exp": 2**33, "iat": -(10**30)}, DEV_JWT_SECRET
    )
    service = jwt.encode(
        {
            "iss": "caas-services",
            "sub": "gateway",
            "aud": "offers",
            "iat": 0,
            "exp": 10**400,
            "typ": "caas-service",
        },
        SERVICE_KEY,
    )
    for name, path, token in [
        ("disbursement", "/v1/monitoring/flags", huge),
        ("repayment", "/v1/payments", huge),
        ("gateway", "/v1/loans", huge),
        ("gateway", "/v1/loans", negative),
        ("offers", "/v1/pricing", service),
    ]:
        with TestClient(create_app(name, settings), raise_server_exceptions=False) as client:
            response = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (name, path, response.status_code, response.text)
            # issue 15: these answered 500 ('State' object has no attribute 'jwt_verifier')
            assert client.get(path).status_code == 401
    with TestClient(create_app("disbursement", settings), raise_server_exceptions=False) as client:
        assert client.get("/v1/monitoring/flags", headers=operator_headers()).status_code == 200
        assert client.get("/v1/monitoring/flags", headers=partner_headers(partner)).status_code == 403
    with TestClient(create_app("repayment", settings), raise_server_exceptions=False) as client:
        assert client.get("/v1/payments", headers=partner_headers(partner)).status_code == 200


# --- partners apart: unmatched money, ledger, audit log ---------------------------------------------


@pytest.fixture
def deployment_file(tmp_path: Path) -> Path:
    """A deployment the routes can load (the intents they record are never sent here)."""
    path = tmp_path / "trust.json"
    path.write_text(
        json.dumps(
            {
                "chain_id": 31337,
                "contracts": {
                    "LoanBook": {
                        "address": "0x" + "42" * 20,
                        "abi": compile_contract("LoanBook").abi,
                        "block": 0,
                    },
                    "DisbursementCommittee": {
                        "address": "0x" + "43" * 20,
                        "abi": compile_contract("DisbursementCommittee").abi,
                        "block": 0,
                    },
                },
            }
        )
    )
    return path


async def _partner_with_loan(db: Database, name: str) -> tuple[uuid.UUID, uuid.UUID, str]:
    partner = uuid.uuid4()
    chain_id = "0x" + uuid.uuid4().hex * 2
    async with db.worker_session() as session:
        await session.execute(insert(Partner).values(id=partner, name=name))
        loan = (
            await session.execute(
                insert(Loan)
                .values(partner_id=partner, chain_loan_id=chain_id, currency=566, chain_state=3)
                .returning(Loan.id)
            )
        ).scalar_one()
    return partner, loan, chain_id


async def _unmatched(db: Database, record: dict[str, Any]) -> uuid.UUID:
    reference = f"T-{uuid.uuid4().hex[:12]}"
    async with db.worker_session() as session:
        return (
            await session.execute(
                insert(Payment)
                .values(
                    provider="paystack",
                    provider_reference=reference,
                    payment_ref="0x" + uuid.uuid4().hex * 2,
                    amount=5_000_00,
                    currency="NGN",
                    status="unmatched",
                    provider_record=record,
                )
                .returning(Payment.id)
            )
        ).scalar_one()


@pytest.mark.asyncio
async def test_partners_see_and_match_only_money_attributable_to_them(
    settings: Settings, db: Database, deployment_file: Path
) -> None:
    a, a_loan, _ = await _partner_with_loan(db, "partner A")
    b, b_loan, _ = await _partner_with_loan(db, "partner B")
    a_money = await _unmatched(db, {"metadata": {"loan_id": str(a_loan)}})  # names A's loan
    nobodys = await _unmatched(db, {"metadata": {}})  # no one can place it
    configured = settings.model_copy(
        update={"chain": settings.chain.model_copy(update={"deployment_file": deployment_file})}
    )
    app = create_app("gateway", configured)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):

        async def unmatched(headers: dict[str, str]) -> set[str]:
            response = await client.get(
                "/v1/payments", params={"status": "unmatched", "limit": 200}, headers=headers
            )
            assert response.status_code == 200, response.text
            return {row["id"] for row in response.json()["data"]}

        assert str(a_money) in await unmatched(partner_headers(a))
        assert str(nobodys) not in await unmatched(partner_headers(a))
        assert not {str(a_money), str(nobodys)} & await unmatched(partner_headers(b))
        assert {str(a_money), str(nobodys)} <= await unmatched(operator_headers())
        assert (await client.get(f"/v1/payments/{a_money}", headers=partner_headers(b))).status_code == 404
        # B matches A's money to B's own loan: not found, nothing moves
        stolen = await client.post(
            f"/v1/payments/{a_money}/match", json={"loan_id": str(b_loan)}, headers=partner_headers(b)
        )
        assert stolen.status_code == 404, stolen.text
        # ... nor money nobody can place, nor to A's loan
        assert (
            await client.post(
                f"/v1/payments/{nobodys}/match", json={"loan_id": str(b_loan)}, headers=partner_headers(b)
            )
        ).status_code == 404
        assert (
            await client.post(
                f"/v1/payments/{a_money}/match", json={"loan_id": str(a_loan)}, headers=partner_headers(b)
            )
        ).status_code == 404
        async with db.worker_session() as session:
            status = await session.scalar(select(Payment.status).where(Payment.id == a_money))
        assert status == "unmatched"
        # A matches its own; an operator matches what nobody could place
        mine = await client.post(
            f"/v1/payments/{a_money}/match", json={"loan_id": str(a_loan)}, headers=partner_headers(a)
        )
        assert mine.status_code == 200, mine.text
        placed = await client.post(
            f"/v1/payments/{nobodys}/match",
            json={"loan_id": str(b_loan)},
            headers=operator_headers("ops-chidi"),
        )
        assert placed.status_code == 200, placed.text
        # the operator's match is in B's audit log under the operator's name, not in A's
        b_log = (await client.get("/v1/audit/log", headers=partner_headers(b))).json()["data"]
        assert [e["actor"] for e in b_log if e["subject_id"] == str(nobodys)] == ["operator:ops-chidi"]
        a_log = (await client.get("/v1/audit/log", headers=partner_headers(a))).json()["data"]
        assert all(e["subject_id"] != str(nobodys) for e in a_log)


@pytest.mark.asyncio
async def test_a_partner_sees_only_its_own_ledger_accounts(settings: Settings, db: Database) -> None:
    a, a_loan, a_chain = await _partner_with_loan(db, "partner A")
    b, _, _ = await _partner_with_loan(db, "partner B")
    tag = uuid.uuid4().hex[:8]
    async with db.worker_session() as session:
        await ledger.post(
            session,
            L.Posting(
                posting_id=f"{tag}:suspense",
                description="money nobody placed",
                legs=(L.debit(L.rail_clearing("paystack"), 7_00, "NGN"), L.credit(L.SUSPENSE, 7_00, "NGN")),
            ),
        )
        await ledger.post(
            session,
            L.Posting(
                posting_id=f"{tag}:funding",
                description="A's funding",
                legs=(
                    L.debit(L.loan_receivable(a_chain), 9_00, "NGN"),
                    L.credit(L.partner_funding(str(a)), 9_00, "NGN"),
                ),
            ),
        )
    app = create_app("gateway", settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):

        async def balance(account: str, headers: dict[str, str]) -> int:
            response = await client.get(
                f"/v1/ledger/accounts/{account}/balance", params={"currency": "NGN"}, headers=headers
            )
            return response.status_code

        assert await balance(L.SUSPENSE, partner_headers(a)) == 404  # every partner's unmatched money
        assert await balance(L.SUSPENSE, operator_headers()) == 200
        assert await balance(L.partner_funding(str(a)), partner_headers(a)) == 200
        assert await balance(L.partner_funding(str(a)), partner_headers(b)) == 404
        assert (
            await client.get(f"/v1/ledger/postings/{tag}:suspense", headers=partner_headers(a))
        ).status_code == 404
        assert (
            await client.get(f"/v1/ledger/postings/{tag}:funding", headers=partner_headers(b))
        ).status_code == 404
        assert (
            await client.get(f"/v1/ledger/postings/{tag}:funding", headers=partner_headers(a))
        ).status_code == 200
        assert (await client.get(f"/v1/ledger/loans/{a_loan}", headers=partner_headers(b))).status_code == 404
        for path in ("/v1/ledger/trial-balance", "/v1/ledger/reconciliation"):
            assert (await client.get(path, headers=partner_headers(a))).status_code == 403


# --- operators: their actions in the audit log under their identity ---------------------------------


@pytest.mark.asyncio
async def test_operator_actions_are_audited_under_the_operators_identity(
    settings: Settings, db: Database, redis: Any
) -> None:
    from offchain.persistence.notifications import WebhookEndpoint, WebhookEvent
    from offchain.services.notifications.secrets import secret_box

    a, _, _ = await _partner_with_loan(db, "partner A")
    b, _, _ = await _partner_with_loan(db, "partner B")
    async with db.partner_session(a) as session:
        session.add(
            WebhookEndpoint(
                partner_id=a,
                url="https://8.8.8.8/hooks",
                event_types=["*"],
                secret_ciphertext=secret_box(settings.notifications).encrypt("whsec_x"),
            )
        )
        event = WebhookEvent(
            partner_id=a,
            outbox_id=-int(uuid.uuid4().int % 10**12),
            type="credit.loan.repaid",
            data={},
            created_at=datetime.now(UTC),
        )
        session.add(event)
        await session.flush()
        event_id = event.id
    names = StreamNames(settings.events.stream_prefix)
    group = f"trust-{uuid.uuid4().hex[:6]}"
    topic_stream = names.topic("credit.loan.repaid")
    dead_id = await redis.xadd(
        names.dead_letter(group),
        {
            "outbox_id": "42",
            "topic": "credit.loan.repaid",
            "key": "",
            "partner_id": str(a),
            "payload": "{}",
            "headers": "{}",
            "created_at": "2026-12-01T00:00:00+00:00",
            "dead_letter_group": group,
            "dead_letter_stream": topic_stream,
            "dead_letter_message_id": "1-0",
            "dead_letter_deliveries": "5",
            "dead_letter_error": "RuntimeError('boom')",
        },
    )
    dead_id = dead_id.decode() if isinstance(dead_id, bytes) else dead_id
    ops = operator_headers("ops-amaka")
    app = create_app("gateway", settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        # partners: none of it
        assert (
            await client.get("/v1/operations/dead-letters", headers=partner_headers(a))
        ).status_code == 403
        assert (
            await client.post(f"/v1/operations/events/{event_id}/replay", headers=partner_headers(b))
        ).status_code == 403
        # B cannot replay A's event through its own route either
        assert (
            await client.post(f"/v1/events/{event_id}/replay", headers=partner_headers(b))
        ).status_code == 404

        listed = (await client.get("/v1/operations/dead-letters", headers=ops)).json()
        assert any(m["group"] == group and m["message_id"] == dead_id for m in listed["messages"])
        requeued = await client.post(f"/v1/operations/dead-letters/{group}/{dead_id}/requeue", headers=ops)
        assert requeued.status_code == 202, requeued.text
        assert await redis.xlen(names.dead_letter(group)) == 0
        replayed = await client.post(f"/v1/operations/events/{event_id}/replay", headers=ops)
        assert replayed.status_code == 202, replayed.text
        run = await client.post("/v1/ledger/reconciliation/runs", headers=ops)
        assert run.status_code == 201, run.text

        # the platform-wide log is the operators'; A's own log shows what was done to A's things
        everything = (await client.get("/v1/audit/log", params={"limit": 100}, headers=ops)).json()["data"]
        mine = [e for e in everything if e["actor"] == "operator:ops-amaka"]
        assert {e["action"] for e in mine} == {
            "dead_letter.requeue",
            "event.replay",
            "ledger.reconciliation_run",
        }
        for entry in mine:
            assert entry["request_id"]
        a_log = (await client.get("/v1/audit/log", params={"limit": 100}, headers=partner_headers(a))).json()[
            "data"
        ]
        assert {e["action"] for e in a_log if e["actor"] == "operator:ops-amaka"} == {
            "dead_letter.requeue",
            "event.replay",
        }
        b_log = (await client.get("/v1/audit/log", params={"limit": 100}, headers=partner_headers(b))).json()[
            "data"
        ]
        assert not [e for e in b_log if e["actor"] == "operator:ops-amaka"]
    async with db.worker_session() as session:
        stored = (
            (await session.execute(select(AuditLogEntry).where(AuditLogEntry.actor == "operator:ops-amaka")))
            .scalars()
            .all()
        )
    assert len(stored) == 3
