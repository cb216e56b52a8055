"""A partner goes from application to an on-chain APPROVED loan through the API alone.

Real everything: gateway, underwriting (with its application consumer) and orchestration
(outbox relay, transaction sender, chain indexer) run in this event loop on a fresh migrated
database, Redis and Anvil with freshly deployed contracts; the SME platform is the simulator.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import httpx
import pytest
from eventually import eventually_async
from simulator_support import PAYSTACK_SECRET, SME_SECRET, ServerThread

from offchain.chain.contracts import sign_approval
from offchain.chain.deployment import deploy
from offchain.domain.offers.agreement import nuban_check_digit
from offchain.persistence.migrate import upgrade
from offchain.platform import auth
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import Settings
from offchain.services.gateway.app import create_app as gateway_app
from offchain.services.orchestration.app import create_app as orchestration_app
from offchain.services.underwriting.app import create_app as underwriting_app

pytestmark = pytest.mark.asyncio


@pytest.fixture
def journey_settings(
    make_database, redis_url, stream_prefix, anvil_url, tmp_path: Path, free_port
) -> Settings:
    database_url = make_database()
    upgrade(database_url)
    roles = dev_roles()
    deploy(
        rpc_url=anvil_url,
        deployer_key=roles.deployer.private_key,
        signers=[s.address for s in roles.signers],
        threshold=roles.threshold,
        backend_address=roles.sender.address,
        network="journey",
        out_dir=tmp_path,
    )
    return Settings(
        env="test",
        database={"url": database_url},
        redis={"url": redis_url},
        events={"stream_prefix": f"{stream_prefix}-journey", "retry_idle_ms": 200},
        chain={
            "rpc_url": anvil_url,
            "deployment_file": str(tmp_path / "journey.json"),
            "sender_private_key": roles.sender.private_key,
        },
        rails={"paystack_secret_key": PAYSTACK_SECRET, "sme_events_secret": SME_SECRET},
    )


def _valid_nuban(bank_code: str = "058", serial: str = "012345678") -> str:
    return serial + str(nuban_check_digit(bank_code, serial))


async def test_application_to_onchain_approved_loan(journey_settings: Settings, free_port):
    from offchain.rails.simulator.app import create_app as simulator_app
    from offchain.rails.simulator.config import SimulatorConfig

    with ServerThread(
        simulator_app(SimulatorConfig(paystack_secret_key=PAYSTACK_SECRET, sme_events_secret=SME_SECRET)),
        free_port(),
    ) as simulator:
        settings = journey_settings.model_copy(
            update={"rails": journey_settings.rails.model_copy(update={"simulator_url": simulator.url})}
        )
        apps = [gateway_app(settings), underwriting_app(settings), orchestration_app(settings)]
        async with contextlib.AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=apps[0])
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://gateway")
            )
            partner = uuid.uuid4()
            secret = settings.auth.jwt_secret.get_secret_value()
            headers = {"Authorization": "Bearer " + auth.issue_token(secret, partner_id=partner)}

            submitted = await client.post(
                "/v1/applications",
                json={
                    "external_id": "journey-1",
                    "borrower": {"sme_user_id": "acme-trading-ltd"},
                    "amount": {"value": 500_000_00, "currency": "NGN"},
                    "tenor_months": 6,
                    "purpose": "inventory",
                },
                headers={**headers, "Idempotency-Key": "journey-app-1"},
            )
            assert submitted.status_code == 201, submitted.text
            application_id = submitted.json()["id"]

            async def decided():
                body = (await client.get(f"/v1/applications/{application_id}", headers=headers)).json()
                return body if body["status"] not in ("submitted", "underwriting") else None

            application = await eventually_async(decided)
            assert application["status"] == "offered", application
            assert application["decision"]["reasons"] is not None
            offer = application["offers"][0]
            assert sum(item["amount"] for item in offer["schedule"]) == offer["total_due"]["value"]

            accepted = await client.post(
                f"/v1/offers/{offer['id']}/accept",
                json={
                    "payout": {
                        "method": "bank_transfer",
                        "account_number": _valid_nuban(),
                        "bank_code": "058",
                    }
                },
                headers={**headers, "Idempotency-Key": "journey-accept-1"},
            )
            assert accepted.status_code == 201, accepted.text
            loan_id = accepted.json()["loan_id"]

            async def on_chain(state: str):
                async def check():
                    loan = (await client.get(f"/v1/loans/{loan_id}", headers=headers)).json()
                    return loan if loan.get("chain_state") == state else None

                return await eventually_async(check)

            await on_chain("PENDING")
            request = (await client.get(f"/v1/loans/{loan_id}/approval-request", headers=headers)).json()
            assert request["required"] == 2
            for key in [s.private_key for s in dev_roles().signers[:2]]:
                signer, signature = sign_approval(request["typed_data"], key)
                added = await client.post(
                    f"/v1/loans/{loan_id}/approvals",
                    json={"signer": signer, "signature": "0x" + signature.hex()},
                    headers=headers,
                )
                assert added.status_code == 200, added.text
            assert added.json()["submitted"] is True

            loan = await on_chain("APPROVED")
            events = [t["event"] for t in loan["transactions"]]
            # the committee's own event names the loan too
            assert events == ["LoanCreated", "LoanApprovalExecuted", "LoanApproved"], events
            audit = (await client.get(f"/v1/audit/loans/{loan_id}", headers=headers)).json()
            assert audit["event_chain"]["logs_complete"] is True
            assert audit["mismatches"] == [], audit["mismatches"]


async def test_sme_kyc_verified__pre_assessment_notifies_the_platform_once(
    journey_settings: Settings, free_port
):
    """Signed `sme.kyc.verified` ⇒ pre-assessment ⇒ the SME platform is told credit is available."""
    from offchain.rails.simulator.app import create_app as simulator_app
    from offchain.rails.simulator.config import SimulatorConfig
    from offchain.rails.sme.events import encode_event, sign

    config = SimulatorConfig(paystack_secret_key=PAYSTACK_SECRET, sme_events_secret=SME_SECRET)
    with ServerThread(simulator_app(config), free_port()) as simulator:
        settings = journey_settings.model_copy(
            update={"rails": journey_settings.rails.model_copy(update={"simulator_url": simulator.url})}
        )
        # orchestration relays the outbox to the streams the underwriting consumer reads
        apps = [gateway_app(settings), underwriting_app(settings), orchestration_app(settings)]
        async with contextlib.AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://gateway")
            )
            sme = await stack.enter_async_context(httpx.AsyncClient(base_url=simulator.url))
            body = encode_event(
                "sme.kyc.verified",
                {"user_id": "bright-bakery-ltd", "kyc_status": "verified"},
                event_id=f"evt-{uuid.uuid4()}",
                created_at="2026-11-27T12:00:00Z",
            )

            def post(raw: bytes, signature: str):
                return client.post(
                    "/v1/events/sme",
                    content=raw,
                    headers={"content-type": "application/json", "x-sme-signature": signature},
                )

            tampered = await post(body.replace(b"bright", b"brighx"), sign(body, SME_SECRET))
            assert tampered.status_code == 401
            assert tampered.headers["content-type"] == "application/problem+json"
            first = await post(body, sign(body, SME_SECRET))
            assert first.status_code == 202, first.text
            again = await post(body, sign(body, SME_SECRET))
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
            unknown = encode_event(
                "sme.user.renamed", {}, event_id="evt-x", created_at="2026-11-27T12:00:00Z"
            )
            ignored = await post(unknown, sign(unknown, SME_SECRET))
            assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"

            async def notified(user: str = "bright-bakery-ltd"):
                listed = (await sme.get("/simulate/sme/notifications")).json()
                items = listed if isinstance(listed, list) else listed.get("notifications", [])
                return [n for n in items if user in str(n)]

            notes = await eventually_async(notified, within_s=30)
            # a later event on the same stream, for another SME, notified: a duplicate would be before it
            marker = encode_event(
                "sme.kyc.verified",
                {"user_id": "acme-trading-ltd", "kyc_status": "verified"},
                event_id=f"evt-{uuid.uuid4()}",
                created_at="2026-11-27T12:00:01Z",
            )
            assert (await post(marker, sign(marker, SME_SECRET))).status_code == 202
            await eventually_async(
                lambda: notified("acme-trading-ltd"), what="the marker SME notified", within_s=30
            )
            assert len(await notified()) == 1, notes
            assert "credit.available" in str(notes[0])
