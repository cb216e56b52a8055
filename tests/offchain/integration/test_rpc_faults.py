"""RPC faults (issue 16 item 4): the client, the sender and the indexer in front of a real Anvil
through a fault-injecting JSON-RPC proxy (tests/offchain/rpc_fault_proxy.py).

- the client fails over across CHAIN_RPC_URLS, waits out Retry-After, rejects a wrong chain;
- the sender, through timeouts, 429s, 5xx and dropped connections (some after the node executed
  the request), never double-sends and never skips a nonce, and finishes once faults stop;
- the indexer, through the same faults and a lagging head, never leaves a gap: its tables equal
  a fresh fault-free scan.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from indexer_support import Chain as IndexerChain
from indexer_support import assert_same_tables, index_once, module_chain, new_database
from rpc_fault_proxy import RpcFaultProxy
from test_sender import Chain, _intents, _submit_all
from test_sender import chain as chain

from offchain.chain.allowlist import Allowlist
from offchain.chain.indexer import ChainIndexer
from offchain.chain.jsonrpc import JsonRpc, RpcError, RpcUnavailable, hex_int
from offchain.chain.sender import SenderWorker
from offchain.chain.workload import active_loans, ref
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.problems import install_problem_handlers
from offchain.platform.settings import (
    ChainSettings,
    DatabaseSettings,
    IndexerSettings,
    SenderSettings,
    Settings,
)
from offchain.services.health.status import platform_health
from offchain.services.registry import SERVICES

MIXED = ["hang", "slow", "429", "500", "502", "503", "drop", "drop_after"]


@pytest.fixture
def proxies(anvil_url: str) -> Iterator[Callable[..., RpcFaultProxy]]:
    started: list[RpcFaultProxy] = []

    def make(upstream: str = anvil_url, **options: float) -> RpcFaultProxy:
        proxy = RpcFaultProxy(upstream, **options).start()  # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.mark.asyncio
async def test_failover__rotates_on_faults__waits_retry_after__rejects_a_wrong_chain(
    proxies: Callable[..., RpcFaultProxy], anvil_url: str
) -> None:
    a, b, wrong = proxies(), proxies(), proxies()
    wrong.chain_id = 1  # mainnet's id in front of Anvil's 31337
    truth = hex_int(await JsonRpc(anvil_url).call("eth_blockNumber"))

    rpc = JsonRpc([a.url, wrong.url, b.url], timeout_s=1.0, cooldown_s=0.5)
    try:
        assert hex_int(await rpc.call("eth_blockNumber")) >= truth  # a answers; its id is the reference
        # a refuses in every way in turn; each time b answers within the same call, after the
        # second URL was found on another chain (mainnet's id) and rejected for good
        for fault in ["502", "429", "drop", "hang", "503"]:
            a.inject(fault)
            rpc._active = 0  # back to a, as if it had recovered
            rpc.endpoints[0].resting_until = 0.0
            assert hex_int(await rpc.call("eth_blockNumber")) >= truth
            assert rpc.url == b.url, fault
        assert rpc.endpoints[1].rejected == "chain id 1, expected 31337"
        assert a.faults_served.total() == 5
        assert wrong.forwarded["eth_blockNumber"] == 0  # never asked after the chain check
        # both down: RpcUnavailable (a transport error: HTTP answers 503 + Retry-After)
        a.always = b.always = "502"
        with pytest.raises(RpcUnavailable):
            await rpc.call("eth_blockNumber")
        # faults stop: answers resume (after the short rest)
        a.heal()
        b.heal()
        await asyncio.sleep(0.6)
        assert hex_int(await rpc.call("eth_blockNumber")) >= truth
    finally:
        await rpc.aclose()

    # a lone endpoint is checked only when the caller names the chain
    checked = JsonRpc(wrong.url, expected_chain_id=31337)
    with pytest.raises(RpcUnavailable, match="chain id 1, expected 31337"):
        await checked.call("eth_blockNumber")
    await checked.aclose()

    # a lone endpoint's 429 is waited out for its Retry-After, then asked again
    lone = proxies(retry_after=1)
    lone.inject("429")
    single = JsonRpc(lone.url)
    began = time.monotonic()
    assert hex_int(await single.call("eth_blockNumber")) >= truth
    assert 0.9 <= time.monotonic() - began < 5
    assert (lone.faults_served["429"], lone.forwarded["eth_blockNumber"]) == (1, 1)
    await single.aclose()


@pytest.mark.asyncio
async def test_sender_through_faults__no_double_send__no_nonce_gap__then_resumes(
    db: Database, chain: Chain, proxies: Callable[..., RpcFaultProxy]
) -> None:
    proxy = proxies(hang_s=1.5)
    rnd = random.Random(16)
    loans = [keccak(text=f"loan:faults:{uuid.uuid4().hex}") for _ in range(12)]
    calls = [(f"create_loan:0x{loan.hex()}", chain.create_loan_data(loan)) for loan in loans]
    nonce_before = chain.sender_nonce()
    await _submit_all(db, chain.book_address, calls)

    rpc = JsonRpc(proxy.url, timeout_s=1.0)
    worker = SenderWorker(
        db=db,
        rpc=rpc,
        private_key=dev_roles().sender.private_key,
        settings=SenderSettings(idle_poll_s=0.02, rebroadcast_after_s=0.5, batch_size=2),
        allowlist=Allowlist.of(chain.deployment),
    )
    # every kind of fault, executed-but-unanswered ones included, twice over in the first ~50
    # requests, a good request before each (a failed round backs off, doubling from 0.5 s);
    # the first request passes: drain() reads the chain id before its retry loop
    faults = ["drop_after", "slow", "429", "502", "drop", "hang", "503", "500"]
    for fault in [*faults, *rnd.sample(faults, len(faults))]:
        proxy.inject("none", fault)
    began = time.monotonic()
    try:
        await worker.drain(within_s=90)
    finally:
        await rpc.aclose()
    print(f"sender drained through {proxy.faults_served.total()} faults in {time.monotonic() - began:.1f}s")

    assert proxy.faults_served.total() >= 6, proxy.faults_served
    intents = await _intents(db, [key for key, _ in calls])
    assert {i.status for i in intents.values()} == {"confirmed"}
    # twelve intents, twelve nonces used, none skipped, none used twice
    assert chain.sender_nonce() == nonce_before + 12
    assert len({i.tx_hash for i in intents.values()}) == 12
    sent_nonces = {TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["nonce"] for raw in proxy.raw_sent}
    assert sent_nonces == set(range(nonce_before, nonce_before + 12))
    assert all(chain.book.functions.loan_state(loan).call() == 1 for loan in loans)


@pytest.fixture(scope="module")
def indexer_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexerChain]:
    yield from module_chain(tmp_path_factory)


@pytest.mark.asyncio
async def test_indexer_through_faults_and_a_lagging_head__no_gap__equals_a_fresh_scan(
    indexer_chain: IndexerChain, make_database: Callable[[], str], proxies: Callable[..., RpcFaultProxy]
) -> None:
    w = indexer_chain.workload
    loans = active_loans(w, 6)
    proxy = proxies(indexer_chain.url, hang_s=1.5)
    url = new_database(make_database)
    db = Database.from_settings(DatabaseSettings(url=url), application_name="caas-indexer-faults")
    rpc = JsonRpc(proxy.url, timeout_s=1.0)
    indexer = ChainIndexer(
        db=db,
        rpc=rpc,
        deployment=indexer_chain.deployment,
        settings=IndexerSettings(initial_block_range=2, max_block_range=4),
    )
    rnd = random.Random(1616)
    failures = 0
    try:
        for round_ in range(8):
            raws = [w.repay(loans[n % 6], 100 + n, ref(f"faults:{round_}:{n}")) for n in range(10)]
            w.send_in_blocks(raws, per_block=5)
            proxy.lag_blocks = rnd.choice([0, 0, 3, 50])  # a node behind, even behind the checkpoint
            proxy.inject(*[rnd.choice(MIXED) if rnd.random() < 0.3 else "none" for _ in range(12)])
            try:
                await indexer.catch_up()
            except RpcError:
                failures += 1
        proxy.heal()
        await indexer.catch_up()
    finally:
        await rpc.aclose()
        await db.dispose()
    assert proxy.faults_served.total() >= 10 and failures >= 1, (proxy.faults_served, failures)

    fresh = new_database(make_database)
    await index_once(fresh, indexer_chain)
    tables = assert_same_tables(url, fresh)
    repaid = [row for row in tables["caas_chain_events"] if row[8] == "RepaymentRecorded"]
    assert len(repaid) == 80


@pytest.mark.asyncio
async def test_health__degraded_while_one_rpc_url_is_down__healthy_again_after(
    settings: Settings, proxies: Callable[..., RpcFaultProxy]
) -> None:
    a, b = proxies(), proxies()
    # a loaded machine may answer slowly: only the endpoints may decide here
    base = settings.model_copy(
        update={
            "chain": ChainSettings(rpc_urls=[a.url, b.url]),
            "services": settings.services.model_copy(update={"slow_probe_ms": 30_000}),
        }
    )

    async def blockchain() -> dict[str, Any]:
        resources = AppResources.open(SERVICES["health"], base)
        try:
            return (await platform_health(resources))["dependencies"]["blockchain"]
        finally:
            await resources.close()

    assert (await blockchain())["status"] == "healthy"
    b.always = "502"  # the second endpoint down: services use the first, health says so
    second_down = await blockchain()
    assert second_down["status"] == "degraded"
    assert second_down["detail"] == f"1/2 RPC endpoints up; down: {b.url} (HTTPStatusError)"
    b.heal()
    a.always = "drop"  # the primary down: the services fail over to the second
    primary_down = await blockchain()
    assert primary_down["status"] == "degraded", primary_down
    assert primary_down["detail"].startswith("1/2 RPC endpoints up; down: " + a.url)
    b.always = "drop"  # both down: down
    assert (await blockchain())["status"] == "down"
    a.heal()
    b.heal()
    assert (await blockchain())["status"] == "healthy"


def test_a_route_reading_the_chain__503_with_retry_after_while_no_node_answers(
    proxies: Callable[..., RpcFaultProxy],
) -> None:
    proxy = proxies(hang_s=2.0)
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/head")
    async def head() -> dict[str, int]:
        rpc = JsonRpc(proxy.url, timeout_s=1.0)
        try:
            return {"head": hex_int(await rpc.call("eth_blockNumber"))}
        finally:
            await rpc.aclose()

    client = TestClient(app, raise_server_exceptions=False)
    for fault in ["502", "drop", "hang", "429"]:
        proxy.always = fault
        proxy.retry_after = 30  # longer than the client waits
        answer = client.get("/head")
        assert answer.status_code == 503, (fault, answer.text)
        assert answer.headers["retry-after"] == "5"
        assert "chain" in answer.json()["detail"]
    proxy.heal()
    assert client.get("/head").status_code == 200
