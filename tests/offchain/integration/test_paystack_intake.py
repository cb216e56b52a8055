"""Paystack's documented samples through repayment intake on real PostgreSQL and the simulator:
the borrower's repayment credited once at the right amount, Paystack's fee on its own ledger
account, the ledger balanced; a charge Paystack never heard of ends as a notice "not confirmed"
that operators list and may have verified again; hostile webhook bodies get their decided answer.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from identities import operator_headers
from offline_deployment import OFFLINE_DEPLOYMENT
from paystack_samples import body, sample
from pydantic import SecretStr
from simulator_support import PAYSTACK_SECRET, SME_SECRET, ServerThread
from sqlalchemy import select, text

from offchain.domain import money_movement as mm
from offchain.persistence import ledger as journal
from offchain.persistence.migrate import upgrade
from offchain.persistence.models import Loan, Partner
from offchain.persistence.money import Payment, PaymentNotice, PaymentRoute
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.rails.paystack.client import PaystackClient
from offchain.rails.paystack.webhooks import sign
from offchain.rails.simulator.app import create_app as simulator_app
from offchain.rails.simulator.config import SimulatorConfig
from offchain.services.gateway.app import create_app as gateway_app
from offchain.services.repayment import intake, notices, receiving

pytestmark = pytest.mark.asyncio

PARTNER = uuid.UUID("00000000-0000-4000-8000-0000000000fa")
LOAN = uuid.UUID("00000000-0000-4000-8000-0000000000f1")
TOTAL_DUE = 500_000
DEPLOYMENT = OFFLINE_DEPLOYMENT
JWT_SECRET = "jwt-secret-for-paystack-intake-tests"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    config = SimulatorConfig(paystack_secret_key=PAYSTACK_SECRET, sme_events_secret=SME_SECRET)
    with ServerThread(simulator_app(config), _port()) as server:
        yield server.url


@pytest_asyncio.fixture
async def database(make_database) -> AsyncIterator[tuple[str, Database]]:  # type: ignore[no-untyped-def]
    url = make_database()
    upgrade(url)
    db = Database.from_settings(Settings(database={"url": url}).database)
    async with db.worker_session() as session:
        session.add(Partner(id=PARTNER, name="intake partner"))
        await session.flush()
        session.add(
            Loan(
                id=LOAN,
                partner_id=PARTNER,
                chain_loan_id="0x" + LOAN.hex * 2,
                borrower_ref="0x" + "0c" * 32,
                currency=566,
                principal=400_000,
                total_due=TOTAL_DUE,
                chain_state=3,
            )
        )
        await session.flush()
        await journal.post(
            session,
            mm.payout_posting(
                posting_id=f"payout:{LOAN}",
                loan_id=LOAN,
                partner_id=PARTNER,
                principal=400_000,
                total_due=TOTAL_DUE,
                currency="NGN",
            ),
        )
    yield url, db
    await db.dispose()


async def _store(simulator: str, transaction: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=simulator) as http:
        stored = await http.post("/simulate/transactions", json={"transaction": transaction})
    assert stored.status_code == 201, stored.text


async def _take_in(db: Database, simulator: str, notice: dict[str, Any]) -> receiving.Intake:
    async with httpx.AsyncClient() as http:
        paystack = PaystackClient(simulator, PAYSTACK_SECRET, http=http)
        payment, record, channel, paid_at = await intake.verified_paystack_charge(paystack, notice)
    async with db.worker_session() as session:
        (taken,) = await receiving.receive_many(
            session, [receiving.Verified(payment, record, channel, paid_at)], deployment=DEPLOYMENT
        )
    return taken


async def _balances(db: Database) -> dict[str, tuple[int, int, int, int]]:
    async with db.worker_session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT account, sum(posted_debits), sum(posted_credits), sum(pending_debits), "
                    "sum(pending_credits) FROM caas_ledger_balances GROUP BY account"
                )
            )
        ).all()
    return {account: tuple(int(v) for v in values) for account, *values in rows}  # type: ignore[misc]


def _balanced(balances: dict[str, tuple[int, int, int, int]]) -> bool:
    debits = sum(b[0] + b[2] for b in balances.values())
    credits = sum(b[1] + b[3] for b in balances.values())
    return debits == credits


async def test_verify_sample__payer_bore_the_fees__loan_credited_30050_fee_on_its_account(
    database, simulator
) -> None:  # type: ignore[no-untyped-def]
    _, db = database
    data = sample("verify_transaction")["data"]  # verbatim: amount 40333, requested 30050, fees 10283
    await _store(simulator, data)
    async with db.worker_session() as session:  # the sample names no loan: an issued reference does
        session.add(PaymentRoute(kind="reference", value=data["reference"], loan_id=LOAN, partner_id=PARTNER))

    taken = await _take_in(db, simulator, data)  # charge.success carries the same transaction
    again = await _take_in(db, simulator, data)  # delivered again: no effect

    assert (taken.created, again.created, again.payment_id) == (True, False, taken.payment_id)
    async with db.worker_session() as session:
        row = (await session.execute(select(Payment))).scalar_one()
        intents = (await session.execute(text("SELECT data FROM caas_tx_intents"))).scalars().all()
    assert (row.amount, row.applied, row.excess, row.provider_fee, row.payer_fee) == (
        30050,
        30050,
        0,
        10283,
        10283,
    )
    assert (row.status, row.match_method) == ("pending_chain", "reference")
    assert row.provider_record["amount"] == 40333 and row.provider_record["repayment"] == 30050
    # one record_repayment, for the borrower's 30050 (not Paystack's 40333)
    expected = DEPLOYMENT.loan_book_contract.record_repayment(
        LOAN.bytes * 2, 30050, bytes.fromhex(row.payment_ref[2:])
    )
    assert [i.lower().removeprefix("0x") for i in intents] == [expected.hex()]
    balances = await _balances(db)
    assert balances["rail:paystack:fees"] == (10283, 0, 0, 0)
    assert balances["rail:paystack:fees_recovered"] == (0, 10283, 0, 0)
    assert balances["rail:paystack:clearing"] == (0, 0, 30050, 0)  # what Paystack settles
    assert balances[f"loan:{LOAN}:receivable"][3] == 30050
    assert _balanced(balances)


async def test_api_verify_sample__merchant_bore_the_fee__whole_amount_credited_fee_is_our_cost(
    database, simulator
) -> None:  # type: ignore[no-untyped-def]
    _, db = database
    data = sample("verify_transaction_api")["data"]  # amount = requested_amount 20000, fees 100
    data["reference"] = f"merchant-{uuid.uuid4().hex[:10]}"
    data["metadata"] = json.dumps({"loan_id": str(LOAN)})  # metadata as a JSON string
    await _store(simulator, data)

    await _take_in(db, simulator, data)

    async with db.worker_session() as session:
        row = (await session.execute(select(Payment))).scalar_one()
    assert (row.amount, row.applied, row.provider_fee, row.payer_fee) == (20000, 20000, 100, 0)
    assert row.match_method == "metadata"
    balances = await _balances(db)
    assert balances["rail:paystack:fees"] == (100, 0, 0, 0)
    assert "rail:paystack:fees_recovered" not in balances
    assert balances["rail:paystack:clearing"] == (0, 100, 20000, 0)  # settles 19900
    assert _balanced(balances)


async def test_webhook_sample__metadata_zero__taken_into_suspense_at_10000(database, simulator) -> None:  # type: ignore[no-untyped-def]
    _, db = database
    data = sample("charge_success")["data"]
    data["reference"] = f"qTPrJoy9Bx-{uuid.uuid4().hex[:8]}"
    await _store(simulator, data)
    await _take_in(db, simulator, data)
    async with db.worker_session() as session:
        row = (await session.execute(select(Payment))).scalar_one()
    assert (row.amount, row.status, row.provider_fee, row.payer_fee) == (10000, "unmatched", 0, 0)
    assert _balanced(await _balances(db))


def _operator() -> dict[str, str]:
    return operator_headers("ops-notices", secret=JWT_SECRET)


@pytest_asyncio.fixture
async def gateway(
    database, simulator, redis_url, stream_prefix, tmp_path
) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    url, _ = database
    deployment = tmp_path / "deployment.json"
    deployment.write_text(
        json.dumps(
            {
                "chain_id": 31337,
                "contracts": {
                    "LoanBook": {
                        "address": DEPLOYMENT.loan_book_address,
                        "abi": DEPLOYMENT.loan_book_abi,
                        "block": 0,
                    },
                    "DisbursementCommittee": {
                        "address": DEPLOYMENT.committee_address,
                        "abi": DEPLOYMENT.committee_abi,
                        "block": 0,
                    },
                },
            }
        )
    )
    base = Settings(
        env="test",
        database={"url": url},
        redis={"url": redis_url},
        events={"stream_prefix": f"{stream_prefix}-intake"},
    )
    settings = base.model_copy(
        update={
            "auth": base.auth.model_copy(update={"jwt_secret": SecretStr(JWT_SECRET)}),
            "chain": base.chain.model_copy(update={"deployment_file": str(deployment)}),
            "rails": base.rails.model_copy(
                update={"paystack_secret_key": SecretStr(PAYSTACK_SECRET), "simulator_url": simulator}
            ),
        }
    )
    app = gateway_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


async def test_a_charge_paystack_never_heard_of__ends_not_confirmed__listed_and_reverified(
    database, simulator, gateway
) -> None:  # type: ignore[no-untyped-def]
    _, db = database
    data = {**sample("charge_success")["data"], "reference": f"unknown-{uuid.uuid4().hex[:8]}"}
    async with httpx.AsyncClient() as http:
        paystack = PaystackClient(simulator, PAYSTACK_SECRET, http=http)
        with pytest.raises(intake.NotConfirmed) as refused:
            await intake.verified_paystack_charge(paystack, data)
    assert refused.value.reason == "not_found"
    for _ in range(2):  # Paystack's notice twice: one row, counted twice
        async with db.worker_session() as session:
            await notices.record_not_confirmed(
                session,
                topic="paystack.charge.success",
                data=data,
                reason="not_found",
                detail=str(refused.value),
            )

    listed = await gateway.get("/v1/payment-notices", headers=_operator())
    assert listed.status_code == 200, listed.text
    [notice] = listed.json()["data"]
    assert (notice["reference"], notice["status"], notice["reason"], notice["notices"]) == (
        data["reference"],
        "not_confirmed",
        "not_found",
        2,
    )
    assert notice["claimed"] == {
        "amount": 10000,
        "currency": "NGN",
        "channel": "card",
        "paid_at": data["paid_at"],
        "status": "success",
    }

    still = await gateway.post(f"/v1/payment-notices/{notice['id']}/reverify", headers=_operator())
    assert still.status_code == 200 and still.json()["status"] == "not_confirmed"

    await _store(simulator, data)  # Paystack knows it now
    confirmed = await gateway.post(f"/v1/payment-notices/{notice['id']}/reverify", headers=_operator())
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed" and confirmed.json()["payment_id"]
    again = await gateway.post(f"/v1/payment-notices/{notice['id']}/reverify", headers=_operator())
    assert again.status_code == 409
    async with db.worker_session() as session:
        row = (await session.execute(select(Payment))).scalar_one()
        kept = (await session.execute(select(PaymentNotice))).scalar_one()
    assert (row.amount, str(row.id)) == (10000, confirmed.json()["payment_id"])
    assert kept.status == "confirmed"
    # a notice that comes again after it was confirmed leaves it confirmed
    async with db.worker_session() as session:
        await notices.record_not_confirmed(
            session, topic="paystack.charge.success", data=data, reason="not_found", detail="late copy"
        )
        assert (await session.execute(select(PaymentNotice.status))).scalar_one() == "confirmed"


async def _deliver(gateway: httpx.AsyncClient, raw: bytes) -> httpx.Response:
    return await gateway.post(
        "/v1/webhooks/paystack", content=raw, headers={"x-paystack-signature": sign(raw, PAYSTACK_SECRET)}
    )


async def test_hostile_but_signed_webhooks_get_their_decided_answer(database, gateway) -> None:  # type: ignore[no-untyped-def]
    _, db = database
    # a NUL in the reference: acknowledged (no retry can make it a payment), nothing stored
    nul = sample("charge_success")
    nul["data"]["reference"] = "qTPr\x00Joy9Bx"
    answer = await _deliver(gateway, body(nul))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ignored" and "U+0000" in answer.json()["reason"]

    # metadata nested 1,000 deep (and NUL in the payer's name): taken, the depth dropped
    deep = sample("charge_success")
    deep["data"]["reference"] = f"deep-{uuid.uuid4().hex[:8]}"
    deep["data"]["customer"]["first_name"] = "Bo\x00Jack"
    deep["data"]["metadata"] = {"deep": "HERE"}
    raw = body(deep).replace(b'"HERE"', b"[" * 1000 + b"]" * 1000)
    answer = await _deliver(gateway, raw)
    assert (answer.status_code, answer.json()["status"]) == (200, "accepted"), answer.text
    again = await _deliver(gateway, raw)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")

    # the whole data nested 1,000 deep: malformed (400, Paystack retries while someone looks)
    whole = b'{"event":"charge.success","data":' + b"[" * 1000 + b"]" * 1000 + b"}"
    malformed = await _deliver(gateway, whole)
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == "application/problem+json"

    async with db.worker_session() as session:
        stored = (
            (
                await session.execute(
                    text("SELECT payload FROM caas_outbox WHERE topic = 'paystack.charge.success'")
                )
            )
            .scalars()
            .all()
        )
    assert len(stored) == 1
    assert stored[0]["data"]["reference"] == deep["data"]["reference"]
    assert stored[0]["data"]["customer"]["first_name"] == "Bo\ufffdJack"
    metrics = (await gateway.get("/metrics")).text
    assert 'caas_paystack_webhooks_total{event="charge.success",outcome="unusable"} 1.0' in metrics
    assert 'caas_paystack_webhooks_total{event="charge.success",outcome="accepted"} 1.0' in metrics


async def test_simulated_charge__payer_bears_the_fee__metadata_as_a_string__credited_the_request(
    database, simulator
) -> None:  # type: ignore[no-untyped-def]
    _, db = database
    reference = f"sim-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=simulator) as http:
        charged = await http.post(
            "/simulate/charge",
            json={
                "amount": 300_000,
                "currency": "NGN",
                "loan_id": str(LOAN),
                "reference": reference,
                "bearer": "customer",
                "metadata_format": "string",
            },
        )
    assert charged.status_code == 201, charged.text
    transaction = charged.json()["transaction"]
    # the simulator's shape is Paystack's: amount = requested_amount + fees, metadata a JSON string
    assert transaction["requested_amount"] == 300_000
    assert transaction["amount"] == 300_000 + transaction["fees"] and transaction["fees"] > 0
    assert json.loads(transaction["metadata"]) == {"loan_id": str(LOAN)}

    await _take_in(db, simulator, transaction)

    async with db.worker_session() as session:
        row = (await session.execute(select(Payment))).scalar_one()
    assert (row.amount, row.applied, row.provider_fee, row.payer_fee) == (
        300_000,
        300_000,
        transaction["fees"],
        transaction["fees"],
    )
    assert _balanced(await _balances(db))
