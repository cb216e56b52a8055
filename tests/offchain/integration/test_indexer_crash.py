"""`caas index` killed with SIGKILL in the middle of a backfill, then restarted: the rows equal
a fresh scan, with no gap and no duplicate; and the command refuses to run beside another
indexer of the same chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from indexer_support import (
    Chain,
    assert_loans_match_chain,
    assert_same_tables,
    fetch,
    index_once,
    indexer_for,
    module_chain,
    new_database,
)

from offchain.chain.workload import active_loans, ref

CAAS = [sys.executable, "-m", "offchain.cli"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    yield from module_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def backfill(chain: Chain) -> int:
    """A history of ~4,600 events in 30-odd fat blocks; returns the head block."""
    w = chain.workload
    loans = active_loans(w, 40)
    raws = [w.repay(loans[n % len(loans)], 100 + n, ref(f"paystack:bulk-{n}")) for n in range(4_400)]
    w.send_in_blocks(raws, per_block=200)
    return w.head()


def _index_command(url: str, chain: Chain, state_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "CAAS_ENV": "test",
        "DATABASE_URL": url,
        "CHAIN_RPC_URL": chain.url,
        "DEPLOYMENT_FILE": str(chain.deployment_file),
        "LOG_LEVEL": "WARNING",
        **env,
    }
    return subprocess.Popen(
        [*CAAS, "index", "--state-dir", str(state_dir), *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkpoint(url: str) -> int:
    rows = fetch(url, "SELECT block_number FROM caas_indexer_checkpoints")
    return int(rows[0][0]) if rows else -1


def test_kill_9_mid_backfill_then_restart_gives_a_fresh_scans_rows(
    chain: Chain, backfill: int, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database(make_database)
    start = chain.deployment.loan_book_block
    # one fat block per batch: most of the time is spent inside a batch's transaction
    process = _index_command(
        url, chain, tmp_path, INDEXER__INITIAL_BLOCK_RANGE="1", INDEXER__MAX_BLOCK_RANGE="1"
    )
    try:
        deadline = time.monotonic() + 60
        while _checkpoint(url) < start + 12:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "indexer made no progress"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == -signal.SIGKILL

    # what the killed process left: whole batches up to its checkpoint, nothing beyond
    killed_at = _checkpoint(url)
    assert start + 12 <= killed_at < backfill
    assert fetch(url, "SELECT count(*) FROM caas_chain_events WHERE block_number > %s", killed_at) == [(0,)]

    restarted = _index_command(url, chain, tmp_path, "--once")
    out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err
    assert f"indexed to block {backfill}" in out

    fresh = new_database(make_database)
    summary = _fresh_scan(fresh, chain)
    assert summary > 4_500
    tables = assert_same_tables(url, fresh)
    assert assert_loans_match_chain(url, chain) == 40
    # no gap: every block with logs on chain is represented; no duplicate publication either
    assert len(tables["caas_chain_events"]) == summary
    published = fetch(
        url,
        "SELECT count(*), count(DISTINCT payload->>'event_id') FROM caas_outbox WHERE topic LIKE 'chain.%%'",
    )
    assert published == [(summary, summary)]


def _fresh_scan(url: str, chain: Chain) -> int:
    import asyncio

    return asyncio.run(index_once(url, chain)).inserted


@pytest.mark.asyncio
async def test_index_command_refuses_to_run_beside_another_indexer(
    chain: Chain, make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database(make_database)
    holder, db, rpc = indexer_for(url, chain)
    try:
        async with holder.lock():
            process = _index_command(url, chain, tmp_path, "--once", "--no-wait")
            _, err = process.communicate(timeout=60)
    finally:
        await rpc.aclose()
        await db.dispose()
    assert process.returncode == 3
    assert "another indexer already indexes chain 31337" in err
    assert _checkpoint(url) == -1
