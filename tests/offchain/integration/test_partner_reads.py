"""The one-round-trip partner read (`caas_partner_loan`, Database.fetch_one) behind GET /v1/loans/{id}:
row-level security still decides, the scope ends with the statement, and the answer is the
loan's view with its events in chain order."""

from __future__ import annotations

import json
import os
import uuid

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.services.gateway.app import create_app

pytestmark = pytest.mark.asyncio


def _h32() -> str:
    return "0x" + os.urandom(32).hex()


async def _seed_loan(db: Database, partner_id: uuid.UUID) -> tuple[uuid.UUID, str]:
    """A partner's ACTIVE loan and three indexed events, inserted out of chain order."""
    loan_id, chain_loan_id = uuid.uuid4(), _h32()
    async with db.worker_session() as session:
        await session.execute(
            text("INSERT INTO caas_partners (id, name, chain_ref) VALUES (:id, 'p', :ref)"),
            {"id": partner_id, "ref": _h32()},
        )
        await session.execute(
            text(
                """INSERT INTO caas_loans (id, partner_id, chain_loan_id, currency, principal, total_due,
                       installment_count, installment_interval, grace_period, chain_state, repaid,
                       outstanding, disbursed_at)
                   VALUES (:id, :partner, :chain, 566, 25000000, 27500001, 3, 2592000, 0, 3, 9166667,
                       18333334, '2026-11-01T00:00:00Z')"""
            ),
            {"id": loan_id, "partner": partner_id, "chain": chain_loan_id},
        )
        for block, event in ((12, "RepaymentRecorded"), (10, "LoanCreated"), (11, "LoanDisbursed")):
            await session.execute(
                text(
                    """INSERT INTO caas_chain_events (chain_id, block_number, block_hash, tx_hash,
                           tx_index, log_index, address, contract, event, loan_id, args, topics, data,
                           block_timestamp)
                       VALUES (31337, :block, :hash, :tx, 0, 0, :address, 'LoanBook', :event, :loan,
                           CAST(:args AS jsonb), ARRAY[CAST(:loan AS varchar)], '0x', 1700000000)"""
                ),
                {
                    "block": block,
                    "hash": _h32(),
                    "tx": _h32(),
                    "address": "0x" + os.urandom(20).hex(),
                    "event": event,
                    "loan": chain_loan_id,
                    "args": json.dumps({"amount": 9166667}),
                },
            )
    return loan_id, chain_loan_id


@pytest_asyncio.fixture
async def client(settings: Settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


def _headers(settings: Settings, partner_id: uuid.UUID) -> dict[str, str]:
    secret = settings.auth.jwt_secret.get_secret_value()
    return {"Authorization": "Bearer " + auth.issue_token(secret, partner_id=partner_id)}


async def test_get_loan__own_partner_sees_it__events_in_chain_order(client, db: Database, settings: Settings):
    partner = uuid.uuid4()
    loan_id, chain_loan_id = await _seed_loan(db, partner)
    response = await client.get(f"/v1/loans/{loan_id}", headers=_headers(settings, partner))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["chain_loan_id"] == chain_loan_id
    assert (body["status"], body["chain_state"]) == ("active", "ACTIVE")
    assert body["outstanding"] == {"value": 18_333_334, "currency": "NGN"}
    assert [t["event"] for t in body["transactions"]] == ["LoanCreated", "LoanDisbursed", "RepaymentRecorded"]
    # the schedule is the chain's: n - 1 equal installments, the last takes the remainder
    assert [item["amount"] for item in body["schedule"]] == [9_166_667, 9_166_667, 9_166_667]
    assert body["schedule"][0]["due_at"].startswith("2026-12-01")
    assert "RateLimit-Remaining" in response.headers


async def test_get_loan__another_partner__404_and_nothing_leaks(client, db: Database, settings: Settings):
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    loan_id, _ = await _seed_loan(db, owner)
    refused = await client.get(f"/v1/loans/{loan_id}", headers=_headers(settings, stranger))
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    assert "chain_loan_id" not in refused.text


async def test_fetch_one__scope_ends_with_the_statement(db: Database):
    partner = uuid.uuid4()
    loan_id, _ = await _seed_loan(db, partner)
    seen = await db.fetch_one("SELECT * FROM caas_partner_loan($1, $2)", partner, loan_id)
    assert seen is not None and seen["id"] == loan_id
    # the read pool's connections carry no partner afterwards: without the function, RLS shows nothing
    for _ in range(3):
        after = await db.fetch_one(
            "SELECT caas_current_partner() AS partner, count(*) AS loans FROM caas_loans"
        )
        assert after is not None
        assert (after["partner"], after["loans"]) == (None, 0)
    # and as the application role, never the superuser the test logs in as
    role = await db.fetch_one("SELECT current_user AS role")
    assert role is not None and role["role"] == settings_role(db)


def settings_role(db: Database) -> str:
    assert db.settings is not None
    return db.settings.app_role


# --- the read connections (ReadConnections) --------------------------------------------------


async def test_read_connections__one_the_server_dropped_is_replaced_and_the_read_runs(
    db: Database, admin_execute
):
    first = await db.fetch_one("SELECT pg_backend_pid() AS pid")
    assert first is not None
    assert admin_execute(f"SELECT pg_terminate_backend({int(first['pid'])})") == [(True,)]
    # the caller never sees it: the statement runs again on a fresh connection
    again = await db.fetch_one("SELECT pg_backend_pid() AS pid")
    assert again is not None and again["pid"] != first["pid"]
    assert db._reads is not None and db._reads.open_connections == 1


async def test_read_connections__a_failed_statement_keeps_its_connection(db: Database):
    import asyncpg

    first = await db.fetch_one("SELECT pg_backend_pid() AS pid")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await db.fetch_one("SELECT 1 / 0")
    after = await db.fetch_one("SELECT pg_backend_pid() AS pid")
    assert first is not None and after is not None and after["pid"] == first["pid"]
    assert db._reads is not None and db._reads.open_connections == 1


async def test_read_connections__a_cancelled_read_leaves_no_half_used_connection(db: Database):
    import asyncio

    first = await db.fetch_one("SELECT pg_backend_pid() AS pid")
    sleeper = asyncio.create_task(db.fetch_one("SELECT pg_sleep(5)"))
    await asyncio.sleep(0.2)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    # the connection whose statement was cut off is gone; the next read gets an answer at once
    after = await asyncio.wait_for(db.fetch_one("SELECT pg_backend_pid() AS pid"), timeout=2)
    assert first is not None and after is not None and after["pid"] != first["pid"]
    assert db._reads is not None and db._reads.open_connections == 1


async def test_read_connections__callers_beyond_the_set_wait_their_turn(db: Database, settings: Settings):
    import asyncio

    size = settings.database.read_connections
    most = 0

    async def read(n: int) -> int:
        nonlocal most
        row = await db.fetch_one("SELECT $1::int AS n, pg_sleep(0.02)", n)
        assert db._reads is not None
        most = max(most, db._reads.open_connections)
        assert row is not None
        return row["n"]

    assert await asyncio.gather(*(read(n) for n in range(5 * size))) == list(range(5 * size))
    assert most == size  # all of them used, never one more
