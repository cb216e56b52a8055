"""Committee approvals through the gateway: every case of issue 15's "approvals wedge" as a test.

Real parts: the gateway app (in this event loop), PostgreSQL, Anvil with LoanBook + committee, and
the transaction sender, which mines the `approve_with_signatures` the gateway submits. Loans are
created on chain and linked to a partner the way accepting an offer links them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from indexer_support import Chain, execute, fetch, module_chain, new_database
from simulator_support import ServerThread

from offchain.chain.allowlist import Allowlist
from offchain.chain.contracts import sign_approval
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import SenderWorker
from offchain.chain.workload import PAUSE_ACTION, UNPAUSE_ACTION, LoanTerms, new_loan_id
from offchain.domain.approvals import SECP256K1_N
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import SenderSettings, Settings
from offchain.services.gateway.app import create_app

pytestmark = pytest.mark.asyncio
REPO = Path(__file__).resolve().parents[3]
SIGNERS = [s.private_key for s in dev_roles().signers]  # three signers, threshold 2
ROUNDS = 5  # the concurrency test's repetitions


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    yield from module_chain(tmp_path_factory)


def _split(signature: bytes) -> tuple[bytes, int, int]:
    return signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]


def v01(signature: bytes) -> bytes:
    return signature[:64] + bytes([signature[64] - 27])


def v3536(signature: bytes) -> bytes:
    return signature[:64] + bytes([signature[64] + 8])


def compact(signature: bytes) -> bytes:
    r, s, v = _split(signature)
    return r + (((v - 27) << 255) | s).to_bytes(32, "big")


def high_s(signature: bytes) -> bytes:
    r, s, v = _split(signature)
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


def hexed(signature: bytes) -> str:
    return "0x" + signature.hex()


@dataclass
class Desk:
    """One test's world: its database, a partner, the gateway, and the sender that mines."""

    url: str
    chain: Chain
    settings: Settings
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

    def pending_loans(self, count: int) -> list[tuple[uuid.UUID, LoanTerms]]:
        """`count` loans PENDING on chain, each linked to the partner with its origination."""
        w = self.chain.workload
        w.sync_nonces()  # the sender worker may have used the same key since
        made = [
            LoanTerms(loan_id=new_loan_id(), principal=1_000_000, total_due=1_100_000) for _ in range(count)
        ]
        w.send([w.create_loan(t) for t in made])
        out = []
        for t in made:
            loan_id, application, offer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            execute(
                self.url,
                "INSERT INTO caas_loans (id, partner_id, chain_loan_id) VALUES (%s, %s, %s)",
                str(loan_id),
                str(self.partner),
                "0x" + t.loan_id.hex(),
            )
            execute(
                self.url,
                "INSERT INTO caas_applications (id, partner_id, external_id, sme_user_id, borrower_ref, "
                "amount, currency, tenor_months, purpose, status) VALUES (%s, %s, %s, 'acme', %s, %s, 'NGN', "
                "3, 'stock', 'accepted')",
                str(application),
                str(self.partner),
                f"ext-{application}",
                "0x" + t.borrower_ref.hex(),
                t.principal,
            )
            execute(
                self.url,
                "INSERT INTO caas_offers (id, partner_id, application_id, amount, currency, tenor_months, "
                "apr_bps, total_due, terms, status, expires_at) VALUES (%s, %s, %s, %s, 'NGN', 3, 3000, %s, "
                "'{}', 'accepted', now())",
                str(offer),
                str(self.partner),
                str(application),
                t.principal,
                t.total_due,
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
                "0x" + t.terms_hash.hex(),
            )
            out.append((loan_id, t))
        return out

    def pending_loan(self) -> tuple[uuid.UUID, LoanTerms]:
        return self.pending_loans(1)[0]

    async def request(self, loan: uuid.UUID) -> httpx.Response:
        return await self.client.get(f"/v1/loans/{loan}/approval-request")

    async def typed(self, loan: uuid.UUID) -> dict[str, Any]:
        response = await self.request(loan)
        assert response.status_code == 200, response.text
        return dict(response.json()["typed_data"])

    async def post(self, loan: uuid.UUID, signer: str, signature: str, **extra: Any) -> httpx.Response:
        return await self.client.post(
            f"/v1/loans/{loan}/approvals", json={"signer": signer, "signature": signature, **extra}
        )

    async def sign_and_post(
        self, loan: uuid.UUID, key: str, form=lambda sig: sig, typed: dict[str, Any] | None = None
    ) -> httpx.Response:
        signer, signature = sign_approval(typed or await self.typed(loan), key)
        return await self.post(loan, signer, hexed(form(signature)))

    def state(self, terms: LoanTerms) -> int:
        return int(self.chain.workload.call(self.chain.workload.book, "loan_state", terms.loan_id), 16)

    def intents(self, terms: LoanTerms) -> list[tuple[str, str]]:
        rows = fetch(
            self.url,
            "SELECT idempotency_key, status FROM caas_tx_intents WHERE idempotency_key LIKE %s ORDER BY seq",
            f"approve_with_signatures:0x{terms.loan_id.hex()}:%",
        )
        return [(str(k), str(s)) for k, s in rows]

    def kept(self, loan: uuid.UUID) -> dict[str, str]:
        rows = fetch(
            self.url, "SELECT signer, signature FROM caas_approval_signatures WHERE loan_id = %s", str(loan)
        )
        return {str(a).lower(): str(s) for a, s in rows}

    def govern(self, action: int) -> None:
        w = self.chain.workload
        w.sync_nonces()
        now = int(w.block()["timestamp"], 16)
        for raw in w.govern(action, now=now):  # one at a time: a batch may reach the node reordered
            w.send([raw])


