"""The transaction sender against real PostgreSQL and a real Anvil running the real contracts.

Dev accounts: #0 deploys, #1 is the backend's sending key (ORIGINATOR + SERVICER), #2-#4 are the
committee (threshold 2). Every transaction of account #1 here goes through the sender.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_utils import keccak
from eventually import eventually_async
from fastapi.testclient import TestClient
from identities import service_headers
from sqlalchemy import select
from web3 import Web3

from offchain.chain.allowlist import Allowlist
from offchain.chain.contracts import Deployment, approval_request, sign_approval, sort_signatures
from offchain.chain.deployment import deploy
from offchain.chain.jsonrpc import JsonRpc, hex_int
from offchain.chain.sender import (
    KILL_SWITCH_ENV,
    IdempotencyConflict,
    SenderWorker,
    get_intent,
    submit,
)
from offchain.domain.approvals import ApprovalTerms
from offchain.persistence.models import OutboxMessage, TxIntent
from offchain.platform.db import Database
from offchain.platform.devkeys import DevRoles, dev_roles
from offchain.platform.settings import ChainSettings, SenderSettings, Settings
from offchain.services.orchestration.app import create_app

REPO = Path(__file__).resolve().parents[3]
DAY = 86_400
OVERPAY = "loan_book: amount exceeds outstanding"


@dataclass
class Chain:
    url: str
    w3: Web3
    deployment: Deployment
    book: Any
    committee: Any
    roles: DevRoles

    @property
    def book_address(self) -> str:
        return self.deployment.loan_book_address

    def sender_nonce(self) -> int:
        return self.w3.eth.get_transaction_count(self.roles.sender.address, "latest")

    def create_loan_data(self, loan_id: bytes, principal: int = 1_000_000_00) -> str:
        terms = (
            keccak(text=f"borrower:{loan_id.hex()}"),
            keccak(text="partner:sender-tests"),
            566,
            principal,
            principal * 112 // 100,
            4,
            30 * DAY,
            3 * DAY,
            5_000_00,
            keccak(text=f"payout:{loan_id.hex()}"),
            keccak(text=f"agreement:{loan_id.hex()}"),
        )
        return self.book.encode_abi("create_loan", [loan_id, terms])

    def repayment_data(self, loan_id: bytes, amount: int, ref: bytes) -> str:
        return self.book.encode_abi("record_repayment", [loan_id, amount, ref])

    def repayment_logs(self, ref: bytes) -> list[Any]:
        logs = self.book.events.RepaymentRecorded().get_logs(
            from_block=0, argument_filters={"payment_ref": ref}
        )
        return list(logs)


@pytest.fixture(scope="module")
def chain(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    roles = dev_roles()
    out = tmp_path_factory.mktemp("sender-deployment")
    deploy(
        rpc_url=anvil_url,
        deployer_key=roles.deployer.private_key,
        signers=[s.address for s in roles.signers],
        threshold=roles.threshold,
        backend_address=roles.sender.address,
        network="sender-test",
        out_dir=out,
    )
    deployment = Deployment.load(out / "sender-test.json")
    w3 = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30}))
    _CHAIN["deployment"] = deployment
    _CHAIN["file"] = out / "sender-test.json"
    return Chain(anvil_url, w3, deployment, deployment.loan_book(w3), deployment.committee(w3), roles)


# the module's deployment, for helpers that are not fixtures
_CHAIN: dict[str, Any] = {}


@pytest_asyncio.fixture
async def rpc(chain: Chain) -> AsyncIterator[JsonRpc]:
    client = JsonRpc(chain.url)
    yield client
    await client.aclose()


@pytest.fixture
def worker(db: Database, rpc: JsonRpc, chain: Chain) -> Callable[..., SenderWorker]:
    def make(**overrides: Any) -> SenderWorker:
        settings = SenderSettings(**{"idle_poll_s": 0.02, **overrides})
        return SenderWorker(
            db=db,
            rpc=rpc,
            private_key=dev_roles().sender.private_key,
            settings=settings,
            allowlist=Allowlist.of(chain.deployment),
        )

    return make


def _tag() -> str:
    return uuid.uuid4().hex[:12]


# which service asks for each call here, as the real callers do (offchain.chain.allowlist)
CALLERS = {"create_loan": "gateway", "record_disbursement": "disbursement", "record_repayment": "repayment"}


def _caller(key: str) -> str:
    return CALLERS[key.split(":", 1)[0]]


async def _submit_all(db: Database, to: str, calls: list[tuple[str, str]]) -> list[TxIntent]:
    deployment = _CHAIN["deployment"]
    async with db.worker_session() as session:
        return [
            await submit(
                session, caller=_caller(key), deployment=deployment, idempotency_key=key, to=to, data=data
            )
            for key, data in calls
        ]


async def _intents(db: Database, keys: list[str]) -> dict[str, TxIntent]:
    async with db.worker_session() as session:
        found = {}
        for key in keys:
            intent = await get_intent(session, key)
            assert intent is not None, key
            found[key] = intent
        return found


async def _outbox(db: Database, key: str) -> list[OutboxMessage]:
    async with db.worker_session() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.key == key).order_by(OutboxMessage.id)
        )
        return list(rows)


async def _active_loan(db: Database, chain: Chain, drain: Callable[[], Any]) -> bytes:
    """create_loan through the sender, two committee approvals on chain, disbursement through it."""
    loan_id = keccak(text=f"loan:{_tag()}")
    await _submit_all(
        db, chain.book_address, [(f"create_loan:0x{loan_id.hex()}", chain.create_loan_data(loan_id))]
    )
    await drain()
    for signer in chain.roles.signers[: chain.roles.threshold]:
        tx = chain.committee.functions.approve(loan_id).transact({"from": signer.address})
        assert chain.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    _, terms = ApprovalTerms.from_chain(chain.book.functions.approval_terms(loan_id).call())
    principal, payout_ref = terms.principal, terms.payout_ref
    data = chain.book.encode_abi(
        "record_disbursement", [loan_id, principal, payout_ref, keccak(text="rail:T1")]
    )
    await _submit_all(db, chain.book_address, [(f"record_disbursement:0x{loan_id.hex()}", data)])
    await drain()
    assert chain.book.functions.loan_state(loan_id).call() == 3  # ACTIVE
    return loan_id


def _run_sender_process(database_url: str, chain: Chain, *, kill_at: str | None) -> int:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SENDER", "CHAIN", "DATABASE", KILL_SWITCH_ENV))
    }
    env.update(
        {
            "CAAS_ENV": "test",
            "DATABASE_URL": database_url,
            "CHAIN_RPC_URL": chain.url,
            "DEPLOYMENT_FILE": str(_CHAIN["file"]),
            "SENDER_PRIVATE_KEY": chain.roles.sender.private_key,
            "SENDER__IDLE_POLL_S": "0.02",
            "LOG_LEVEL": "WARNING",
        }
    )
    if kill_at:
        env[KILL_SWITCH_ENV] = kill_at
    process = subprocess.run(
        [sys.executable, "-m", "offchain.chain.sender", "--until-idle", "--timeout", "60"],
        cwd=REPO,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode in (0, -signal.SIGKILL), process.stderr[-2000:] + process.stdout[-2000:]
    return process.returncode


# --- 1. idempotency ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_same_key__one_intent_one_transaction(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker]
) -> None:
    sequential, concurrent = keccak(text=f"loan:{_tag()}"), keccak(text=f"loan:{_tag()}")
    key_a, key_b = f"create_loan:0x{sequential.hex()}", f"create_loan:0x{concurrent.hex()}"
    data_a, data_b = chain.create_loan_data(sequential), chain.create_loan_data(concurrent)

    first = (await _submit_all(db, chain.book_address, [(key_a, data_a)]))[0]
    again = (await _submit_all(db, chain.book_address, [(key_a, data_a)]))[0]
    assert again.id == first.id

    async def one_submitter() -> uuid.UUID:
        async with db.worker_session() as session:
            return (
                await submit(
                    session,
                    caller="gateway",
                    deployment=chain.deployment,
                    idempotency_key=key_b,
                    to=chain.book_address,
                    data=data_b,
                )
            ).id

    ids = await asyncio.gather(*(one_submitter() for _ in range(10)))
    assert len(set(ids)) == 1

    with pytest.raises(IdempotencyConflict):
        await _submit_all(db, chain.book_address, [(key_a, data_b)])

    nonce_before = chain.sender_nonce()
    await worker().drain(within_s=30)
    intents = await _intents(db, [key_a, key_b])
    assert {i.status for i in intents.values()} == {"confirmed"}
    assert chain.sender_nonce() == nonce_before + 2  # two keys, two transactions
    assert chain.book.functions.loan_state(sequential).call() == 1
    assert chain.book.functions.loan_state(concurrent).call() == 1

    # the key keeps answering with the same, now confirmed, intent; nothing more is sent
    replay = (await _submit_all(db, chain.book_address, [(key_b, data_b)]))[0]
    assert (replay.id, replay.status) == (intents[key_b].id, "confirmed")
    await worker().drain(within_s=10)
    assert chain.sender_nonce() == nonce_before + 2
    [event] = await _outbox(db, key_b)
    assert event.topic == "tx.confirmed"
    assert event.payload["tx_hash"] == intents[key_b].tx_hash
    assert event.payload["block_number"] == intents[key_b].block_number


# --- 2. reverts --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reverting_calls__reason_stored__nonces_stay_gap_free(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker]
) -> None:
    async def drain() -> None:
        await worker().drain(within_s=30)

    loan = await _active_loan(db, chain, drain)
    outstanding = chain.book.functions.outstanding(loan).call()
    refs = [keccak(text=f"paystack:T-{_tag()}") for _ in range(3)]
    # an overpayment between two good repayments, all taken in one round
    calls = [
        (f"record_repayment:0x{refs[0].hex()}", chain.repayment_data(loan, 1_000, refs[0])),
        (f"record_repayment:0x{refs[1].hex()}", chain.repayment_data(loan, outstanding + 1, refs[1])),
        (f"record_repayment:0x{refs[2].hex()}", chain.repayment_data(loan, 2_000, refs[2])),
    ]
    keys = [key for key, _ in calls]
    await _submit_all(db, chain.book_address, calls)
    await drain()
    good1, over, good2 = (await _intents(db, keys)).values()
    assert (good1.status, good2.status) == ("confirmed", "confirmed")
    assert over.status == "failed"
    assert over.revert_reason == OVERPAY
    assert over.nonce is None and over.tx_hash is None  # it never consumed a nonce
    assert good2.nonce == good1.nonce + 1
    [failed_event] = await _outbox(db, over.idempotency_key)
    assert (failed_event.topic, failed_event.payload["revert_reason"]) == ("tx.failed", OVERPAY)

    # Two repayments that each fit alone but not together both pass estimation in one round:
    # the second reverts on chain, consuming its nonce, and its reason is replayed from the block.
    remaining = chain.book.functions.outstanding(loan).call()
    part = remaining * 6 // 10
    refs = [keccak(text=f"paystack:T-{_tag()}") for _ in range(3)]
    calls = [(f"record_repayment:0x{r.hex()}", chain.repayment_data(loan, part, r)) for r in refs[:2]]
    calls.append((f"record_repayment:0x{refs[2].hex()}", chain.repayment_data(loan, 1, refs[2])))
    await _submit_all(db, chain.book_address, calls)
    await drain()
    paid, reverted, later = (await _intents(db, [key for key, _ in calls])).values()
    assert (paid.status, reverted.status, later.status) == ("confirmed", "reverted", "confirmed")
    assert reverted.revert_reason == OVERPAY
    assert reverted.block_number is not None
    receipt = chain.w3.eth.get_transaction_receipt(reverted.tx_hash)
    assert receipt["status"] == 0
    [reverted_event] = await _outbox(db, reverted.idempotency_key)
    assert reverted_event.topic == "tx.reverted"
    assert reverted_event.payload["revert_reason"] == OVERPAY
    assert reverted_event.payload["tx_hash"] == reverted.tx_hash

    nonces = [good1.nonce, good2.nonce, paid.nonce, reverted.nonce, later.nonce]
    assert nonces == list(range(good1.nonce, good1.nonce + 5))
    assert chain.sender_nonce() == later.nonce + 1
    assert chain.book.functions.is_payment_recorded(refs[2]).call()


# --- 3. kill -9 between broadcast and commit ---------------------------------------------------


@pytest.mark.asyncio
async def test_kill_between_broadcast_and_commit__exactly_one_effect(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker], database_url: str
) -> None:
    loan = await _active_loan(db, chain, lambda: worker().drain(within_s=30))
    ref = keccak(text=f"paystack:T-{_tag()}")
    key = f"record_repayment:0x{ref.hex()}"
    await _submit_all(db, chain.book_address, [(key, chain.repayment_data(loan, 5_000, ref))])

    assert _run_sender_process(database_url, chain, kill_at="after_broadcast") == -signal.SIGKILL
    crashed = (await _intents(db, [key]))[key]
    assert crashed.status == "signed"  # the broadcast was never recorded ...
    assert chain.book.functions.is_payment_recorded(ref).call()  # ... but it happened
    nonce_after_crash = chain.sender_nonce()
    assert nonce_after_crash == crashed.nonce + 1

    assert _run_sender_process(database_url, chain, kill_at=None) == 0
    intent = (await _intents(db, [key]))[key]
    assert intent.status == "confirmed"
    assert intent.tx_hash == crashed.tx_hash  # the same signed bytes, not a second transaction
    assert intent.previous_tx_hashes == []
    assert len(chain.repayment_logs(ref)) == 1
    assert chain.sender_nonce() == nonce_after_crash  # no second tx at another nonce
    [event] = await _outbox(db, key)
    assert event.topic == "tx.confirmed"


# --- 4. fee bump of a stuck transaction --------------------------------------------------------


async def _wait_for(check: Callable[[], Any], *, within_s: float = 20.0) -> Any:
    return await eventually_async(check, within_s=within_s, every=0.05)


@pytest.mark.asyncio
async def test_stuck_transaction__fee_bumped__one_confirmed_with_winning_hash(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker], rpc: JsonRpc
) -> None:
    loan_id = keccak(text=f"loan:{_tag()}")
    key = f"create_loan:0x{loan_id.hex()}"
    nonce_before = chain.sender_nonce()
    stop = asyncio.Event()
    await rpc.call("evm_setAutomine", False)
    try:
        await _submit_all(db, chain.book_address, [(key, chain.create_loan_data(loan_id))])
        running = asyncio.create_task(worker(bump_after_s=0.5).run(stop))

        async def state() -> TxIntent:
            return (await _intents(db, [key]))[key]

        first = await _wait_for(lambda: _status_is(state, "broadcast"))
        bumped = await _wait_for(lambda: _bumped(state))
        await rpc.call("evm_mine")
        final = await _wait_for(lambda: _status_is(state, "confirmed"))
        stop.set()
        await asyncio.wait_for(running, 10)
    finally:
        stop.set()
        await rpc.call("evm_setAutomine", True)

    assert bumped.nonce == first.nonce == nonce_before
    assert bumped.max_fee_per_gas * 10_000 >= first.max_fee_per_gas * 11_250
    assert bumped.max_priority_fee_per_gas * 10_000 >= first.max_priority_fee_per_gas * 11_250
    assert first.tx_hash in final.previous_tx_hashes
    receipt = chain.w3.eth.get_transaction_receipt(final.tx_hash)
    assert receipt["status"] == 1 and receipt["blockNumber"] == final.block_number
    for loser in final.previous_tx_hashes:  # replaced: never mined
        assert await rpc.call("eth_getTransactionReceipt", loser) is None
    mined = await rpc.call("eth_getTransactionByHash", final.tx_hash)
    assert hex_int(mined["maxFeePerGas"]) >= first.max_fee_per_gas * 11_250 // 10_000
    assert chain.sender_nonce() == nonce_before + 1
    assert chain.book.functions.loan_state(loan_id).call() == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("rebroadcast_after_s", "blocks_mined"),
    [(1.0, 0), (3_600.0, 2)],
    ids=["after rebroadcast_after_s", "two blocks later"],
)
async def test_broadcast_the_node_lost__replaced_within_seconds__not_after_the_bump_delay(
    db: Database,
    chain: Chain,
    worker: Callable[..., SenderWorker],
    rpc: JsonRpc,
    rebroadcast_after_s: float,
    blocks_mined: int,
) -> None:
    # The node drops our broadcast transaction (a restarted node's pool, or Anvil's automine
    # parking one behind a nonce gap that is not there): its pending count never reaches the
    # nonce. The worker re-signs it at that nonce after rebroadcast_after_s, or once two blocks
    # have been mined since it was sent, not after bump_after_s.
    loan_id = keccak(text=f"loan:{_tag()}")
    key = f"create_loan:0x{loan_id.hex()}"
    nonce_before = chain.sender_nonce()
    stop = asyncio.Event()
    await rpc.call("evm_setAutomine", False)
    try:
        await _submit_all(db, chain.book_address, [(key, chain.create_loan_data(loan_id))])
        running = asyncio.create_task(
            worker(bump_after_s=3_600, rebroadcast_after_s=rebroadcast_after_s).run(stop)
        )

        async def state() -> TxIntent:
            return (await _intents(db, [key]))[key]

        first = await _wait_for(lambda: _status_is(state, "broadcast"))
        await rpc.call("anvil_dropTransaction", first.tx_hash)
        for _ in range(blocks_mined):
            await rpc.call("evm_mine")
        await rpc.call("evm_setAutomine", True)
        started = time.monotonic()
        final = await _wait_for(lambda: _status_is(state, "confirmed"))
        waited = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(running, 10)
    finally:
        stop.set()
        await rpc.call("evm_setAutomine", True)

    assert waited < 10
    assert final.nonce == first.nonce == nonce_before
    assert final.fee_bumps == 1 and final.previous_tx_hashes == [first.tx_hash]
    assert await rpc.call("eth_getTransactionReceipt", first.tx_hash) is None
    assert chain.sender_nonce() == nonce_before + 1
    assert chain.book.functions.loan_state(loan_id).call() == 1


async def _status_is(state: Callable[[], Any], status: str) -> TxIntent | None:
    intent = await state()
    return intent if intent.status == status else None


async def _bumped(state: Callable[[], Any]) -> TxIntent | None:
    intent = await state()
    return intent if intent.fee_bumps >= 1 and intent.status == "broadcast" else None


# --- 5. signed but never broadcast -------------------------------------------------------------


@pytest.mark.asyncio
async def test_restart__rebroadcasts_signed_but_unsent(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker], database_url: str
) -> None:
    loan_ids = [keccak(text=f"loan:{_tag()}") for _ in range(3)]
    calls = [(f"create_loan:0x{loan.hex()}", chain.create_loan_data(loan)) for loan in loan_ids]
    keys = [key for key, _ in calls]
    await _submit_all(db, chain.book_address, calls)
    nonce_before = chain.sender_nonce()

    assert _run_sender_process(database_url, chain, kill_at="before_broadcast") == -signal.SIGKILL
    signed = await _intents(db, keys)
    assert {i.status for i in signed.values()} == {"signed"}
    assert sorted(i.nonce for i in signed.values()) == [nonce_before, nonce_before + 1, nonce_before + 2]
    assert chain.sender_nonce() == nonce_before  # nothing reached the node

    await worker().drain(within_s=30)
    done = await _intents(db, keys)
    assert {i.status for i in done.values()} == {"confirmed"}
    assert {k: i.tx_hash for k, i in done.items()} == {k: i.tx_hash for k, i in signed.items()}
    assert chain.sender_nonce() == nonce_before + 3
    assert all(chain.book.functions.loan_state(loan).call() == 1 for loan in loan_ids)


# --- confirmations depth and a reorg ----------------------------------------------------------


@pytest.mark.asyncio
async def test_confirmations_depth__reorged_out_tx_sent_again__one_effect(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker], rpc: JsonRpc
) -> None:
    loan_id = keccak(text=f"loan:{_tag()}")
    key = f"create_loan:0x{loan_id.hex()}"
    nonce_before = chain.sender_nonce()
    snapshot = await rpc.call("evm_snapshot")
    await _submit_all(db, chain.book_address, [(key, chain.create_loan_data(loan_id))])

    async def state() -> TxIntent:
        return (await _intents(db, [key]))[key]

    stop = asyncio.Event()
    running = asyncio.create_task(worker(confirmations=3).run(stop))
    try:
        mined = await _wait_for(lambda: _status_is(state, "mined"))
        assert (await state()).confirmed_at is None  # one block deep is not final at depth 3
        # The block holding it disappears: the sender must notice at depth and send it again.
        assert await rpc.call("evm_revert", snapshot)

        async def confirmed_while_mining() -> TxIntent | None:
            await rpc.call("evm_mine")
            return await _status_is(state, "confirmed")

        final = await _wait_for(confirmed_while_mining, within_s=30)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)

    assert final.nonce == mined.nonce == nonce_before
    block = chain.w3.eth.get_block(final.block_number)
    assert "0x" + bytes(block["hash"]).hex() == final.block_hash
    assert chain.w3.eth.block_number - final.block_number + 1 >= 3
    assert chain.sender_nonce() == nonce_before + 1
    assert chain.book.functions.loan_state(loan_id).call() == 1
    [event] = await _outbox(db, key)
    assert event.topic == "tx.confirmed" and event.payload["block_hash"] == final.block_hash


# --- a burst bigger than a block ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_burst_beyond_one_block__all_confirmed_without_fee_bumps(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker]
) -> None:
    # ~400 create_loans need ~80M gas; Anvil's automine mines one 30M block per arrival and leaves
    # the rest in its pool, so only a sender that keeps one block's worth in flight gets through
    # without waiting for the (here disabled) fee bump to nudge the node.
    loans = [keccak(text=f"loan:{_tag()}") for _ in range(400)]
    calls = [(f"create_loan:0x{loan.hex()}", chain.create_loan_data(loan)) for loan in loans]
    await _submit_all(db, chain.book_address, calls)
    nonce_before = chain.sender_nonce()

    await worker(bump_after_s=3_600).drain(within_s=60)

    done = await _intents(db, [key for key, _ in calls])
    assert {i.status for i in done.values()} == {"confirmed"}
    assert sum(i.fee_bumps for i in done.values()) == 0
    assert sorted(i.nonce for i in done.values()) == list(range(nonce_before, nonce_before + 400))
    assert len({i.block_number for i in done.values()}) > 1  # it really took several blocks
    assert chain.sender_nonce() == nonce_before + 400


# --- the service: API, background worker, metrics ----------------------------------------------


def test_orchestration_serves_intents_and_sends_them(settings: Settings, chain: Chain) -> None:
    configured = settings.model_copy(
        update={
            "chain": ChainSettings(
                rpc_url=chain.url,
                sender_private_key=chain.roles.sender.private_key,
                deployment_file=_CHAIN["file"],
            ),
            "sender": SenderSettings(idle_poll_s=0.02),
        }
    )
    # over HTTP only what the chain verifies itself: the committee's approve_with_signatures
    # (offchain.chain.allowlist); a loan is created with signatures of the dev committee
    loan_id = keccak(text=f"loan:{_tag()}")
    create = chain.create_loan_data(loan_id)
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_transaction(
            {"from": chain.roles.sender.address, "to": chain.book_address, "data": create}
        )
    )
    deadline_at = chain.w3.eth.get_block("latest")["timestamp"] + 3600
    typed = approval_request(chain.w3, chain.deployment, loan_id, deadline_at)
    signatures = sort_signatures(
        [sign_approval(typed, s.private_key) for s in chain.roles.signers[: chain.roles.threshold]]
    )
    body = {
        "idempotency_key": f"approve_with_signatures:0x{loan_id.hex()}:0",
        "to": chain.deployment.committee_address,
        "data": chain.committee.encode_abi("approve_with_signatures", [loan_id, deadline_at, signatures]),
    }
    with TestClient(create_app(configured), headers=service_headers("gateway", "orchestration")) as client:
        created = client.post("/v1/tx-intents", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["caller"] == "gateway"
        assert client.post("/v1/tx-intents", json=body).status_code == 200
        conflict = client.post("/v1/tx-intents", json={**body, "data": create})
        assert conflict.status_code == 403  # create_loan is recorded in-process only
        later = chain.committee.encode_abi("approve_with_signatures", [loan_id, deadline_at + 1, signatures])
        other = client.post("/v1/tx-intents", json={**body, "data": later})
        assert other.status_code == 409
        assert other.headers["content-type"].startswith("application/problem+json")

        deadline = time.monotonic() + 20
        while True:
            intent = client.get(f"/v1/tx-intents/{body['idempotency_key']}").json()
            if intent["status"] == "confirmed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert intent["status"] == "confirmed"
        assert intent["id"] == created.json()["id"]
        assert intent["tx_hash"] and intent["block_number"]
        assert client.get("/v1/tx-intents/no-such-key").status_code == 404
        # another service does not read the gateway's intents
        theirs = client.get(
            f"/v1/tx-intents/{body['idempotency_key']}", headers=service_headers("repayment", "orchestration")
        )
        assert theirs.status_code == 404
        metrics = client.get("/metrics").text
    assert "caas_sender_confirmations_total" in metrics
    assert 'caas_sender_broadcasts_total{address="' in metrics
    assert chain.book.functions.loan_state(loan_id).call() == 2  # APPROVED


# --- 7. one trace from the request to the chain -------------------------------------------------


@pytest.mark.asyncio
async def test_trace__the_request_that_asked_for_a_call_sees_its_chain_outcome(
    db: Database, chain: Chain, worker: Callable[..., SenderWorker], settings
) -> None:
    from opentelemetry import propagate
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from offchain.platform.tracing import configure_tracing, tracer

    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    configure_tracing(settings.tracing, "test").add_span_processor(processor)
    try:
        trace_id = uuid.uuid4().hex
        caller = propagate.extract({"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"})
        loan_id = keccak(text=f"loan:{_tag()}")
        with tracer().start_as_current_span("partner request", context=caller):
            await _submit_all(
                db, chain.book_address, [(f"create_loan:0x{loan_id.hex()}", chain.create_loan_data(loan_id))]
            )
        await worker().drain(within_s=30)
        [final] = [s for s in exporter.get_finished_spans() if s.name == "caas.tx.final"]
        assert format(final.context.trace_id, "032x") == trace_id
        assert final.attributes["caas.tx.status"] == "confirmed"
        assert final.attributes["caas.tx.hash"].startswith("0x")
    finally:
        processor.shutdown()
