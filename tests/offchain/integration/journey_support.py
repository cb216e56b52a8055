"""A loan taken to on-chain APPROVED through the partner API alone, for tests that start from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from eventually import eventually_async
from simulator_support import PAYSTACK_SECRET, SME_SECRET

from offchain.chain.contracts import sign_approval
from offchain.chain.deployment import deploy
from offchain.domain.offers.agreement import nuban_check_digit
from offchain.persistence.migrate import upgrade
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import Settings


def valid_nuban(bank_code: str = "058", serial: str = "012345678") -> str:
    return serial + str(nuban_check_digit(bank_code, serial))


def chain_settings(
    *, database_url: str, redis_url: str, stream_prefix: str, anvil_url: str, out_dir: Path
) -> Settings:
    """A migrated database and freshly deployed contracts on `anvil_url`."""
    upgrade(database_url)
    roles = dev_roles()
    deploy(
        rpc_url=anvil_url,
        deployer_key=roles.deployer.private_key,
        signers=[s.address for s in roles.signers],
        threshold=roles.threshold,
        backend_address=roles.sender.address,
        network="journey",
        out_dir=out_dir,
    )
    return Settings(
        env="test",
        database={"url": database_url},
        redis={"url": redis_url},
        events={"stream_prefix": stream_prefix, "retry_idle_ms": 200},
        chain={
            "rpc_url": anvil_url,
            "deployment_file": str(out_dir / "journey.json"),
            "sender_private_key": roles.sender.private_key,
        },
        rails={"paystack_secret_key": PAYSTACK_SECRET, "sme_events_secret": SME_SECRET},
    )


async def loan_state(client: httpx.AsyncClient, headers: dict[str, str], loan_id: str, state: str, **kw: Any):
    async def check():  # type: ignore[no-untyped-def]
        loan = (await client.get(f"/v1/loans/{loan_id}", headers=headers)).json()
        return loan if loan.get("chain_state") == state else None

    return await eventually_async(check, **kw)


async def pending_loan(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    external_id: str,
    sme_user_id: str = "acme-trading-ltd",
    amount: int = 500_000_00,
    tenor_months: int = 6,
    account_serial: str = "012345678",
    payout: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Application -> offer -> accept -> PENDING on chain."""
    submitted = await client.post(
        "/v1/applications",
        json={
            "external_id": external_id,
            "borrower": {"sme_user_id": sme_user_id},
            "amount": {"value": amount, "currency": "NGN"},
            "tenor_months": tenor_months,
            "purpose": "inventory",
        },
        headers={**headers, "Idempotency-Key": f"{external_id}-app"},
    )
    assert submitted.status_code == 201, submitted.text
    application_id = submitted.json()["id"]

    async def decided():  # type: ignore[no-untyped-def]
        body = (await client.get(f"/v1/applications/{application_id}", headers=headers)).json()
        return body if body["status"] not in ("submitted", "underwriting") else None

    application = await eventually_async(decided)
    assert application["status"] == "offered", application
    offer = application["offers"][0]
    accepted = await client.post(
        f"/v1/offers/{offer['id']}/accept",
        json={
            "payout": payout
            or {
                "method": "bank_transfer",
                "account_number": valid_nuban(serial=account_serial),
                "bank_code": "058",
            }
        },
        headers={**headers, "Idempotency-Key": f"{external_id}-accept"},
    )
    assert accepted.status_code == 201, accepted.text
    loan_id = accepted.json()["loan_id"]
    loan = await loan_state(client, headers, loan_id, "PENDING")
    return {"loan_id": loan_id, "offer": offer, "loan": loan}


async def approve(client: httpx.AsyncClient, headers: dict[str, str], loan_id: str) -> dict[str, Any]:
    """The committee's EIP-712 signatures, up to the threshold -> APPROVED on chain."""
    request = (await client.get(f"/v1/loans/{loan_id}/approval-request", headers=headers)).json()
    for key in [s.private_key for s in dev_roles().signers[: request["required"]]]:
        signer, signature = sign_approval(request["typed_data"], key)
        added = await client.post(
            f"/v1/loans/{loan_id}/approvals",
            json={"signer": signer, "signature": "0x" + signature.hex()},
            headers=headers,
        )
        assert added.status_code == 200, added.text
    return await loan_state(client, headers, loan_id, "APPROVED")


async def approved_loan(
    client: httpx.AsyncClient, headers: dict[str, str], *, external_id: str, **kwargs: Any
) -> dict[str, Any]:
    """Application -> offer -> accept -> two EIP-712 signatures -> APPROVED on chain."""
    pending = await pending_loan(client, headers, external_id=external_id, **kwargs)
    loan = await approve(client, headers, pending["loan_id"])
    return {**pending, "loan": loan}