@pytest_asyncio.fixture
async def desk(chain: Chain, make_database, redis_url: str, stream_prefix: str) -> AsyncIterator[Desk]:
    url = new_database(make_database)
    settings = Settings(
        env="test",
        database={"url": url},
        redis={"url": redis_url},
        events={"stream_prefix": f"{stream_prefix}-approvals"},
        chain={
            "rpc_url": chain.url,
            "deployment_file": str(chain.deployment_file),
            "sender_private_key": dev_roles().sender.private_key,
        },
    )
    partner = uuid.uuid4()
    execute(url, "INSERT INTO caas_partners (id, name) VALUES (%s, 'approvals test')", str(partner))
    app = create_app(settings)
    token = auth.issue_token(settings.auth.jwt_secret.get_secret_value(), partner_id=partner)
    db = Database.from_settings(settings.database, application_name="caas-approvals-test")
    rpc = JsonRpc(chain.url, timeout_s=30)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gateway",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        yield Desk(url, chain, settings, db, client, partner, rpc)
    await rpc.aclose()
    await db.dispose()


PENDING, APPROVED = 1, 2


# -- signature forms ------------------------------------------------------------------------


@pytest.mark.parametrize("form", [v01, v3536, compact], ids=["v_0_1", "v_35_36", "eip2098_compact"])
async def test_signature_forms__normalized_and_the_loan_approves(desk: Desk, form):
    """Issue 15: a v 0/1 signature was kept as sent and made approve_with_signatures revert."""
    loan, terms = desk.pending_loan()
    first = await desk.sign_and_post(loan, SIGNERS[0], form)
    assert first.status_code == 200, first.text
    assert (first.json()["approvals"], first.json()["submitted"]) == (1, False)
    kept = next(iter(desk.kept(loan).values()))
    assert len(kept) == 132 and int(kept[-2:], 16) in (27, 28)  # stored as the contract takes it
    second = await desk.sign_and_post(loan, SIGNERS[1], form)
    assert second.status_code == 200, second.text
    assert second.json()["submitted"] is True
    await desk.drain()
    assert desk.state(terms) == APPROVED
    assert [status for _, status in desk.intents(terms)] == ["confirmed"]


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda s: "0x" + s.hex()[:-1], "odd number of hex digits"),  # 129 hex digits
        (lambda s: "0x" + s.hex()[:-2] + "1d", "v = 29"),
        (lambda s: "0x" + s.hex() + "00", "66 bytes"),
        (lambda s: "0x" + s.hex()[:126], "63 bytes"),
        (lambda s: hexed(high_s(s)), "high-s"),
        (lambda s: "0x" + "00" * 65, "zero"),
        (lambda s: "0x", "0 bytes"),
    ],
    ids=["129_hex_digits", "v_29", "66_bytes", "63_bytes", "high_s", "zero_r_s", "empty"],
)
async def test_malformed_signature__422_names_the_field_and_keeps_nothing(desk: Desk, mangle, reason):
    loan, _ = desk.pending_loan()
    signer, signature = sign_approval(await desk.typed(loan), SIGNERS[0])
    response = await desk.post(loan, signer, mangle(signature))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert errors[0]["field"] == "signature" and reason in errors[0]["reason"], errors
    assert desk.kept(loan) == {}


