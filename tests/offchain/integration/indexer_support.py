"""Shared pieces of the indexer tests: a fresh Anvil with the contracts per test module, migrated
throwaway databases, and table snapshots to compare an index with a fresh full scan."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from eth_abi import decode

from offchain.chain.contracts import Deployment
from offchain.chain.deployment import deploy
from offchain.chain.indexer import CatchUpSummary, ChainIndexer
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.workload import Workload
from offchain.persistence.migrate import upgrade
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import DatabaseSettings, IndexerSettings
from offchain.stack.embedded import anvil_executable, rpc_call

# test chains: default after 30 days past due, so the workload reaches defaults quickly
DEFAULT_AFTER_DAYS = 30


@dataclass
class Chain:
    url: str
    deployment: Deployment
    deployment_file: Path
    workload: Workload


def start_anvil(port: int, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [anvil_executable(), "--port", str(port), "--silent", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            rpc_call(url, "eth_chainId", timeout=1)
            return process
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)


def deploy_contracts(url: str, out_dir: Path) -> tuple[Deployment, Path]:
    roles = dev_roles()
    deploy(
        rpc_url=url,
        deployer_key=roles.deployer.private_key,
        signers=[s.address for s in roles.signers],
        threshold=roles.threshold,
        backend_address=roles.sender.address,
        network="indexer-test",
        default_after_days=DEFAULT_AFTER_DAYS,
        out_dir=out_dir,
    )
    path = out_dir / "indexer-test.json"
    return Deployment.load(path), path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def module_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """A fresh Anvil for a test module (its `chain` fixture yields from this), with LoanBook +
    committee deployed and a workload driver for the dev accounts (sender #1 originates and
    services; signers #2-#4, threshold 2)."""
    directory = tmp_path_factory.mktemp("indexer-chain")
    port = free_port()
    process = start_anvil(port, directory / "anvil.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deployment, path = deploy_contracts(url, directory)
        roles = dev_roles()
        workload = Workload(
            url,
            deployment,
            sender_key=roles.sender.private_key,
            signer_keys=[s.private_key for s in roles.signers],
        )
        yield Chain(url, deployment, path, workload)
        workload.close()
    finally:
        process.terminate()
        process.wait(10)


def new_database(make_database: Callable[[], str]) -> str:
    url = make_database()
    upgrade(url)
    return url


def indexer_for(url: str, chain: Chain, **settings: Any) -> tuple[ChainIndexer, Database, JsonRpc]:
    db = Database.from_settings(DatabaseSettings(url=url), application_name="caas-indexer-test")
    rpc = JsonRpc(chain.url, timeout_s=30)
    indexer = ChainIndexer(db=db, rpc=rpc, deployment=chain.deployment, settings=IndexerSettings(**settings))
    return indexer, db, rpc


async def index_once(url: str, chain: Chain, **settings: Any) -> CatchUpSummary:
    """Catch one database up with the chain, with a throwaway indexer."""
    indexer, db, rpc = indexer_for(url, chain, **settings)
    try:
        return await indexer.catch_up()
    finally:
        await rpc.aclose()
        await db.dispose()


def fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def execute(url: str, sql: str, *args: Any) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
    finally:
        conn.close()


# What a fresh full scan must reproduce row for row: everything but surrogate keys and the
# wall-clock bookkeeping of when a row was written.
SNAPSHOT_QUERIES = {
    "caas_chain_events": (
        "SELECT chain_id, block_number, block_hash, tx_hash, tx_index, log_index, address, contract, event, "
        "loan_id, args::text, topics, data, block_timestamp FROM caas_chain_events "
        "ORDER BY chain_id, block_number, log_index"
    ),
    "caas_loans": (
        "SELECT chain_loan_id, borrower_ref, partner_ref, currency, principal, total_due, installment_count, "
        "installment_interval, grace_period, max_late_fees, payout_ref, terms_hash, chain_state, "
        "ever_defaulted, scheduled_repaid, late_fees_assessed, late_fees_paid, repaid, outstanding, "
        "created_on_chain_at, approved_at, disbursed_at, closed_at, event_chain, event_chain_mismatch, "
        "event_count, last_block_number, last_log_index FROM caas_loans ORDER BY chain_loan_id"
    ),
    "caas_indexed_blocks": (
        'SELECT chain_id, number, hash, parent_hash, "timestamp" FROM caas_indexed_blocks ORDER BY chain_id, number'
    ),
    "caas_indexer_checkpoints": (
        "SELECT name, chain_id, block_number, block_hash FROM caas_indexer_checkpoints ORDER BY name, chain_id"
    ),
}


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in fetch(url, sql)]
        for table, sql in SNAPSHOT_QUERIES.items()
    }


def assert_same_tables(actual_url: str, expected_url: str) -> dict[str, list[tuple[Any, ...]]]:
    actual, expected = snapshot(actual_url), snapshot(expected_url)
    for table in SNAPSHOT_QUERIES:
        ours, theirs = actual[table], expected[table]
        missing = [row for row in theirs if row not in set(ours)]
        extra = [row for row in ours if row not in set(theirs)]
        assert ours == theirs, (
            f"{table}: {len(extra)} extra rows, e.g. {extra[:2]}; {len(missing)} missing, e.g. {missing[:2]}"
        )
    return actual


def assert_loans_match_chain(url: str, chain: Chain) -> int:
    """Every mirrored loan equals LoanBook.loans(loan_id) field by field, and its event chain
    equals LoanBook.event_chain(loan_id). Returns how many loans were compared."""
    w = chain.workload
    components = next(f for f in chain.deployment.loan_book_abi if f.get("name") == "loans")["outputs"][0][
        "components"
    ]
    struct = "(" + ",".join(str(c["type"]) for c in components) + ")"
    # the columns in the order of the Loan struct's fields
    rows = fetch(
        url,
        "SELECT chain_loan_id, event_chain, event_chain_mismatch, chain_state, ever_defaulted, currency, "
        "principal, total_due, installment_count, installment_interval, grace_period, max_late_fees, "
        "decode(substr(payout_ref, 3), 'hex'), decode(substr(terms_hash, 3), 'hex'), "
        "COALESCE(extract(epoch FROM disbursed_at)::bigint, 0), scheduled_repaid, late_fees_assessed, "
        "late_fees_paid, repaid, outstanding FROM caas_loans",
    )
    for loan_id, chain_head, mismatch, *mirror in rows:
        raw = bytes.fromhex(w.call(w.book, "loans", bytes.fromhex(loan_id[2:]))[2:])
        onchain = list(decode([struct], raw)[0])
        ours = [
            bytes(v) if isinstance(v, memoryview) else v if isinstance(v, bool) else int(v) for v in mirror
        ]
        assert ours == onchain, f"loan {loan_id}: mirror {ours} != chain {onchain}"
        assert chain_head == w.call(w.book, "event_chain", bytes.fromhex(loan_id[2:])), f"loan {loan_id}"
        assert mismatch is False, f"loan {loan_id} flagged"
    return len(rows)
