"""The chain indexer against a real Anvil and PostgreSQL: a live index of a generated workload
equals a fresh full scan row for row and the contract's own view of every loan; one writer per
chain; the orchestration service runs it; tampered events are caught by the event chain."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import pytest
from eventually import eventually_async
from fastapi.testclient import TestClient
from indexer_support import (
    Chain,
    assert_loans_match_chain,
    assert_same_tables,
    execute,
    fetch,
    index_once,
    indexer_for,
    module_chain,
    new_database,
)
from prometheus_client import CollectorRegistry

from offchain.chain.indexer import IndexerLockHeldError
from offchain.chain.verification import verify_loan
from offchain.chain.workload import LoanTerms, active_loans, lifecycle, new_loan_id, ref
from offchain.domain.loan_book import LoanState
from offchain.eventbus import StreamNames
from offchain.platform.settings import Settings
from offchain.services.orchestration.app import create_app


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    yield from module_chain(tmp_path_factory)


async def _wait_for_checkpoint(url: str, block: int, timeout_s: float = 20.0) -> None:
    await eventually_async(
        lambda: fetch(url, "SELECT block_number FROM caas_indexer_checkpoints"),
        what=f"the indexer's checkpoint at head {block}",
        within_s=timeout_s,
        every=0.05,
        accept=lambda rows: rows and rows[0][0] >= block,
    )


@pytest.mark.asyncio
async def test_live_index_of_a_workload_equals_a_fresh_scan(
    chain: Chain, make_database: Callable[[], str]
) -> None:
    live_url = new_database(make_database)
    # Tiny ranges and batches: the live indexer commits many small batches while the workload
    # runs, against the fresh scan's few large ones; both must end up with the same rows.
    indexer, db, rpc = indexer_for(
        live_url,
        chain,
        initial_block_range=2,
        max_block_range=6,
        target_logs_per_batch=12,
        poll_interval_s=0.02,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(indexer.run(stop))
    try:
        ids = await asyncio.to_thread(lifecycle, chain.workload, 30)
        await _wait_for_checkpoint(live_url, chain.workload.head())
    finally:
        stop.set()
        await running
        await rpc.aclose()
        await db.dispose()

    fresh_url = new_database(make_database)
    summary = await index_once(fresh_url, chain)
    assert summary.batches == 1  # the whole history in one range: a different batching

    tables = assert_same_tables(live_url, fresh_url)
    assert assert_loans_match_chain(live_url, chain) == len(ids) == 30
    states = {row[12] for row in tables["caas_loans"]}
    assert {s.value for s in LoanState} - states == {LoanState.NONE}, "the workload covers every state"
    assert {"LoanCreated", "RepaymentReversed", "LateFeeAssessed", "LoanWrittenOff", "EpochBumped"} <= {
        row[8] for row in tables["caas_chain_events"]
    }

    # one outbox message per event, under its stable id, and no other
    published = fetch(
        live_url,
        "SELECT payload->>'event_id', topic, payload->>'event' FROM caas_outbox WHERE topic LIKE 'chain.%%'",
    )
    expected = {
        (f"{row[0]}:{row[2]}:{row[5]}", f"chain.{row[8]}", row[8]) for row in tables["caas_chain_events"]
    }
    assert len(published) == len(expected) and set(published) == expected
    # in emission order, so consumers of one loan see its events in the order they happened
    in_order = fetch(
        live_url, "SELECT payload->>'event_id' FROM caas_outbox WHERE topic LIKE 'chain.%%' ORDER BY id"
    )
    assert [row[0] for row in in_order] == [f"{r[0]}:{r[2]}:{r[5]}" for r in tables["caas_chain_events"]]


@pytest.mark.asyncio
async def test_a_second_indexer_waits_for_or_refuses_the_lock(
    chain: Chain, make_database: Callable[[], str]
) -> None:
    url = new_database(make_database)
    first, db1, rpc1 = indexer_for(url, chain)
    refusing, db2, rpc2 = indexer_for(url, chain, wait_for_lock=False)
    waiting, db3, rpc3 = indexer_for(url, chain, lock_poll_s=0.05)
    try:
        async with first.lock():
            with pytest.raises(IndexerLockHeldError, match="another indexer already indexes chain 31337"):
                async with refusing.lock():
                    pass

            acquired = asyncio.Event()

            async def take() -> None:
                async with waiting.lock():
                    acquired.set()

            task = asyncio.create_task(take())
            await asyncio.sleep(0.3)
            assert not acquired.is_set()
        await asyncio.wait_for(task, timeout=5)
        assert acquired.is_set()
    finally:
        for rpc, db in ((rpc1, db1), (rpc2, db2), (rpc3, db3)):
            await rpc.aclose()
            await db.dispose()


def test_orchestration_service_runs_the_indexer(
    chain: Chain, make_database: Callable[[], str], settings: Settings
) -> None:
    url = new_database(make_database)
    configured = settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"url": url}),
            "chain": settings.chain.model_copy(
                update={"rpc_url": chain.url, "deployment_file": chain.deployment_file}
            ),
            "sender": settings.sender.model_copy(update={"enabled": False}),
            "indexer": settings.indexer.model_copy(update={"poll_interval_s": 0.05}),
        }
    )
    w = chain.workload
    loan_id = new_loan_id()
    with TestClient(create_app(configured)) as client:
        w.send([w.create_loan(LoanTerms(loan_id, 1_000_000, 1_100_000))])
        head = w.head()
        deadline = time.monotonic() + 20
        # the service's /metrics says when its indexer has caught up
        while f"caas_indexer_indexed_block {float(head)}" not in (metrics := client.get("/metrics").text):
            assert time.monotonic() < deadline, "the service's indexer did not catch up"
            time.sleep(0.05)
        # and its outbox relay carries the event to the bus, under the event's stable id
        stream = StreamNames(settings.events.stream_prefix).topic("chain.LoanCreated")
        redis = client.app.state.resources.redis  # type: ignore[attr-defined]
        while not (entries := client.portal.call(redis.xrange, stream)):
            assert time.monotonic() < deadline, "no chain.LoanCreated on the bus"
            time.sleep(0.05)
    payloads = [json.loads(fields["payload"]) for _, fields in entries]
    ours = [p for p in payloads if p["loan_id"] == "0x" + loan_id.hex()]
    assert len(ours) == 1 and ours[0]["event_id"].startswith(f"{chain.deployment.chain_id}:0x")
    assert ours[0]["args"]["principal"] == 1_000_000
    assert fetch(url, "SELECT block_number FROM caas_indexer_checkpoints") == [(head,)]
    assert "caas_indexer_lag_blocks 0.0" in metrics
    assert 'caas_indexer_events_total{contract="LoanBook",event="LoanCreated"}' in metrics
    assert fetch(
        url, "SELECT chain_state FROM caas_loans WHERE chain_loan_id = %s", "0x" + loan_id.hex()
    ) == [(1,)]


@pytest.mark.asyncio
async def test_tampered_events_are_flagged_by_the_event_chain(
    chain: Chain, make_database: Callable[[], str]
) -> None:
    w = chain.workload
    a, b = new_loan_id(), new_loan_id()
    w.send([w.create_loan(LoanTerms(loan_id, 900_000, 990_000)) for loan_id in (a, b)])
    epoch, deadline = w.epoch(), int(w.block()["timestamp"], 16) + 3_600
    w.send([w.approve_with_signatures(loan_id, [0, 1], epoch=epoch, deadline=deadline) for loan_id in (a, b)])
    w.send([w.disburse(loan_id) for loan_id in (a, b)])
    w.send(
        [
            w.repay(loan_id, 100_000 + n, ref(f"paystack:t{n}-{loan_id.hex()}"))
            for n in range(3)
            for loan_id in (a, b)
        ]
    )

    url = new_database(make_database)
    await index_once(url, chain)
    indexer, db, rpc = indexer_for(url, chain)
    registry = CollectorRegistry()
    indexer.metrics.register(registry)
    loan_a, loan_b = "0x" + a.hex(), "0x" + b.hex()
    try:
        clean = await verify_loan(db=db, rpc=rpc, deployment=chain.deployment, chain_loan_id=loan_a)
        assert clean.consistent and clean.event_count == 6  # created, approved, disbursed, 3 repayments

        # 1. a stored event disappears: the replay from stored events no longer reaches the
        #    contract's event chain, and the loan is flagged
        execute(
            url,
            "DELETE FROM caas_chain_events WHERE id = (SELECT id FROM caas_chain_events "
            "WHERE loan_id = %s AND event = 'RepaymentRecorded' ORDER BY block_number, log_index LIMIT 1)",
            loan_a,
        )
        tampered = await verify_loan(db=db, rpc=rpc, deployment=chain.deployment, chain_loan_id=loan_a)
        assert not tampered.events_complete and tampered.event_count == 5
        assert tampered.onchain_event_chain == clean.onchain_event_chain
        assert {"event_chain", "event_count", "scheduled_repaid"} <= set(tampered.projection_differences)
        assert fetch(url, "SELECT event_chain_mismatch FROM caas_loans WHERE chain_loan_id = %s", loan_a) == [
            (True,)
        ]

        # 2. the indexer's running copy of a chain is corrupted: the next event of that loan is
        #    checked against LoanBook.event_chain at the batch's block, and the loan is flagged
        execute(
            url, "UPDATE caas_loans SET event_chain = %s WHERE chain_loan_id = %s", "0x" + "ab" * 32, loan_b
        )
        w.send([w.repay(b, 5_000, ref(f"paystack:after-tamper-{loan_b}"))])
        result = await indexer.catch_up()
        assert sum(r.mismatches for r in result.results) == 1
        assert registry.get_sample_value("caas_indexer_event_chain_mismatches_total") == 1
        assert fetch(
            url,
            "SELECT event_chain_mismatch, event_chain_checked_block FROM caas_loans WHERE chain_loan_id = %s",
            loan_b,
        ) == [(True, result.checkpoint)]
        # its stored events are intact: recomputed from them, the chain matches the contract
        recomputed = await verify_loan(db=db, rpc=rpc, deployment=chain.deployment, chain_loan_id=loan_b)
        assert recomputed.events_complete
        assert set(recomputed.projection_differences) == {"event_chain"}
    finally:
        await rpc.aclose()
        await db.dispose()


@pytest.mark.asyncio
async def test_event_chains_of_a_deep_backfill_are_checked_once_caught_up(
    chain: Chain, make_database: Callable[[], str]
) -> None:
    ids = ["0x" + loan_id.hex() for loan_id in active_loans(chain.workload, 3)]
    url = new_database(make_database)
    # every batch below the head counts as too deep for the node's state
    indexer, db, rpc = indexer_for(
        url, chain, initial_block_range=2, max_block_range=2, verify_event_chain_within=0
    )
    try:
        while not fetch(url, "SELECT 1 FROM caas_loans WHERE chain_loan_id = %s", ids[0]):
            assert not (await indexer.run_once()).caught_up
        deep = fetch(url, "SELECT count(*) FROM caas_loans WHERE event_chain_checked_block IS NULL")
        assert deep[0][0] > 0, "loans indexed below the head wait for the sweep"
        # a running copy broken before the sweep: the sweep catches it
        execute(
            url, "UPDATE caas_loans SET event_chain = %s WHERE chain_loan_id = %s", "0x" + "cd" * 32, ids[0]
        )
        summary = await indexer.catch_up()
    finally:
        await rpc.aclose()
        await db.dispose()
    assert summary.results[-1].caught_up and sum(r.mismatches for r in summary.results) == 1
    rows = fetch(
        url,
        "SELECT chain_loan_id, event_chain_checked_block, event_chain_mismatch FROM caas_loans "
        "WHERE event_count > 0 ORDER BY chain_loan_id",
    )
    assert {(loan_id, checked) for loan_id, checked, _ in rows} == {(r[0], summary.checkpoint) for r in rows}
    assert [loan_id for loan_id, _, flagged in rows if flagged] == [ids[0]]