@pytest.mark.parametrize(
    "bad", ["0xzz" + "00" * 64, "0x" + "ab" * 200, "abcd"], ids=["not_hex", "too_long", "no_0x"]
)
async def test_signature_not_hex__422(desk: Desk, bad):
    loan, _ = desk.pending_loan()
    response = await desk.post(loan, Account.from_key(SIGNERS[0]).address, bad)
    assert response.status_code == 422, response.text
    assert desk.kept(loan) == {}


async def test_signature_by_another_key__refused(desk: Desk):
    loan, _ = desk.pending_loan()
    typed = await desk.typed(loan)
    _, by_other = sign_approval(typed, SIGNERS[1])
    response = await desk.post(loan, Account.from_key(SIGNERS[0]).address, hexed(by_other))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "signature"


async def test_non_signer__refused(desk: Desk):
    loan, _ = desk.pending_loan()
    outsider = dev_roles().deployer.private_key
    response = await desk.sign_and_post(loan, outsider)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "signer"


async def test_other_deadline__refused(desk: Desk):
    loan, _ = desk.pending_loan()
    request = (await desk.request(loan)).json()
    assert request["typed_data"]["message"]["deadline"] == request["deadline"]
    typed = {**request["typed_data"], "message": {**request["typed_data"]["message"], "deadline": 1}}
    signer, signature = sign_approval(typed, SIGNERS[0])
    response = await desk.post(loan, signer, hexed(signature), deadline=1)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "deadline"
    # without the deadline field: the signature is over another document, refused as such
    response = await desk.post(loan, signer, hexed(signature))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "signature"


# -- the state machine ----------------------------------------------------------------------


async def test_after_threshold__in_flight_then_not_pending__409_with_state(desk: Desk):
    """Issue 15: the third signer got a 500 (IdempotencyConflict / `committee: loan not pending`)."""
    loan, terms = desk.pending_loan()
    typed = await desk.typed(loan)
    for key in SIGNERS[:2]:
        assert (await desk.sign_and_post(loan, key, typed=typed)).status_code == 200
    # the approving transaction is not mined yet (no sender running): in flight
    third = await desk.sign_and_post(loan, SIGNERS[2], typed=typed)
    assert third.status_code == 409, third.text
    body = third.json()
    assert body["type"] == "urn:caas:problem:approval-in-flight"
    assert (body["state"], body["approval"]) == ("PENDING", "submitted")
    assert body["tx_intent"].endswith(":1") and body["tx_status"] == "pending"
    request = await desk.request(loan)
    assert request.status_code == 409 and request.json()["tx_intent"] == body["tx_intent"]

    await desk.drain()
    assert desk.state(terms) == APPROVED
    for response in (await desk.sign_and_post(loan, SIGNERS[2], typed=typed), await desk.request(loan)):
        assert response.status_code == 409, response.text
        assert response.json()["type"] == "urn:caas:problem:loan-not-pending"
        assert response.json()["state"] == "APPROVED"


