"""Reorgs on a real Anvil: the indexer unwinds to the common ancestor and replays, and its tables
then equal a fresh scan of the new chain; a reorg deeper than its window stops it loudly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest
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

from offchain.chain.indexer import REORG_TOPIC, ReorgTooDeepError
from offchain.chain.workload import LoanTerms, Workload, active_loans, new_loan_id, ref

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    yield from module_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def loans(chain: Chain) -> list[bytes]:
    return active_loans(chain.workload, 6)


def _repayments(w: Workload, loans: list[bytes], count: int, tag: str) -> list[str]:
    """`count` repayments spread over the loans; under automine each lands in a block of its own."""
    return [w.repay(loans[n % len(loans)], 1_000 + n, ref(f"paystack:{tag}-{n}")) for n in range(count)]


def _event_ids(url: str, above: int) -> set[str]:
    rows = fetch(
        url,
        "SELECT chain_id, block_hash, log_index FROM caas_chain_events WHERE block_number > %s",
        above,
    )
    return {f"{c}:{h}:{i}" for c, h, i in rows}


@pytest.mark.parametrize("depth", [1, 5, 30])
async def test_anvil_reorg_replacing_repayments_is_unwound_and_replayed(
    chain: Chain, loans: list[bytes], make_database: Callable[[], str], depth: int
) -> None:
    w = chain.workload
    url = new_database(make_database)
    await index_once(url, chain)
    indexer, db, rpc = indexer_for(url, chain)
    registry = CollectorRegistry()
    indexer.metrics.register(registry)
    try:
        base = w.head()
        first_nonce = w.nonces[w.sender.address]
        w.send_one_by_one(_repayments(w, loans, depth, f"old-{depth}"))
        assert w.head() == base + depth
        await indexer.catch_up()
        abandoned = _event_ids(url, base)
        assert len(abandoned) == depth

        # the same blocks again, now holding one different repayment (other amount, other ref)
        w.nonces[w.sender.address] = first_nonce
        replacement = w.repay(loans[-1], 4_321, ref(f"paystack:new-{depth}"))
        w.reorg(depth, [(replacement, 0)])
        assert w.head() == base + depth

        summary = await indexer.catch_up()
        assert summary.reorgs == 1
        assert registry.get_sample_value("caas_indexer_reorgs_total") == 1
        assert registry.get_sample_value("caas_indexer_last_reorg_depth") == depth
    finally:
        await rpc.aclose()
        await db.dispose()

    fresh = new_database(make_database)
    await index_once(fresh, chain)
    assert_same_tables(url, fresh)
    assert_loans_match_chain(url, chain)
    args = fetch(url, "SELECT args->>'amount' FROM caas_chain_events WHERE block_number > %s", base)
    assert args == [("4321",)]
    # consumers hear which events were withdrawn; the survivors were not published again
    notices = fetch(url, "SELECT payload FROM caas_outbox WHERE topic = %s", REORG_TOPIC)
    assert len(notices) == 1
    notice = notices[0][0]
    assert notice["depth"] == depth and notice["common_ancestor"]["number"] == base
    assert set(notice["removed_event_ids"]) == abandoned
    published = fetch(
        url,
        "SELECT count(*), count(DISTINCT payload->>'event_id') FROM caas_outbox WHERE topic <> %s",
        REORG_TOPIC,
    )
    events = fetch(url, "SELECT count(*) FROM caas_chain_events")[0][0]
    assert published == [(events + depth, events + depth)]


async def test_revert_to_a_snapshot_then_a_longer_other_history(
    chain: Chain, loans: list[bytes], make_database: Callable[[], str]
) -> None:
    w = chain.workload
    url = new_database(make_database)
    indexer, db, rpc = indexer_for(url, chain)
    try:
        await indexer.catch_up()
        snapshot = w.rpc.call("evm_snapshot")
        base = w.head()
        w.send_one_by_one(_repayments(w, loans, 5, "doomed"))
        await indexer.catch_up()
        assert w.rpc.call("evm_revert", snapshot) is True
        w.sync_nonces()
        w.send_one_by_one(_repayments(w, loans, 8, "survivor"))
        assert w.head() == base + 8

        summary = await indexer.catch_up()
        assert summary.reorgs == 1
    finally:
        await rpc.aclose()
        await db.dispose()

    fresh = new_database(make_database)
    await index_once(fresh, chain)
    assert_same_tables(url, fresh)
    assert_loans_match_chain(url, chain)


async def test_a_reorg_deeper_than_the_window_stops_the_indexer(
    chain: Chain, loans: list[bytes], make_database: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    w = chain.workload
    url = new_database(make_database)
    indexer, db, rpc = indexer_for(url, chain, reorg_window=4)
    registry = CollectorRegistry()
    indexer.metrics.register(registry)
    try:
        first_nonce = w.nonces[w.sender.address]
        w.send_one_by_one(_repayments(w, loans, 8, "deep-old"))
        await indexer.catch_up()
        before = fetch(url, "SELECT block_number, block_hash FROM caas_indexer_checkpoints")
        rows_before = fetch(url, "SELECT count(*) FROM caas_chain_events")
        lowest_kept, lowest_hash = fetch(
            url, "SELECT number, hash FROM caas_indexed_blocks ORDER BY number LIMIT 1"
        )[0]

        w.nonces[w.sender.address] = first_nonce
        w.reorg(8, [(w.repay(loans[0], 999, ref("paystack:deep-new")), 0)])
        new_hash = w.block(lowest_kept)["hash"]
        assert new_hash != lowest_hash

        with pytest.raises(ReorgTooDeepError) as raised:
            await indexer.catch_up()
        assert raised.value.window == 4 and raised.value.number == lowest_kept
        assert lowest_hash in str(raised.value) and new_hash in str(raised.value)
        # nothing was unwound, nothing advanced
        assert fetch(url, "SELECT block_number, block_hash FROM caas_indexer_checkpoints") == before
        assert fetch(url, "SELECT count(*) FROM caas_chain_events") == rows_before

        # the long-running loop stops too, rather than retrying past it
        with pytest.raises(ReorgTooDeepError):
            await asyncio.wait_for(indexer.run(asyncio.Event()), timeout=10)
        assert registry.get_sample_value("caas_indexer_halted") == 1
        logged = capsys.readouterr().out
        assert "indexer.reorg_too_deep" in logged and lowest_hash in logged and new_hash in logged
    finally:
        await rpc.aclose()
        await db.dispose()


async def test_a_reorg_taking_loans_away_drops_the_chains_rows_and_resets_the_backends(
    chain: Chain, loans: list[bytes], make_database: Callable[[], str]
) -> None:
    w = chain.workload
    url = new_database(make_database)
    ours, stranger = LoanTerms(new_loan_id(), 700_000, 770_000), LoanTerms(new_loan_id(), 800_000, 880_000)
    ours_id, stranger_id = "0x" + ours.loan_id.hex(), "0x" + stranger.loan_id.hex()
    # the backend originated `ours` (partner linked, terms written) before sending it on chain
    partner = str(uuid.uuid4())
    execute(url, "INSERT INTO caas_partners (id, name) VALUES (%s, 'P')", partner)
    execute(
        url,
        "INSERT INTO caas_loans (partner_id, chain_loan_id, principal, total_due) VALUES (%s, %s, %s, %s)",
        partner,
        ours_id,
        ours.principal,
        ours.total_due,
    )
    indexer, db, rpc = indexer_for(url, chain)
    try:
        await indexer.catch_up()
        first_nonce = w.nonces[w.sender.address]
        w.send_one_by_one([w.create_loan(ours), w.create_loan(stranger)])
        await indexer.catch_up()
        assert fetch(
            url,
            "SELECT count(*) FROM caas_loans WHERE chain_state = 1 AND chain_loan_id IN (%s, %s)",
            ours_id,
            stranger_id,
        ) == [(2,)]

        w.nonces[w.sender.address] = first_nonce
        w.reorg(2, [])  # the two blocks again, empty
        assert (await indexer.catch_up()).reorgs == 1
    finally:
        await rpc.aclose()
        await db.dispose()

    assert fetch(url, "SELECT 1 FROM caas_loans WHERE chain_loan_id = %s", stranger_id) == []
    kept = fetch(
        url,
        "SELECT partner_id::text, chain_state, principal, total_due, event_chain, event_count, created_on_chain_at "
        "FROM caas_loans WHERE chain_loan_id = %s",
        ours_id,
    )
    assert kept == [(partner, 0, ours.principal, ours.total_due, None, 0, None)]
    fresh = new_database(make_database)
    await index_once(fresh, chain)
    execute(url, "DELETE FROM caas_loans WHERE chain_loan_id = %s", ours_id)  # the backend's own row
    assert_same_tables(url, fresh)


async def test_confirmations_keep_a_shallow_reorg_out_of_the_tables(
    chain: Chain, loans: list[bytes], make_database: Callable[[], str]
) -> None:
    w = chain.workload
    url = new_database(make_database)
    indexer, db, rpc = indexer_for(url, chain, confirmations=3)
    try:
        first_nonce = w.nonces[w.sender.address]
        w.send_one_by_one(_repayments(w, loans, 3, "unconfirmed"))
        summary = await indexer.catch_up()
        assert summary.checkpoint == w.head() - 3

        w.nonces[w.sender.address] = first_nonce
        w.reorg(3, [(w.repay(loans[0], 1_234, ref("paystack:confirmed")), 1)])
        w.mine()
        summary = await indexer.catch_up()
        assert summary.reorgs == 0 and summary.checkpoint == w.head() - 3
    finally:
        await rpc.aclose()
        await db.dispose()

    fresh = new_database(make_database)
    await index_once(fresh, chain, confirmations=3)
    assert_same_tables(url, fresh)
    assert fetch(url, "SELECT count(*) FROM caas_outbox WHERE topic = %s", REORG_TOPIC) == [(0,)]
