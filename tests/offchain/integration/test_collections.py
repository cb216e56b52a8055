"""Collections against real PostgreSQL, Anvil (LoanBook + committee), the indexer and the sender.

Loans are created, approved and disbursed on chain, linked to a partner in the database as the
gateway links them, and projected by the indexer; the close of business runs through the
collections API; Anvil's clock moves with evm_increaseTime. Each test has its own database.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
from eth_utils import keccak
from identities import operator_headers
from indexer_support import DEFAULT_AFTER_DAYS, Chain, execute, fetch, index_once, module_chain, new_database

from offchain.chain.allowlist import Allowlist
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import SenderWorker
from offchain.chain.workload import LoanTerms, new_loan_id
from offchain.domain.collections import fee_ref
from offchain.domain.loan_book import SECONDS_PER_DAY
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import SenderSettings, Settings
from offchain.services.collections.app import create_app

pytestmark = pytest.mark.asyncio
LAGOS = ZoneInfo("Africa/Lagos")
INTERVAL = 30 * SECONDS_PER_DAY
GRACE = 3 * SECONDS_PER_DAY


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    yield from module_chain(tmp_path_factory)


@dataclass
class Book:
    """One test's world: its database, a partner, the collections API and a sender worker."""

    url: str
    chain: Chain
    db: Database
    client: httpx.AsyncClient
    partner: uuid.UUID
    rpc: JsonRpc

    async def drain(self) -> None:
        worker = SenderWorker(
            db=self.db,
            rpc=self.rpc,
            private_key=dev_roles().sender.private_key,
            settings=SenderSettings(idle_poll_s=0.02),
            allowlist=Allowlist.of(self.chain.deployment),
        )
        await worker.drain(within_s=60)

    async def index(self) -> None:
        await index_once(self.url, self.chain)

    def head(self) -> int:
        return int(self.chain.workload.block()["timestamp"], 16)

    def warp_to(self, unix: int) -> None:
        if unix > self.head():
            self.chain.workload.warp(unix - self.head())

    def warp_into(self, day: date, hour: int = 1) -> None:
        self.warp_to(int(datetime.combine(day, time(hour), tzinfo=LAGOS).timestamp()))

    async def cob(self, day: date) -> dict[str, Any]:
        # the close of business runs over every partner's loans: an operator's action
        response = await self.client.post(
            "/v1/collections/cob-runs", json={"business_date": day.isoformat()}, headers=operator_headers()
        )
        assert response.status_code == 200, response.text
        return response.json()

    def outbox(self, loan: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
        rows = fetch(
            self.url,
            "SELECT topic, payload FROM caas_outbox WHERE payload->>'loan_id' = %s ORDER BY id",
            str(loan),
        )
        return [(topic, payload) for topic, payload in rows]

    def intents(self) -> list[tuple[str, str]]:
        return fetch(self.url, "SELECT idempotency_key, status FROM caas_tx_intents ORDER BY seq")

    def loan(self, terms: LoanTerms, sme_user_id: str = "acme-trading-ltd") -> uuid.UUID:
        """A loan active on chain, linked to the partner as accepting an offer links it."""
        w = self.chain.workload
        w.send([w.create_loan(terms)])
        epoch, deadline = w.epoch(), self.head() + 86_400
        w.send([w.approve_with_signatures(terms.loan_id, [0, 1], epoch=epoch, deadline=deadline)])
        w.send([w.disburse(terms.loan_id)])
        loan_id, application, offer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        chain_loan_id = "0x" + terms.loan_id.hex()
        execute(
            self.url,
            "INSERT INTO caas_loans (id, partner_id, chain_loan_id) VALUES (%s, %s, %s)",
            str(loan_id),
            str(self.partner),
            chain_loan_id,
        )
        execute(
            self.url,
            "INSERT INTO caas_applications (id, partner_id, external_id, sme_user_id, borrower_ref, amount, "
            "currency, tenor_months, purpose, status) VALUES (%s, %s, %s, %s, %s, %s, 'NGN', 3, 'stock', "
            "'accepted')",
            str(application),
            str(self.partner),
            f"ext-{application}",
            sme_user_id,
            "0x" + terms.borrower_ref.hex(),
            terms.principal,
        )
        execute(
            self.url,
            "INSERT INTO caas_offers (id, partner_id, application_id, amount, currency, tenor_months, apr_bps, "
            "total_due, terms, status, expires_at) VALUES (%s, %s, %s, %s, 'NGN', 3, 3000, %s, '{}', "
            "'accepted', now())",
            str(offer),
            str(self.partner),
            str(application),
            terms.principal,
            terms.total_due,
        )
        execute(
            self.url,
            "INSERT INTO caas_originations (loan_id, partner_id, application_id, offer_id, payout_method, "
            "payout_account_number, agreement, terms_hash) VALUES (%s, %s, %s, %s, 'bank_transfer', "
            "'0123456789', '{}', %s)",
            str(loan_id),
            str(self.partner),
            str(application),
            str(offer),
            "0x" + terms.terms_hash.hex(),
        )
        return loan_id

    def disbursed_at(self, terms: LoanTerms) -> int:
        (value,) = fetch(
            self.url,
            "SELECT extract(epoch FROM disbursed_at)::bigint FROM caas_loans WHERE chain_loan_id = %s",
            "0x" + terms.loan_id.hex(),
        )[0]
        return int(value)


def terms(**overrides: Any) -> LoanTerms:
    values: dict[str, Any] = {
        "loan_id": new_loan_id(),
        "principal": 1_000_000,
        "total_due": 1_100_000,
        "installment_count": 3,
        "installment_interval": INTERVAL,
        "grace_period": GRACE,
        "max_late_fees": 50_000,
        **overrides,
    }
    return LoanTerms(**values)


def local(unix: int) -> date:
    return datetime.fromtimestamp(unix, UTC).astimezone(LAGOS).date()


@pytest_asyncio.fixture
async def book(chain: Chain, make_database, redis_url: str, stream_prefix: str) -> AsyncIterator[Book]:
    url = new_database(make_database)
    settings = Settings(
        env="test",
        database={"url": url},
        redis={"url": redis_url},
        events={"stream_prefix": f"{stream_prefix}-collections"},
        chain={
            "rpc_url": chain.url,
            "deployment_file": str(chain.deployment_file),
            "sender_private_key": dev_roles().sender.private_key,
        },
        # a fee above the small caps these loans have, to see the cap hold
        collections={"late_fee_min": 30_000},
    )
    partner = uuid.uuid4()
    execute(url, "INSERT INTO caas_partners (id, name) VALUES (%s, 'collections test')", str(partner))
    app = create_app(settings)
    token = auth.issue_token(settings.auth.jwt_secret.get_secret_value(), partner_id=partner)
    db = Database.from_settings(settings.database, application_name="caas-collections-test")
    rpc = JsonRpc(chain.url, timeout_s=30)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://collections",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        yield Book(url, chain, db, client, partner, rpc)
    await rpc.aclose()
    await db.dispose()


def topics(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [topic for topic, _ in events]


async def test_reminders__due_today_then_missed_tomorrow__and_reruns_change_nothing(book: Book):
    t = terms()
    loan = book.loan(t)
    await book.index()
    due_date = local(book.disbursed_at(t) + INTERVAL)

    book.warp_into(due_date - timedelta(days=7))
    run = await book.cob(due_date - timedelta(days=7))
    assert run["status"] == "completed" and run["loans_processed"] == 1
    events = book.outbox(loan)
    assert topics(events) == ["credit.repayment.due", "notification.borrower.requested"]
    due = events[0][1]
    assert due["days_before"] == 7 and due["installment"] == 1 and due["due_date"] == due_date.isoformat()
    assert due["amount_due"] == {"value": 1_100_000 // 3, "currency": "NGN"}
    note = events[1][1]
    assert set(note) == {
        "notification_id",
        "partner_id",
        "loan_id",
        "sme_user_id",
        "channel",
        "template",
        "data",
    }
    assert (note["channel"], note["template"], note["sme_user_id"]) == (
        "email",
        "repayment_due",
        "acme-trading-ltd",
    )
    assert note["partner_id"] == str(book.partner) and note["loan_id"] == str(loan)
    partners = fetch(
        book.url,
        "SELECT DISTINCT partner_id::text FROM caas_outbox WHERE payload->>'loan_id' = %s",
        str(loan),
    )
    assert partners == [(str(book.partner),)]

    # the same date again: nothing new, anywhere
    before = (book.outbox(loan), book.intents())
    await book.cob(due_date - timedelta(days=7))
    assert (book.outbox(loan), book.intents()) == before

    book.warp_into(due_date)
    await book.cob(due_date)
    today = [p for topic, p in book.outbox(loan)[2:] if topic == "credit.repayment.due"]
    assert [p["days_before"] for p in today] == [0]
    assert "credit.repayment.missed" not in topics(book.outbox(loan))

    book.warp_into(due_date + timedelta(days=1))
    await book.cob(due_date + timedelta(days=1))
    missed = [p for topic, p in book.outbox(loan) if topic == "credit.repayment.missed"]
    assert len(missed) == 1 and missed[0]["installment"] == 1
    templates = [
        p["template"] for topic, p in book.outbox(loan) if topic == "notification.borrower.requested"
    ]
    assert templates == ["repayment_due", "repayment_due", "repayment_missed"]
    # inside the grace period: no fee, not past due
    assert book.intents() == []

    before = (book.outbox(loan), book.intents())
    rerun = await book.cob(due_date + timedelta(days=1))
    assert (book.outbox(loan), book.intents()) == before
    assert rerun["summary"]["already_done"] == 1

    view = (await book.client.get(f"/v1/loans/{loan}/collections")).json()
    assert view["bucket"] == "current" and view["cbn_class"] == "performing"
    assert [h["kind"] for h in view["history"]] == ["due_reminder", "due_reminder", "missed"]
    run = (await book.client.get(f"/v1/collections/cob-runs/{due_date + timedelta(days=1)}")).json()
    assert run["partner"]["actions"] == {"missed": 1}


async def test_late_fee_within_cap_once__default_at_threshold__write_off_proposal(book: Book, chain: Chain):
    t = terms(max_late_fees=20_000)
    loan = book.loan(t)
    await book.index()
    first_due = book.disbursed_at(t) + INTERVAL
    w = chain.workload

    # past grace: the fee (30_000 by policy) is held to the cap (20_000), once
    book.warp_to(first_due + GRACE + 2 * SECONDS_PER_DAY)
    day = local(book.head())
    await book.cob(day)
    await book.drain()
    intents = book.intents()
    assert intents == [(f"assess_late_fee:0x{t.loan_id.hex()}:{day.isoformat()}", "confirmed")]
    ref = fee_ref("0x" + t.loan_id.hex(), day)
    assert int(w.call(w.book, "is_fee_assessed", ref), 16) == 1
    assert int(w.call(w.book, "outstanding", t.loan_id), 16) == t.total_due + 20_000
    await book.cob(day)
    assert book.intents() == intents
    # the reference is spent on chain: a retry with it could never charge twice
    with pytest.raises(RuntimeError, match="fee already assessed"):
        w.rpc.call(
            "eth_call",
            {
                "from": dev_roles().sender.address,
                "to": w.book.address,
                "data": w.book.calldata("assess_late_fee", t.loan_id, 1, ref),
            },
            "latest",
        )

    # 29 days past due: not yet; 30 (the contract's default_after_days): mark_default, on chain
    book.warp_to(first_due + (DEFAULT_AFTER_DAYS - 1) * SECONDS_PER_DAY + 3_600)
    await book.cob(local(book.head()))
    assert "mark_default" not in str(book.intents())
    book.warp_to(first_due + DEFAULT_AFTER_DAYS * SECONDS_PER_DAY + 3_600)
    await book.cob(local(book.head()))
    await book.drain()
    assert (f"mark_default:0x{t.loan_id.hex()}", "confirmed") in book.intents()
    assert int(w.call(w.book, "loan_state", t.loan_id), 16) == 5  # DEFAULTED

    # the next close of business sees the default and opens the committee's write-off
    await book.index()
    book.warp_to(book.head() + SECONDS_PER_DAY)
    await book.cob(local(book.head()))
    listed = (await book.client.get("/v1/collections/write-off-proposals")).json()["data"]
    assert len(listed) == 1
    proposal = listed[0]
    assert proposal["loan_id"] == str(loan) and proposal["status"] == "awaiting_signers"
    assert proposal["propose"]["action"] == 5 and proposal["propose"]["arg"] == "0x" + t.loan_id.hex()

    # a signer sends exactly the stored calldata; a second signer confirms; execution writes off
    signer = dev_roles().signers[0]
    tx = w.rpc.call(
        "eth_sendTransaction",
        {"from": signer.address, "to": proposal["committee"], "data": proposal["calldata"]},
    )
    w.check([tx])
    w.sync_nonces()
    proposal_id = w.proposals
    w.send_one_by_one(
        [
            w.sign(w.signers[1], w.committee, "confirm", proposal_id),
            w.sign(w.signers[0], w.committee, "execute", proposal_id),
        ]
    )
    assert int(w.call(w.book, "loan_state", t.loan_id), 16) == 6  # WRITTEN_OFF
    await book.index()
    listed = (await book.client.get("/v1/collections/write-off-proposals")).json()["data"]
    assert listed[0]["status"] == "executed"


async def test_promise_to_pay__pauses_dunning__resumes_when_missed(book: Book):
    t = terms(max_late_fees=0)
    loan = book.loan(t)
    await book.index()
    first_due = book.disbursed_at(t) + INTERVAL

    book.warp_to(first_due + GRACE + SECONDS_PER_DAY + 3_600)  # 4 days past due
    start = local(book.head())
    await book.cob(start)

    def dunning() -> list[dict[str, Any]]:
        return [
            p
            for topic, p in book.outbox(loan)
            if topic == "notification.borrower.requested" and p["template"] != "repayment_due"
        ]

    sent = dunning()
    # the missed installment's notice, then the 3-day dunning step (by email)
    assert [(n["template"], n["channel"], n["data"].get("days_past_due")) for n in sent] == [
        ("repayment_missed", "sms", None),
        ("repayment_missed", "email", 4),
    ]
    promised = start + timedelta(days=5)
    created = await book.client.post(
        f"/v1/loans/{loan}/promises-to-pay",
        json={"amount": {"value": 100_000, "currency": "NGN"}, "promised_date": promised.isoformat()},
    )
    assert created.status_code == 201, created.text
    again = await book.client.post(
        f"/v1/loans/{loan}/promises-to-pay",
        json={"amount": {"value": 100_000, "currency": "NGN"}, "promised_date": promised.isoformat()},
    )
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"

    # 8 days past due (the 7-day step is due) but the promise holds: nothing to the borrower
    book.warp_into(start + timedelta(days=4), hour=12)
    await book.cob(start + timedelta(days=4))
    assert dunning() == sent
    view = (await book.client.get(f"/v1/loans/{loan}/collections")).json()
    assert view["latest"]["dunning_paused"] is True and view["promises"][0]["status"] == "open"

    # the promised date passes unpaid: the promise is broken and dunning resumes at once
    book.warp_into(promised + timedelta(days=1), hour=12)
    await book.cob(promised + timedelta(days=1))
    resumed = dunning()[len(sent) :]
    assert [(n["template"], n["channel"]) for n in resumed] == [("collection_initiated", "sms")]
    view = (await book.client.get(f"/v1/loans/{loan}/collections")).json()
    assert view["promises"][0]["status"] == "broken" and view["latest"]["dunning_paused"] is False
    assert [h["kind"] for h in view["history"]].count("promise_broken") == 1


async def test_requires_the_collection_permission_and_refuses_future_dates(book: Book):
    token = auth.issue_token(
        Settings().auth.jwt_secret.get_secret_value(), partner_id=book.partner, permissions=(auth.LOAN_READ,)
    )
    refused = await book.client.post(
        "/v1/collections/cob-runs", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert refused.status_code == 403
    # a partner with every credit permission is no operator either
    assert (await book.client.post("/v1/collections/cob-runs", json={})).status_code == 403
    future = local(book.head()) + timedelta(days=400)
    response = await book.client.post(
        "/v1/collections/cob-runs", json={"business_date": future.isoformat()}, headers=operator_headers()
    )
    assert response.status_code == 409 and response.json()["errors"][0]["field"] == "business_date"
    assert json.loads(response.text)["type"].endswith("business-date-in-future")


async def test_analytics__par_weighted_by_balance__csv_and_svg(book: Book, chain: Chain):
    """A big loan 30+ days late beside a small current one: PAR30 is the big loan's share of the
    balance (a count would say one half)."""
    from xml.etree import ElementTree

    from offchain.services.analytics.app import create_app as analytics_app

    big, small = terms(principal=9_000_000, total_due=9_900_000), terms()
    book.loan(big)
    book.loan(small)
    w = chain.workload
    w.send(
        [w.repay(small.loan_id, 2 * (small.total_due // 3), keccak(text=f"paystack:{small.loan_id.hex()}"))]
    )
    await book.index()
    book.warp_to(book.disbursed_at(big) + INTERVAL + GRACE + 35 * SECONDS_PER_DAY)
    await book.index()

    settings = book.client._transport.app.state.settings  # type: ignore[attr-defined]
    app = analytics_app(settings)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://analytics",
                headers={"Authorization": book.client.headers["Authorization"]},
            )
        )
        figures = (await client.get("/v1/analytics/portfolio")).json()
        ngn = figures["currencies"]["NGN"]
        small_left = small.total_due - 2 * (small.total_due // 3)
        assert ngn["portfolio_balance"] == big.total_due + small_left
        assert ngn["par30_balance"] == big.total_due and ngn["par60_balance"] == 0
        assert ngn["par30"] == pytest.approx(big.total_due / (big.total_due + small_left), abs=1e-6)
        assert ngn["par30"] > 0.9  # not 0.5: weighted by balance
        assert ngn["disbursed_volume"] == big.principal + small.principal
        assert 0 < ngn["collection_rate"] < 1
        assert figures["vintages"][0]["points"][0]["share"] == 0

        csv_response = await client.get("/v1/analytics/portfolio", params={"format": "csv"})
        assert csv_response.headers["content-type"].startswith("text/csv")
        rows = {
            (r.split(",")[1], r.split(",")[2]): r.split(",")[3] for r in csv_response.text.splitlines()[1:]
        }
        assert float(rows[("NGN", "par30")]) == pytest.approx(ngn["par30"])

        svg = await client.get("/v1/analytics/portfolio", params={"format": "svg"})
        assert svg.headers["content-type"].startswith("image/svg+xml")
        root = ElementTree.fromstring(svg.text)
        bars = {
            r.get("data-metric"): float(r.get("data-value"))
            for r in root.iter("{http://www.w3.org/2000/svg}rect")
            if r.get("data-metric")
        }
        assert bars["par30"] == pytest.approx(ngn["par30"]) and bars["par90"] == 0
        vintage = await client.get("/v1/analytics/portfolio", params={"format": "svg", "chart": "vintage"})
        lines = list(ElementTree.fromstring(vintage.text).iter("{http://www.w3.org/2000/svg}polyline"))
        assert lines and lines[0].get("data-cohort", "").endswith("NGN")

        token = auth.issue_token(
            Settings().auth.jwt_secret.get_secret_value(),
            partner_id=book.partner,
            permissions=(auth.LOAN_READ,),
        )
        assert (
            await client.get("/v1/analytics/portfolio", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 403