async def test_failed_attempt__loan_stays_approvable_with_a_fresh_intent(desk: Desk):
    """Issue 15: one failed approve_with_signatures wedged the loan for the epoch."""
    loan, terms = desk.pending_loan()
    typed = await desk.typed(loan)
    for key in SIGNERS[:2]:
        assert (await desk.sign_and_post(loan, key, typed=typed)).status_code == 200
    desk.govern(PAUSE_ACTION)  # after the simulation passed: the submission now fails
    try:
        await desk.drain()
        assert desk.intents(terms)[0][1] in ("failed", "reverted")
        assert desk.state(terms) == PENDING
    finally:
        desk.govern(UNPAUSE_ACTION)
    request = await desk.request(loan)
    assert request.status_code == 200, request.text
    assert request.json()["approvals"] == 2  # the signatures were kept
    again = await desk.sign_and_post(loan, SIGNERS[1], typed=typed)  # any signer re-posting retries
    assert again.status_code == 200 and again.json()["submitted"] is True, again.text
    assert again.json()["attempt"] == 2
    await desk.drain()
    assert desk.state(terms) == APPROVED
    keys = desk.intents(terms)
    assert [k.rsplit(":", 1)[1] for k, _ in keys] == ["1", "2"] and keys[1][1] == "confirmed", keys


async def test_blocked_submission__reported_and_kept(desk: Desk):
    """The requirement reached while the book is paused: nothing submitted, the reason said."""
    loan, terms = desk.pending_loan()
    typed = await desk.typed(loan)
    assert (await desk.sign_and_post(loan, SIGNERS[0], typed=typed)).status_code == 200
    desk.govern(PAUSE_ACTION)
    try:
        blocked = await desk.sign_and_post(loan, SIGNERS[1], typed=typed)
    finally:
        desk.govern(UNPAUSE_ACTION)
    assert blocked.status_code == 200, blocked.text
    body = blocked.json()
    assert (body["submitted"], body["state"], body["approvals"]) == (False, "collecting", 2)
    assert "paused" in body["blocked"]
    assert desk.intents(terms) == []
    assert len(desk.kept(loan)) == 2
    resumed = await desk.sign_and_post(loan, SIGNERS[0], typed=typed)
    assert resumed.json()["submitted"] is True
    await desk.drain()
    assert desk.state(terms) == APPROVED


async def test_kept_signatures_that_would_revert__dropped_and_reported(desk: Desk):
    """Rows kept by the old code (v 0/1 as sent) are normalized; one that no longer recovers to its
    signer is dropped and reported, and does not block the others."""
    loan, terms = desk.pending_loan()
    typed = await desk.typed(loan)
    epoch = typed["message"]["epoch"]
    signers = [Account.from_key(k).address for k in SIGNERS]
    _, legacy = sign_approval(typed, SIGNERS[0])
    other = {**typed, "message": {**typed["message"], "deadline": 1}}
    _, stale = sign_approval(other, SIGNERS[1])
    for signer, signature in ((signers[0], v01(legacy)), (signers[1], stale)):
        execute(
            desk.url,
            "INSERT INTO caas_approval_signatures (loan_id, epoch, signer, partner_id, signature, deadline) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            str(loan),
            epoch,
            signer.lower(),
            str(desk.partner),
            hexed(signature),
            typed["message"]["deadline"],
        )
    response = await desk.sign_and_post(loan, SIGNERS[2], typed=typed)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["submitted"] is True
    assert [d["signer"] for d in body["dropped"]] == [signers[1]]
    assert signers[1].lower() not in desk.kept(loan)
    await desk.drain()
    assert desk.state(terms) == APPROVED


