"""Issue 14's attack on the sending key, against a real Anvil with the real contracts: a forged
`LoanBook.record_repayment(loan, 1000, keccak("attacker:x"))` through the tx-intents API, with
every identity there is, in-process with a caller that may not ask for it, and written straight
into the table. It never lands: the loan's outstanding and the ref stay as they were, and the
sending key's nonce never moves for it. Calls to another contract or another selector are
refused the same way."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_utils import keccak
from identities import DEV_JWT_SECRET, operator_headers, service_headers
from indexer_support import Chain, module_chain
from pydantic import SecretStr
from sqlalchemy import insert, select
from web3 import Web3

from offchain.chain.allowlist import CallNotAllowed
from offchain.chain.sender import submit
from offchain.chain.workload import active_loans
from offchain.persistence.models import TxIntent
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import Settings
from offchain.services.orchestration.app import create_app


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    yield from module_chain(tmp_path_factory)


def _outstanding(chain: Chain, loan: bytes) -> int:
    return int(chain.workload.call(chain.workload.book, "outstanding", loan), 16)


def _recorded(chain: Chain, ref: bytes) -> bool:
    return int(chain.workload.call(chain.workload.book, "is_payment_recorded", ref), 16) == 1


def _nonce(chain: Chain) -> int:
    return int(chain.workload.rpc.call("eth_getTransactionCount", dev_roles().sender.address, "latest"), 16)


@pytest.mark.asyncio
async def test_forged_repayment_never_lands(chain: Chain, settings: Settings, db: Database) -> None:
    [loan] = active_loans(chain.workload, 1)
    attacker_ref = keccak(text="attacker:x")
    forged = "0x" + chain.deployment.loan_book_contract.record_repayment(loan, 1000, attacker_ref).hex()
    book, committee = chain.deployment.loan_book_address, chain.deployment.committee_address
    outstanding, nonce = _outstanding(chain, loan), _nonce(chain)
    configured = settings.model_copy(
        update={
            "chain": settings.chain.model_copy(
                update={
                    "rpc_url": chain.url,
                    "deployment_file": chain.deployment_file,
                    "sender_private_key": SecretStr(dev_roles().sender.private_key),
                }
            ),
            "sender": settings.sender.model_copy(update={"idle_poll_s": 0.02}),
        }
    )
    partner = auth.issue_token(DEV_JWT_SECRET, partner_id=uuid.uuid4())
    other_contract = Web3.to_checksum_address("0x" + "77" * 20)
    governance = Web3().eth.contract(abi=chain.deployment.committee_abi)
    attempts: list[tuple[str, dict[str, str], dict[str, Any], int]] = [
        ("no identity", {}, {"to": book, "data": forged}, 401),
        ("a partner's token", {"Authorization": f"Bearer {partner}"}, {"to": book, "data": forged}, 401),
        ("an operator's token", operator_headers(), {"to": book, "data": forged}, 401),
        (
            "a forged service token",
            service_headers("repayment", "orchestration", key="x" * 40),
            {"to": book, "data": forged},
            401,
        ),
        (
            "repayment, for another service",
            service_headers("repayment", "ledger"),
            {"to": book, "data": forged},
            401,
        ),
        (
            "underwriting (no intents at all)",
            service_headers("underwriting", "orchestration"),
            {"to": book, "data": forged},
            403,
        ),
        (
            "gateway (not its function)",
            service_headers("gateway", "orchestration"),
            {"to": book, "data": forged},
            403,
        ),
        # the repayment service may record repayments: in-process, with the payment they record
        (
            "repayment, over HTTP",
            service_headers("repayment", "orchestration"),
            {"to": book, "data": forged},
            403,
        ),
        (
            "another contract",
            service_headers("gateway", "orchestration"),
            {"to": other_contract, "data": forged},
            403,
        ),
        (
            "a committee selector no one may ask for",
            service_headers("gateway", "orchestration"),
            {"to": committee, "data": governance.encode_abi("revoke", [loan])},
            403,
        ),
        (
            "value sent along",
            service_headers("gateway", "orchestration"),
            {"to": committee, "data": governance.encode_abi("revoke", [loan]), "value": 1},
            403,
        ),
    ]
    app = create_app(configured)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orchestration") as client,
    ):
        for name, headers, call, expected in attempts:
            body = {"idempotency_key": f"attack:{uuid.uuid4().hex}", **call}
            response = await client.post("/v1/tx-intents", json=body, headers=headers)
            assert response.status_code == expected, (name, response.status_code, response.text)
            assert response.headers["content-type"].startswith("application/problem+json"), name

        # in-process, by a service that may not ask for it: refused before anything is written
        for caller in ("underwriting", "gateway", "collections", "ledger", "unknown"):
            async with db.worker_session() as session:
                with pytest.raises(CallNotAllowed):
                    await submit(
                        session,
                        caller=caller,
                        deployment=chain.deployment,
                        idempotency_key=f"attack:{caller}:{uuid.uuid4().hex}",
                        to=book,
                        data=forged,
                    )
        # straight into the table (a path that skipped the check): the sender refuses to sign
        keys = [f"attack:row:{caller}:{uuid.uuid4().hex}" for caller in ("underwriting", "unknown")]
        async with db.worker_session() as session:
            for key in keys:
                caller = key.split(":")[2]
                await session.execute(
                    insert(TxIntent).values(
                        idempotency_key=key, to_address=book.lower(), data=forged, caller=caller
                    )
                )

        async def decided() -> list[TxIntent]:
            async with db.worker_session() as session:
                found = (
                    await session.execute(select(TxIntent).where(TxIntent.idempotency_key.in_(keys)))
                ).scalars()
                return [row for row in found if row.status != "pending"]

        deadline = time.monotonic() + 30
        rows = await decided()
        while len(rows) < len(keys) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            rows = await decided()
    assert len(rows) == len(keys), "the sender never decided the forged rows"
    for row in rows:
        assert row.status == "failed" and row.nonce is None and row.tx_hash is None
        assert row.revert_reason and row.revert_reason.startswith("refused by the allowlist")
    # nothing recorded through the API or in-process: only the two rows the test wrote itself
    async with db.worker_session() as session:
        assert len((await session.execute(select(TxIntent.id).where(TxIntent.data == forged))).all()) == len(
            keys
        )
    # and on chain: not a wei moved, the ref unused, no transaction signed for any of it
    assert _outstanding(chain, loan) == outstanding
    assert not _recorded(chain, attacker_ref)
    assert _nonce(chain) == nonce
