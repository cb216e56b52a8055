"""Transaction sender throughput on Anvil automine: `python bench/sender.py [--n 2000] [--write]`.

The same call for every transaction (`LoanBook.create_loan` from the backend key, a new loan each),
a fresh Anvil per path and a throwaway PostgreSQL database (on CAAS_BENCH_PG_URL, default the
machine's 127.0.0.1:5432) for the sender's. In one run:

- sender: N intents are submitted (one transaction), then the sender's worker runs until every
  intent is confirmed; the rate is N / (worker start -> last intent confirmed), with every nonce,
  raw transaction, hash, receipt and outbox event committed to PostgreSQL on the way;
- raw web3: N transactions signed beforehand, sent one `send_raw_transaction` at a time through
  web3.py's HTTP provider, timed until the last one's receipt;
- raw batch: the same as JSON-RPC batches of 500, each mined before the next is sent (the
  sender's send pattern without its bookkeeping: the ceiling of that pattern here).

Two things about Anvil's automine shape these figures. It mines when a transaction arrives and
puts at most one block's gas in that block, leaving the rest of a burst in its pool until the
next arrival; so the three paths are compared on an Anvil with 1e9-gas blocks, and the sender
runs once more on a stock Anvil (30M gas), where its in-flight gas window paces it. And its pool
gets slow as it grows: a client that sends everything before waiting (the raw web3 loop) leaves
a backlog that Anvil then mines one transaction per block, slower and slower; the send loop's own
rate is shown beside its until-mined rate.

`--write` replaces the sender section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
from eth_account import Account
from eth_utils import keccak
from report import write_section  # bench/ is on sys.path when run as a script
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from web3 import Web3

from offchain.chain.allowlist import Allowlist
from offchain.chain.contracts import Deployment
from offchain.chain.deployment import deploy
from offchain.chain.jsonrpc import JsonRpc
from offchain.chain.sender import SenderWorker, submit
from offchain.persistence.migrate import upgrade
from offchain.persistence.models import TxIntent
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import DatabaseSettings, SenderSettings

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("CAAS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY = 86_400
TARGET = 200.0
PRESIGNED_GAS = 250_000
BIG_BLOCK_GAS = 1_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def anvil(gas_limit: int | None = None) -> Iterator[str]:
    port = _free_port()
    binary = shutil.which("anvil") or str(REPO / "node_modules/.bin/anvil")
    command = [binary, "--port", str(port), "--silent"]
    if gas_limit:
        command += ["--gas-limit", str(gas_limit)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        w3 = Web3(Web3.HTTPProvider(url))
        for _ in range(200):
            with contextlib.suppress(Exception):
                if w3.is_connected():
                    break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _admin(statement: str) -> None:
    conn = psycopg2.connect(PG_URL)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"caas_bench_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_loan_data(book, tag: str) -> tuple[bytes, str]:
    loan_id = keccak(text=f"loan:{tag}")
    principal = 1_000_000_00
    terms = (
        keccak(text=f"borrower:{tag}"),
        keccak(text="partner:bench"),
        566,
        principal,
        principal * 112 // 100,
        4,
        30 * DAY,
        3 * DAY,
        5_000_00,
        keccak(text=f"payout:{tag}"),
        keccak(text=f"agreement:{tag}"),
    )
    return loan_id, book.encode_abi("create_loan", [loan_id, terms])


async def _through_sender(db_url: str, rpc_url: str, book, n: int) -> dict[str, float]:
    db = Database.from_settings(DatabaseSettings(url=db_url), application_name="caas-bench")
    rpc = JsonRpc(rpc_url)
    deployment = _DEPLOYMENTS[book.address.lower()]
    try:
        calls = [_create_loan_data(book, f"sender-{i}") for i in range(n)]
        started = time.perf_counter()
        async with db.worker_session() as session:
            for i, (_, data) in enumerate(calls):
                # as offer acceptance asks for it: the gateway's create_loan (offchain.chain.allowlist)
                await submit(
                    session,
                    caller="gateway",
                    deployment=deployment,
                    idempotency_key=f"bench:create_loan:{i}",
                    to=book.address,
                    data=data,
                )
        submitted = time.perf_counter()
        worker = SenderWorker(
            db=db,
            rpc=rpc,
            private_key=dev_roles().sender.private_key,
            settings=SenderSettings(idle_poll_s=0.01),
            allowlist=Allowlist.of(deployment),
        )
        await worker.drain(within_s=600)
        drained = time.perf_counter()
        async with db.worker_session() as session:
            confirmed = await session.scalar(
                select(func.count()).select_from(TxIntent).where(TxIntent.status == "confirmed")
            )
        if confirmed != n:
            raise RuntimeError(f"only {confirmed} of {n} intents confirmed")
        return {"submit_per_s": n / (submitted - started), "sender_per_s": n / (drained - submitted)}
    finally:
        await rpc.aclose()
        await db.dispose()


def _presigned(w3: Web3, book, n: int, tag: str, nonce: int) -> list[bytes]:
    account = Account.from_key(dev_roles().sender.private_key)
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    tip = w3.to_wei(1, "gwei")
    raws = []
    for i in range(n):
        _, data = _create_loan_data(book, f"{tag}-{i}")
        tx = {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": nonce + i,
            "to": book.address,
            "data": data,
            "value": 0,
            "gas": PRESIGNED_GAS,
            "maxFeePerGas": 2 * base_fee + tip,
            "maxPriorityFeePerGas": tip,
        }
        raws.append(bytes(account.sign_transaction(tx).raw_transaction))
    return raws


def _raw_web3(w3: Web3, raws: list[bytes]) -> tuple[float, float]:
    """(sent/s, mined/s): the rate of the send loop alone, and until the last receipt."""
    started = time.perf_counter()
    last = None
    for raw in raws:
        last = w3.eth.send_raw_transaction(raw)
    sent = time.perf_counter()
    # Polling much faster than this slows Anvil itself down (measured: 3x at 10 ms).
    receipt = w3.eth.wait_for_transaction_receipt(last, timeout=600, poll_latency=0.1)
    assert receipt["status"] == 1
    return len(raws) / (sent - started), len(raws) / (time.perf_counter() - started)


async def _raw_batch(rpc_url: str, w3: Web3, raws: list[bytes]) -> float:
    """Batches of 500 (at most a block's worth), the next sent once the previous one is mined:
    the sender's own send pattern without any bookkeeping. Anvil's pool gets slow as it grows,
    so a bounded pool is also what lets it mine fast."""
    per_block = max(1, min(500, w3.eth.get_block("latest")["gasLimit"] // PRESIGNED_GAS))
    rpc = JsonRpc(rpc_url)
    try:
        started = time.perf_counter()
        for first in range(0, len(raws), per_block):
            chunk = raws[first : first + per_block]
            results = await rpc.batch([("eth_sendRawTransaction", ["0x" + raw.hex()]) for raw in chunk])
            receipt = w3.eth.wait_for_transaction_receipt(results[-1], timeout=600, poll_latency=0.05)
            assert receipt["status"] == 1
        return len(raws) / (time.perf_counter() - started)
    finally:
        await rpc.aclose()


def _deploy(rpc_url: str, out: Path) -> tuple[Web3, object]:
    roles = dev_roles()
    deploy(
        rpc_url=rpc_url,
        deployer_key=roles.deployer.private_key,
        signers=[s.address for s in roles.signers],
        threshold=roles.threshold,
        backend_address=roles.sender.address,
        network="bench",
        out_dir=out,
    )
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 60}))
    deployment = Deployment.load(out / "bench.json")
    _DEPLOYMENTS[deployment.loan_book_address.lower()] = deployment
    return w3, deployment.loan_book(w3)


# each bench chain's deployment by its LoanBook address (the sender checks calls against it)
_DEPLOYMENTS: dict[str, Deployment] = {}


def measure(n: int) -> dict[str, float]:
    """Each path on its own fresh Anvil and database, so none inherits another's chain or pool."""
    sender = dev_roles().sender.address
    figures: dict[str, float] = {}
    with anvil(BIG_BLOCK_GAS) as rpc_url, database() as db_url, tempfile.TemporaryDirectory() as out:
        _, book = _deploy(rpc_url, Path(out))
        figures.update(asyncio.run(_through_sender(db_url, rpc_url, book, n)))
    print(f"sender: {figures['sender_per_s']:.0f} tx/s", file=sys.stderr)
    with anvil(BIG_BLOCK_GAS) as rpc_url, tempfile.TemporaryDirectory() as out:
        w3, book = _deploy(rpc_url, Path(out))
        raws = _presigned(w3, book, n, "raw", w3.eth.get_transaction_count(sender, "pending"))
        figures["raw_web3_sent_per_s"], figures["raw_web3_per_s"] = _raw_web3(w3, raws)
    print(f"raw web3: {figures['raw_web3_per_s']:.0f} tx/s", file=sys.stderr)
    with anvil(BIG_BLOCK_GAS) as rpc_url, tempfile.TemporaryDirectory() as out:
        w3, book = _deploy(rpc_url, Path(out))
        raws = _presigned(w3, book, n, "batch", w3.eth.get_transaction_count(sender, "pending"))
        figures["raw_batch_per_s"] = asyncio.run(_raw_batch(rpc_url, w3, raws))
    print(f"raw batch: {figures['raw_batch_per_s']:.0f} tx/s", file=sys.stderr)
    # the sender alone on a stock Anvil (30M gas blocks): its in-flight gas window at work
    with anvil() as rpc_url, database() as db_url, tempfile.TemporaryDirectory() as out:
        _, book = _deploy(rpc_url, Path(out))
        figures["sender_stock_per_s"] = asyncio.run(_through_sender(db_url, rpc_url, book, n))["sender_per_s"]
    return figures


def table(n: int, figures: dict[str, float]) -> str:
    ratio = figures["sender_per_s"] / figures["raw_web3_per_s"]
    return "\n".join(
        [
            f"N = {n:,} `LoanBook.create_loan` transactions per path from the backend key, Anvil "
            "automine, one run.",
            "",
            "| path | Anvil blocks | tx/s | target |",
            "|---|---|---:|---|",
            "| sender: intents -> confirmed (nonce, raw tx, receipt, outbox in PostgreSQL) | 1e9 gas | "
            f"{figures['sender_per_s']:,.0f} | ≥ {TARGET:.0f} |",
            "| raw web3.py client, pre-signed, one send_raw_transaction at a time, until the "
            f"last receipt | 1e9 gas | {figures['raw_web3_per_s']:,.0f} |  |",
            "| … the same client's send loop alone (not yet mined) | 1e9 gas | "
            f"{figures['raw_web3_sent_per_s']:,.0f} | (≈ 700 in the issue) |",
            "| raw JSON-RPC batches of 500, each mined before the next, pre-signed | 1e9 gas | "
            f"{figures['raw_batch_per_s']:,.0f} |  |",
            "| sender, same workload | stock (30M gas) | "
            f"{figures['sender_stock_per_s']:,.0f} | ≥ {TARGET:.0f} |",
            "| submitting the intents (one transaction, `submit` per intent) | 1e9 gas | "
            f"{figures['submit_per_s']:,.0f} |  |",
            "",
            f"Sender / raw web3 client: {ratio:.2f}×.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000, help="transactions per path")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()
    figures = measure(args.n)
    rendered = table(args.n, figures)
    print(rendered)
    if min(figures["sender_per_s"], figures["sender_stock_per_s"]) < TARGET:
        print(f"\nBELOW TARGET ({TARGET:.0f} tx/s)")
    if args.write:
        write_section("sender", "Transaction sender (`python bench/sender.py --n 2000`)", rendered)


if __name__ == "__main__":
    main()
