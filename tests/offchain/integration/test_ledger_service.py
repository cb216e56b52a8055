"""The ledger service (8006) in-process over real HTTP semantics (ASGI), on real PostgreSQL, and
reconciliation against a real LoanBook on Anvil finding mismatches injected on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from identities import operator_headers
from indexer_support import deploy_contracts
from sqlalchemy import insert, text, update

from offchain.chain.workload import LoanTerms, Workload, active_loans, ref
from offchain.domain import ledger as L
from offchain.domain.ledger import Posting, credit, debit
from offchain.persistence import ledger
from offchain.persistence.migrate import upgrade
from offchain.persistence.models import Loan, Partner
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import Settings
from offchain.services.ledger.app import create_app

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def ledger_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
            yield client


def _headers(
    settings: Settings, partner: uuid.UUID, permissions: tuple[str, ...] = (auth.AUDIT_READ,)
) -> dict:
    token = auth.issue_token(
        settings.auth.jwt_secret.get_secret_value(), partner_id=partner, permissions=permissions
    )
    return {"Authorization": f"Bearer {token}"}


def _disbursement(loan: str, partner: str, posting_id: str, principal: int, total_due: int) -> Posting:
    return Posting(
        posting_id,
        (
            debit(L.loan_receivable(loan), total_due, "NGN"),
            credit(L.partner_funding(partner), principal, "NGN"),
            credit(L.loan_unearned_income(loan), total_due - principal, "NGN"),
        ),
        "disbursement",
        {"loan_id": loan, "partner_id": partner},
    )


def _repayment(loan: str, posting_id: str, amount: int) -> Posting:
    return Posting(
        posting_id,
        (debit(L.rail_clearing("paystack"), amount, "NGN"), credit(L.loan_receivable(loan), amount, "NGN")),
        "repayment",
        {"loan_id": loan},
    )


async def test_balances_postings_and_loans_over_http(settings: Settings, db: Database) -> None:
    partner, other = uuid.uuid4(), uuid.uuid4()
    loan = f"0x{uuid.uuid4().hex * 2}"
    tag = uuid.uuid4().hex[:8]
    async with db.worker_session() as session:
        await session.execute(insert(Partner).values(id=partner, name="P"))
        loan_uuid = (
            await session.execute(
                insert(Loan).values(partner_id=partner, chain_loan_id=loan, currency=566).returning(Loan.id)
            )
        ).scalar_one()
        await ledger.post(session, _disbursement(loan, str(partner), f"{tag}:d", 100_000, 112_000))
        await ledger.post(session, _repayment(loan, f"{tag}:r", 12_000))
        await ledger.post(session, _disbursement(f"0x{uuid.uuid4().hex * 2}", str(other), f"{tag}:o", 5, 6))

    async with ledger_client(settings) as client:
        mine = _headers(settings, partner)
        balance = await client.get(
            f"/v1/ledger/accounts/{L.loan_receivable(loan)}/balance", params={"currency": "NGN"}, headers=mine
        )
        assert balance.status_code == 200, balance.text
        body = balance.json()
        assert body["balance"] == {"value": 100_000, "currency": "NGN"}
        assert body["kind"] == "loan_receivable" and body["normal_side"] == "debit"
        assert body["posted_credits"]["value"] == 12_000

        posting = (await client.get(f"/v1/ledger/postings/{tag}:r", headers=mine)).json()
        assert posting["status"] == "posted"
        assert posting["legs"][1] == {
            "account": L.loan_receivable(loan),
            "side": "credit",
            "amount": {"value": 12_000, "currency": "NGN"},
        }

        for key in (loan, str(loan_uuid)):
            statement = await client.get(f"/v1/ledger/loans/{key}", headers=mine)
            assert statement.status_code == 200, statement.text
            assert statement.json()["loan_id"] == str(loan_uuid)
            assert {e["posting_id"] for e in statement.json()["entries"]} == {f"{tag}:d", f"{tag}:r"}

        # the trial balance and platform accounts hold every partner's money: operators only
        assert (await client.get("/v1/ledger/trial-balance", headers=mine)).status_code == 403
        trial = (await client.get("/v1/ledger/trial-balance", headers=operator_headers())).json()
        assert trial["balanced"] is True and trial["currencies"][0]["currency"] == "NGN"
        clearing = f"/v1/ledger/accounts/{L.rail_clearing('paystack')}/balance"
        assert (await client.get(clearing, params={"currency": "NGN"}, headers=mine)).status_code == 404
        seen = await client.get(clearing, params={"currency": "NGN"}, headers=operator_headers())
        assert seen.status_code == 200, seen.text
        # an operator reads any partner's loan statement
        assert (await client.get(f"/v1/ledger/loans/{loan}", headers=operator_headers())).status_code == 200

        # another partner's posting, account and loan look like they do not exist
        theirs = _headers(settings, other)
        for posting_id in (f"{tag}:r", f"{tag}:d"):  # both touch the loan's accounts
            assert (await client.get(f"/v1/ledger/postings/{posting_id}", headers=theirs)).status_code == 404
        assert (await client.get(f"/v1/ledger/postings/{tag}:o", headers=theirs)).status_code == 200
        assert (await client.get(f"/v1/ledger/loans/{loan}", headers=theirs)).status_code == 404
        funding = f"/v1/ledger/accounts/{L.partner_funding(partner)}/balance"
        assert (await client.get(funding, params={"currency": "NGN"}, headers=theirs)).status_code == 404
        assert (await client.get(funding, params={"currency": "NGN"}, headers=mine)).status_code == 200

        refused = await client.get(
            "/v1/ledger/accounts/cash:box/balance", params={"currency": "NGN"}, headers=mine
        )
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        # the chart of accounts is the path parameter's pattern (declared in the OpenAPI)
        assert [e["field"] for e in refused.json()["errors"]] == ["path.code"]
        assert (await client.get(funding, params={"currency": "ngn"}, headers=mine)).status_code == 422
        assert (await client.get(f"/v1/ledger/postings/{tag}:none", headers=mine)).status_code == 404
        assert (await client.get("/v1/ledger/trial-balance")).status_code == 401
        no_audit = _headers(settings, partner, (auth.LOAN_READ,))
        assert (await client.get(funding, params={"currency": "NGN"}, headers=no_audit)).status_code == 403


# --- reconciliation on a real chain ---------------------------------------------------------


@pytest_asyncio.fixture
async def chain_setup(make_database, anvil_url: str, tmp_path: Path, redis_url: str, stream_prefix: str):
    database_url = make_database()  # its own database: the run must find exactly what we injected
    upgrade(database_url)
    deployment, path = await asyncio.to_thread(deploy_contracts, anvil_url, tmp_path)
    roles = dev_roles()
    workload = Workload(
        anvil_url,
        deployment,
        sender_key=roles.sender.private_key,
        signer_keys=[s.private_key for s in roles.signers],
    )
    settings = Settings(
        env="test",
        database={"url": database_url},
        redis={"url": redis_url},
        events={"stream_prefix": stream_prefix},
        chain={"rpc_url": anvil_url, "deployment_file": str(path)},
        ledger={"stale_hold_s": 0.01},
    )
    database = Database.from_settings(settings.database, application_name="caas-ledger-tests")
    yield settings, database, workload
    workload.close()
    await database.dispose()


async def test_reconciliation_finds_injected_mismatches(chain_setup) -> None:
    settings, db, w = chain_setup
    partner = uuid.uuid4()
    loans = await asyncio.to_thread(active_loans, w, 3, principal=1_000_000)  # total_due 1_100_000 each
    pending = ref(f"pending:{uuid.uuid4()}")
    await asyncio.to_thread(w.send, [w.create_loan(LoanTerms(pending, 500_000, 550_000))])
    a, b, c = ("0x" + loan.hex() for loan in loans)
    await asyncio.to_thread(
        w.send,
        [
            w.repay(loans[0], 100_000, ref("paystack:T-a1")),
            w.repay(loans[1], 250_000, ref("paystack:T-b1")),  # the ledger never hears of this one
        ],
    )

    async with db.worker_session() as session:
        await session.execute(insert(Partner).values(id=partner, name="P"))
        for loan_id, outstanding in ((a, 1_000_000), (b, 850_000), (c, 1_100_000)):
            await session.execute(
                insert(Loan).values(
                    partner_id=partner,
                    chain_loan_id=loan_id,
                    chain_state=3,
                    outstanding=outstanding,
                    currency=566,
                )
            )
            await ledger.post(
                session, _disbursement(loan_id, str(partner), f"d:{loan_id}", 1_000_000, 1_100_000)
            )
        # a pending loan: owed on chain (total_due) but not disbursed, so nothing receivable
        await session.execute(
            insert(Loan).values(
                partner_id=partner,
                chain_loan_id="0x" + pending.hex(),
                chain_state=1,
                outstanding=550_000,
                currency=566,
            )
        )
        await ledger.post(session, _repayment(a, "repayment:paystack:T-a1", 100_000))
        # the projection lags on c, and the ledger holds money for a loan nobody knows
        await session.execute(update(Loan).where(Loan.chain_loan_id == c).values(outstanding=1_099_999))
        await ledger.post(session, _disbursement("0x" + "ee" * 32, str(partner), "d:stray", 10, 11))
        # a payment whose outcome never came back
        await ledger.hold(session, _repayment(c, "repayment:paystack:T-c-lost", 5))
    await asyncio.sleep(0.05)

    async with ledger_client(settings) as client:
        # reconciliation covers every partner's loans: operators run and read it, partners cannot
        refused = await client.post("/v1/ledger/reconciliation/runs", headers=_headers(settings, partner))
        assert refused.status_code == 403
        headers = operator_headers()
        assert (await client.get("/v1/ledger/reconciliation", headers=headers)).status_code == 404
        run = await client.post("/v1/ledger/reconciliation/runs", headers=headers)
        assert run.status_code == 201, run.text
        report = run.json()
        found = {(m["kind"], m["subject"], m["expected"], m["actual"]) for m in report["mismatches"]}
        assert report["status"] == "mismatches" and report["loans_checked"] == 4
        assert found == {
            ("ledger_vs_chain", b, 850_000, 1_100_000),
            ("projection_vs_chain", c, 1_100_000, 1_099_999),
            ("ledger_unknown_loan", "0x" + "ee" * 32, 0, 11),
            ("stale_hold", "repayment:paystack:T-c-lost", "posted or voided", "pending"),
        }
        metrics = (await client.get("/metrics")).text
        assert 'caas_ledger_reconciliation_mismatches{kind="ledger_vs_chain"} 1.0' in metrics
        assert "caas_ledger_reconciliation_status 1.0" in metrics
        stored = (await client.get("/v1/ledger/reconciliation", headers=headers)).json()
        assert stored["run_id"] == report["run_id"] and stored["mismatches"] == report["mismatches"]

        # the missing posting arrives, the projection catches up, the stray is reversed
        async with db.worker_session() as session:
            await ledger.post(session, _repayment(b, "repayment:paystack:T-b1", 250_000))
            await session.execute(update(Loan).where(Loan.chain_loan_id == c).values(outstanding=1_100_000))
            await ledger.reverse(
                session, "d:stray", reversal_id="d:stray:reversal", description="booked in error"
            )
            await ledger.void_pending(session, "repayment:paystack:T-c-lost")
        again = (await client.post("/v1/ledger/reconciliation/runs", headers=headers)).json()
        assert again["status"] == "consistent" and again["mismatches"] == [], again
        assert again["chain_block"] >= report["chain_block"]
        metrics = (await client.get("/metrics")).text
        assert 'caas_ledger_reconciliation_mismatches{kind="ledger_vs_chain"} 0.0' in metrics
        assert "caas_ledger_reconciliation_status 0.0" in metrics

    async with db.worker_session() as session:
        runs = (
            (await session.execute(text("SELECT status FROM caas_ledger_recon_runs ORDER BY id")))
            .scalars()
            .all()
        )
    assert runs == ["mismatches", "consistent"]


async def test_reconciliation_without_a_chain_is_recorded_as_failed(settings: Settings) -> None:
    async with ledger_client(settings) as client:
        run = await client.post("/v1/ledger/reconciliation/runs", headers=operator_headers())
    assert run.status_code == 201
    assert run.json()["status"] == "failed" and "not configured" in run.json()["error"]


async def test_scheduled_reconciliation_runs_in_the_background(settings: Settings, db: Database) -> None:
    scheduled = settings.model_copy(
        update={
            "ledger": settings.ledger.model_copy(
                update={"reconcile_enabled": True, "reconcile_interval_s": 0.2}
            )
        }
    )

    async def scheduled_runs() -> int:
        async with db.worker_session() as session:
            query = text("SELECT count(*) FROM caas_ledger_recon_runs WHERE trigger = 'schedule'")
            return int((await session.execute(query)).scalar_one())

    before = await scheduled_runs()
    async with ledger_client(scheduled) as client:
        for _ in range(100):
            if await scheduled_runs() >= before + 2:
                break
            await asyncio.sleep(0.1)
        latest = (await client.get("/v1/ledger/reconciliation", headers=operator_headers())).json()
    assert await scheduled_runs() >= before + 2  # it keeps running, one run per interval
    assert latest["status"] == "failed"  # this settings fixture has no chain: recorded, not hidden
