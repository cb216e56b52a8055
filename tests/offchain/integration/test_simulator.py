"""The simulator as a real server, driven through the real clients: KYC conventions, AML, JWKS
rotation, signed webhooks and SME events as a receiving server sees them, and delivery faults."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from simulator_support import (
    PAYSTACK_SECRET,
    SME_SECRET,
    Receiver,
    ServerThread,
    free_port,
    running_simulator,
    simulator_config,
)

from offchain.domain.underwriting.bank_statement import analyze
from offchain.domain.underwriting.policy import KycStatus
from offchain.platform.auth import JwtVerifier
from offchain.platform.problems import Problem
from offchain.rails.paystack import webhooks
from offchain.rails.paystack.client import PaystackClient
from offchain.rails.simulator.app import create_app
from offchain.rails.sme import events
from offchain.rails.sme.auth import JWKS_PATH, JwksClient, SigningKeyNotFound
from offchain.rails.sme.kyc import SmeKycClient

pytestmark = pytest.mark.asyncio
PAYSTACK_HOOK = "/v1/webhooks/paystack"
SME_HOOK = "/v1/events/sme"


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    for sim_url, _ in running_simulator(receiver):
        yield sim_url, receiver


@pytest.fixture
def sim(world: tuple[str, Receiver]) -> str:
    url, receiver = world
    httpx.post(f"{url}/simulate/reset", timeout=5).raise_for_status()
    receiver.reset()
    return url


@pytest.fixture
def receiver(world: tuple[str, Receiver]) -> Receiver:
    return world[1]


def paystack(sim: str) -> PaystackClient:
    return PaystackClient(sim, PAYSTACK_SECRET, backoff_s=0.01, max_backoff_s=0.05)


async def _post(sim: str, path: str, body: dict) -> dict:
    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        response = await http.post(path, json=body)
    assert response.status_code < 300, response.text
    return response.json()


async def _deliveries(sim: str, **params: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=sim, timeout=15) as http:
        assert (await http.get("/simulate/idle", params={"timeout_s": 10})).json() == {"idle": True}
        return (await http.get("/simulate/webhooks", params=params)).json()


# -- SME KYC, statements, AML ---------------------------------------------------------------


async def test_kyc_id_conventions_through_the_kyc_client(sim: str) -> None:
    client = SmeKycClient(sim, attempts=1)
    try:
        verified = await client.get_kyc("acme-foods-001")
        pending = await client.get_kyc("kyc-pending-42")
        rejected = await client.get_kyc("kyc-rejected-7")
        thin = await client.get_kyc("thin-file-3")
        statement = await client.get_bank_statement("acme-foods-001")
        thin_statement = await client.get_bank_statement("thin-file-3")
    finally:
        await client.aclose()

    assert verified.kyc_status is KycStatus.VERIFIED
    assert verified.verification_date is not None and verified.credit_score is not None
    assert all(d["status"] == "verified" for d in verified.documents)
    assert verified.years_in_business(date.today()) is not None
    assert pending.kyc_status is KycStatus.PENDING and pending.verification_date is None
    assert rejected.kyc_status is KycStatus.REJECTED
    assert any(d["status"] == "rejected" and d.get("reason") for d in rejected.documents)
    assert thin.kyc_status is KycStatus.VERIFIED and thin.bank_statement_analysis is None
    assert thin_statement is None  # an empty statement is "no bank history"

    # healthy: twelve months of regular income, never overdrawn, nothing bounced
    assert statement is not None
    analysis = analyze(statement)
    assert analysis.months == 12
    assert analysis.nsf_count == 0 and analysis.overdraft_days == 0
    assert analysis.monthly_debt_service == 0
    assert analysis.net_monthly_cash_flow > 0
    assert verified.bank_statement_analysis is not None
    assert verified.bank_statement_analysis["averageMonthlyInflow"] == analysis.average_monthly_inflow


async def test_bank_statement_is_deterministic_per_id_and_differs_between_ids(sim: str) -> None:
    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        first = (await http.get("/sme/kyc/acme-foods-001/bank-statement")).json()
        again = (await http.get("/sme/kyc/acme-foods-001/bank-statement")).json()
        other = (await http.get("/sme/kyc/zenith-pharma-9/bank-statement")).json()

    assert first == again
    assert first["transactions"] != other["transactions"]
    assert first["currency"] == "NGN"
    assert all(isinstance(t["amount"], int) and t["balance"] >= 0 for t in first["transactions"])
    assert (
        sum(t["amount"] for t in first["transactions"]) == first["closingBalance"] - first["openingBalance"]
    )


async def test_aml_screen_flags_sanctioned_ids_only(sim: str) -> None:
    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        hit = (await http.get("/sme/aml/sanctioned-omega")).json()
        clear = (await http.get("/sme/aml/acme-foods-001")).json()
        kyc = (await http.get("/sme/kyc/sanctioned-omega")).json()

    assert hit["status"] == "hit" and hit["lists"] and hit["userId"] == "sanctioned-omega"
    assert all(entry["list"] in hit["screenedLists"] for entry in hit["lists"])
    assert clear == {**clear, "status": "clear", "lists": []}
    assert kyc["kycStatus"] == "verified" and kyc["riskScore"] >= 80


# -- SME auth: RS256 tokens and JWKS rotation -------------------------------------------------


async def _token(sim: str, partner_id: str, **claims: object) -> str:
    return (await _post(sim, "/sme/auth/token", {"partner_id": partner_id, **claims}))["access_token"]


async def test_jwks_rotation_is_picked_up_by_the_auth_client(sim: str) -> None:
    partner = str(uuid.uuid4())
    jwks = JwksClient(sim + JWKS_PATH, min_refresh_interval_s=0)
    verifier = JwtVerifier(hs256_secret=None, jwks=jwks)
    try:
        before = await _token(sim, partner, creditLimit=5_000_000_00, riskRating="B")
        principal = await verifier.verify(before)
        assert str(principal.partner_id) == partner
        assert principal.credit_limit == 5_000_000_00 and principal.risk_rating == "B"
        assert "credit:application:create" in principal.permissions
        await verifier.verify(before)
        assert jwks.fetches == 1  # cached

        rotated = await _post(sim, "/simulate/auth/rotate", {})
        after = await _token(sim, partner)
        assert (await verifier.verify(after)).partner_id == principal.partner_id
        assert jwks.fetches == 2 and rotated["kid"] in jwks.kids  # unknown kid: refetched once
        await verifier.verify(before)  # the previous key stays published for tokens in flight

        # a retired key stops verifying once the cached key set is refreshed (TTL or refetch)
        await _post(sim, "/simulate/auth/rotate", {"retire_previous": True})
        await verifier.verify(before)
        await jwks.refresh()
        with pytest.raises(SigningKeyNotFound) as refused:
            await verifier.verify(before)
        assert refused.value.status == 401
    finally:
        await jwks.aclose()


async def test_unknown_kid_refetches_at_most_once_per_interval(sim: str) -> None:
    jwks = JwksClient(sim + JWKS_PATH, min_refresh_interval_s=60)
    try:
        await jwks.key_for(None)  # one key published: a token without kid may use it
        for _ in range(5):
            with pytest.raises(SigningKeyNotFound):
                await jwks.key_for("made-up-kid")
        assert jwks.fetches == 1
    finally:
        await jwks.aclose()


async def test_forged_rs256_token_is_refused(sim: str) -> None:
    token = await _token(sim, str(uuid.uuid4()))
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}"
    jwks = JwksClient(sim + JWKS_PATH)
    try:
        with pytest.raises(Problem) as refused:
            await JwtVerifier(jwks=jwks).verify(forged)
        assert refused.value.status == 401
    finally:
        await jwks.aclose()


# -- Paystack webhooks as the gateway receives them -------------------------------------------


async def test_dedicated_account_charge_arrives_signed_and_parses(sim: str, receiver: Receiver) -> None:
    async with paystack(sim) as client:
        customer = await client.create_customer(email="ada@acme.ng", first_name="Ada", last_name="Obi")
        account = await client.create_dedicated_account(customer=customer.customer_code)
    await _post(
        sim,
        "/simulate/charge",
        {"amount": 2_500_000, "currency": "NGN", "account_number": account.account_number, "loan_id": "L-1"},
    )

    [hook] = await receiver.wait_for(PAYSTACK_HOOK, 1)
    event = webhooks.verify_and_parse(hook.body, hook.headers, secrets=PAYSTACK_SECRET)

    assert isinstance(event, webhooks.ChargeSuccess)
    charge = event.data
    assert (charge.amount, charge.currency, charge.channel) == (2_500_000, "NGN", "dedicated_nuban")
    assert charge.loan_id == "L-1"
    assert charge.receiver_account_number == account.account_number
    assert charge.authorization is not None and charge.authorization.sender_name
    assert charge.dedicated_account is not None
    assert charge.dedicated_account.account_number == account.account_number
    assert charge.customer is not None and charge.customer.customer_code == customer.customer_code
    # the signature is hex HMAC-SHA512 of exactly the bytes sent
    assert hook.headers[webhooks.SIGNATURE_HEADER] == webhooks.sign(hook.body, PAYSTACK_SECRET)

    tampered = hook.body.replace(b'"amount":2500000', b'"amount":9500000')
    assert tampered != hook.body
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify_and_parse(tampered, hook.headers, secrets=PAYSTACK_SECRET)
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify_and_parse(hook.body, hook.headers, secrets="sk_test_another_key")


async def test_transfer_outcomes_arrive_as_paystack_webhooks(sim: str, receiver: Receiver) -> None:
    await _post(sim, "/simulate/scenario", {"transfers": [{"outcome": "failed"}, {"outcome": "reversed"}]})
    async with paystack(sim) as client:
        recipient = await client.create_recipient(
            name="Ada Obi", account_number="0123456789", bank_code="058"
        )
        for reference in ("payout-fails-0001", "payout-reverses-01"):
            await client.initiate_transfer(
                amount=100_000, recipient_code=recipient.recipient_code, reference=reference
            )

    hooks = await receiver.wait_for(PAYSTACK_HOOK, 3)
    parsed = [webhooks.verify_and_parse(h.body, h.headers, secrets=PAYSTACK_SECRET) for h in hooks]
    seen = [
        (e.event, e.data.reference, e.data.status) for e in parsed if isinstance(e, webhooks.TransferEvent)
    ]
    assert len(seen) == 3
    assert ("transfer.failed", "payout-fails-0001", "failed") in seen
    reversed_ = [s for s in seen if s[1] == "payout-reverses-01"]
    assert reversed_ == [
        ("transfer.success", "payout-reverses-01", "success"),
        ("transfer.reversed", "payout-reverses-01", "reversed"),
    ]
    transfer = next(e for e in parsed if isinstance(e, webhooks.TransferEvent)).data
    assert transfer.recipient_code == recipient.recipient_code


async def test_duplicate_fault_delivers_identical_copies(sim: str, receiver: Receiver) -> None:
    await _post(sim, "/simulate/scenario", {"webhooks": [{"fault": "duplicate", "copies": 4}]})
    await _post(sim, "/simulate/charge", {"amount": 150_000, "currency": "NGN", "loan_id": "L-dup"})

    hooks = await receiver.wait_for(PAYSTACK_HOOK, 4)
    assert len({h.body for h in hooks}) == 1  # byte-identical, as a provider's redelivery is
    keys = {webhooks.verify_and_parse(h.body, h.headers, secrets=PAYSTACK_SECRET).dedupe_key for h in hooks}
    assert len(keys) == 1
    log = await _deliveries(sim, channel="paystack")
    assert [(d["fault"], d["copy"], d["state"]) for d in log] == [
        ("duplicate", n, "delivered") for n in (1, 2, 3, 4)
    ]


async def test_reorder_fault_swaps_two_events(sim: str, receiver: Receiver) -> None:
    await _post(sim, "/simulate/scenario", {"webhooks": [{"fault": "reorder", "channel": "paystack"}]})
    await _post(sim, "/simulate/charge", {"amount": 100_000, "currency": "NGN", "reference": "first-sent"})
    await _post(sim, "/simulate/charge", {"amount": 100_000, "currency": "NGN", "reference": "second-sent"})

    hooks = await receiver.wait_for(PAYSTACK_HOOK, 2)
    order = [json.loads(h.body)["data"]["reference"] for h in hooks]
    assert order == ["second-sent", "first-sent"]


async def test_drop_fault_redelivers_later(sim: str, receiver: Receiver) -> None:
    await _post(sim, "/simulate/scenario", {"webhooks": [{"fault": "drop", "delay_s": 0.3}]})
    sent = await _post(sim, "/simulate/charge", {"amount": 100_000, "currency": "NGN"})
    seen = receiver.on(PAYSTACK_HOOK)
    # read after the receiver: still only the dropped attempt, so the redelivery had not been sent
    async with httpx.AsyncClient(base_url=sim, timeout=15) as http:
        [entry] = (await http.get("/simulate/webhooks", params={"reference": sent["reference"]})).json()
    assert entry["state"] == "dropped" and entry["attempts"] == [{**entry["attempts"][0], "dropped": True}]
    assert seen == []  # lost on the way

    [hook] = await receiver.wait_for(PAYSTACK_HOOK, 1)
    assert json.loads(hook.body)["data"]["reference"] == sent["reference"]
    [entry] = await _deliveries(sim, reference=sent["reference"])
    assert entry["attempts"][0] == {**entry["attempts"][0], "dropped": True}
    assert entry["state"] == "delivered"


async def test_delay_fault_holds_the_delivery(sim: str, receiver: Receiver) -> None:
    await _post(
        sim,
        "/simulate/scenario",
        {"webhooks": [{"fault": "delay", "delay_s": 0.3, "event": "charge.success"}]},
    )
    started = time.monotonic()
    await _post(sim, "/simulate/charge", {"amount": 100_000, "currency": "NGN"})
    [hook] = await receiver.wait_for(PAYSTACK_HOOK, 1)
    assert hook.at - started >= 0.3
    assert (await _post(sim, "/simulate/scenario", {"transfers": [{"outcome": "success"}]}))["webhooks"] == []


async def test_delivery_retries_with_backoff_then_gives_up(sim: str, receiver: Receiver) -> None:
    receiver.statuses.extend([500, 503])
    ok = await _post(sim, "/simulate/charge", {"amount": 100_000, "currency": "NGN"})
    await receiver.wait_for(PAYSTACK_HOOK, 3)
    [entry] = await _deliveries(sim, reference=ok["reference"])
    assert [a.get("status_code") for a in entry["attempts"]] == [500, 503, 200]
    assert entry["state"] == "delivered"

    receiver.statuses.extend([500] * 10)
    failing = await _post(sim, "/simulate/charge", {"amount": 100_000, "currency": "NGN"})
    [entry] = await _deliveries(sim, reference=failing["reference"])
    assert entry["state"] == "failed" and len(entry["attempts"]) == 4  # bounded


# -- SME events ------------------------------------------------------------------------------


async def test_sme_events_are_signed_with_a_timestamp(sim: str, receiver: Receiver) -> None:
    await _post(sim, "/simulate/sme/kyc-verified", {"user_id": "acme-foods-001", "partner_id": "p-1"})
    await _post(
        sim,
        "/simulate/sme/payment",
        {
            "loan_id": "L-9",
            "amount": 1_250_000,
            "currency": "NGN",
            "reference": "sme-ref-9",
            "method": "wallet",
        },
    )
    hooks = await receiver.wait_for(SME_HOOK, 2)
    parsed = [events.verify_and_parse(h.body, h.headers, secrets=SME_SECRET) for h in hooks]
    kyc = next(e for e in parsed if isinstance(e, events.SmeKycVerified))
    payment = next(e for e in parsed if isinstance(e, events.SmePaymentReceived))

    assert kyc.data.user_id == "acme-foods-001" and kyc.data.partner_id == "p-1"
    assert kyc.data.verification_date is not None
    assert (payment.data.loan_id, payment.data.amount, payment.data.method) == ("L-9", 1_250_000, "wallet")
    assert payment.dedupe_key == "sme:payment:sme-ref-9"

    hook = hooks[0]
    with pytest.raises(events.InvalidSmeSignature):
        events.verify_and_parse(hook.body + b" ", hook.headers, secrets=SME_SECRET)
    with pytest.raises(events.InvalidSmeSignature, match="tolerance"):
        events.verify_and_parse(hook.body, hook.headers, secrets=SME_SECRET, now=10**10)

    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        refused = await http.post("/simulate/sme/kyc-verified", json={"user_id": "kyc-pending-1"})
    assert refused.status_code == 409


async def test_notifications_from_the_backend_are_recorded(sim: str) -> None:
    body = json.dumps({"user_id": "acme-foods-001", "type": "credit.available", "max_amount": 100}).encode()
    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        signed = await http.post(
            "/sme/notifications",
            content=body,
            headers={events.SIGNATURE_HEADER: events.sign(body, SME_SECRET)},
        )
        unsigned = await http.post("/sme/notifications", json={"user_id": "x"})
        listed = (await http.get("/simulate/sme/notifications")).json()

    assert signed.status_code == unsigned.status_code == 202
    assert [(n["payload"]["user_id"], n["signature_valid"]) for n in listed] == [
        ("acme-foods-001", True),
        ("x", None),
    ]


# -- persistence -----------------------------------------------------------------------------


async def _kids(url: str) -> list[str]:
    async with httpx.AsyncClient(timeout=5) as http:
        return [k["kid"] for k in (await http.get(url + JWKS_PATH)).json()["keys"]]


async def test_state_file_keeps_transfers_and_signing_keys_across_restarts(tmp_path: Path) -> None:
    config = simulator_config("http://127.0.0.1:1")
    config.state_file = tmp_path / "simulator.json"
    with ServerThread(create_app(config), free_port()) as first:
        await _post(first.url, "/simulate/scenario", {"transfers": [{"outcome": "stall"}]})
        async with paystack(first.url) as client:
            recipient = await client.create_recipient(
                name="Ada", account_number="0123456789", bank_code="058"
            )
            made = await client.initiate_transfer(
                amount=100_000, recipient_code=recipient.recipient_code, reference="survives-restart-1"
            )
        kids = await _kids(first.url)
    assert config.state_file.stat().st_mode & 0o077 == 0  # holds private keys: owner-only

    with ServerThread(create_app(config), free_port()) as second:
        async with paystack(second.url) as client:
            kept = await client.verify_transfer("survives-restart-1")
            again = await client.initiate_transfer(
                amount=100_000, recipient_code=recipient.recipient_code, reference="survives-restart-1"
            )
        assert await _kids(second.url) == kids

    assert kept.transfer_code == made.transfer_code == again.transfer_code
    assert kept.status.value == "pending"


# -- the simulated Paystack's key check ---------------------------------------------------------

PAYSTACK_ROUTES = [
    ("POST", "/transferrecipient"),
    ("POST", "/transfer"),
    ("POST", "/transfer/finalize_transfer"),
    ("GET", "/transfer/verify/any-ref"),
    ("GET", "/transfer/TRF_any"),
    ("GET", "/transaction/verify/any-ref"),
    ("POST", "/customer"),
    ("POST", "/dedicated_account"),
    ("POST", "/dedicated_account/assign"),
    ("GET", "/balance"),
]


async def test_every_paystack_route_refuses_a_missing_or_wrong_key_before_reading_the_body(sim: str) -> None:
    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        for method, path in PAYSTACK_ROUTES:
            # a body that is not even JSON: the key is checked first, so the answer is still 401
            missing = await http.request(method, path, content=b"{not json")
            assert missing.status_code == 401, (path, missing.text)
            assert missing.json()["message"] == "Authorization key not specified"
            wrong = await http.request(
                method, path, content=b"{not json", headers={"Authorization": "Bearer sk_test_wrong"}
            )
            assert wrong.status_code == 401, (path, wrong.text)
            assert wrong.json()["message"] == "Invalid key"
        right = await http.get("/balance", headers={"Authorization": f"Bearer {PAYSTACK_SECRET}"})
        assert right.status_code == 200 and right.json()["status"] is True