async def test_corrected_signature__replaces_the_kept_one(desk: Desk):
    """Issue 15: a signer's corrected signature changed nothing. A kept row (as the old code kept
    it, here one that no longer recovers) is replaced by the signer's next valid post."""
    loan, terms = desk.pending_loan()
    typed = await desk.typed(loan)
    signer = Account.from_key(SIGNERS[0]).address
    _, wrong = sign_approval({**typed, "message": {**typed["message"], "epoch": 99}}, SIGNERS[0])
    execute(
        desk.url,
        "INSERT INTO caas_approval_signatures (loan_id, epoch, signer, partner_id, signature, deadline) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        str(loan),
        typed["message"]["epoch"],
        signer,
        str(desk.partner),
        hexed(wrong),
        typed["message"]["deadline"],
    )
    corrected = await desk.sign_and_post(loan, SIGNERS[0], typed=typed)
    assert corrected.status_code == 200, corrected.text
    _, good = sign_approval(typed, SIGNERS[0])
    assert desk.kept(loan) == {signer.lower(): hexed(good)}
    assert (await desk.sign_and_post(loan, SIGNERS[1], typed=typed)).json()["submitted"] is True
    await desk.drain()
    assert desk.state(terms) == APPROVED


async def test_concurrent_signers__exactly_one_submission_every_time(desk: Desk):
    """Issue 15: two signers posting at the same instant both got `approvals: 1, submitted: false`.

    Each round: all three signers post at once, each twice (six posts), for a fresh loan; every
    answer is 200 or 409 (never 500), exactly one says submitted, and after mining exactly one
    approve_with_signatures intent exists for the loan and it succeeded."""
    loans = desk.pending_loans(ROUNDS)
    for loan, terms in loans:
        typed = await desk.typed(loan)
        signed = [sign_approval(typed, key) for key in SIGNERS]
        posts = [desk.post(loan, signer, hexed(signature)) for signer, signature in signed * 2]
        answers = await asyncio.gather(*posts)
        assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
        submitted = [a for a in answers if a.status_code == 200 and a.json()["submitted"]]
        assert len(submitted) == 1, [a.text for a in answers]
        await desk.drain()
        assert desk.state(terms) == APPROVED
        assert [status for _, status in desk.intents(terms)] == ["confirmed"]


# -- the signer's script ----------------------------------------------------------------------


async def test_sign_script__output_accepted_as_printed(desk: Desk, tmp_path: Path, free_port):
    """scripts/sign_approval.py, run from outside the checkout with DEPLOYMENT_FILE set, signs the
    typed data from approval-request; its printed JSON is the POST body, unchanged."""
    loan, _ = desk.pending_loan()
    app = create_app(desk.settings)
    token = auth.issue_token(desk.settings.auth.jwt_secret.get_secret_value(), partner_id=desk.partner)
    with ServerThread(app, free_port()) as gateway:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DEPLOYMENT_FILE": str(desk.chain.deployment_file),
            "CHAIN_RPC_URL": desk.chain.url,
            "GATEWAY_URL": gateway.url,
            "CAAS_TOKEN": token,
        }
        printed = []
        for key in SIGNERS[:2]:
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, str(REPO / "scripts/sign_approval.py"), str(loan)],
                env={**env, "SIGNER_KEY": key},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr
            printed.append(result.stdout.strip().splitlines()[0])
        for body in printed:
            response = await asyncio.to_thread(
                httpx.post,
                f"{gateway.url}/v1/loans/{loan}/approvals",
                content=body,
                headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
        assert response.json()["submitted"] is True
        # outside the checkout, without a deployment file: a clear error, no traceback
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(REPO / "scripts/sign_approval.py"), "0x" + "11" * 32, "--deadline", "1"],
            env={
                "PATH": env["PATH"],
                "SIGNER_KEY": SIGNERS[0],
                "DEPLOYMENT_FILE": str(tmp_path / "nope.json"),
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "nope.json" in result.stderr
