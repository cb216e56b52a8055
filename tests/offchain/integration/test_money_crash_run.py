"""A seeded randomized run of payouts, charges, duplicates, reversals and kill -9 crashes.

The services run as real processes (`caas serve <name>`) on a fresh database, Redis and Anvil;
the simulator plays Paystack. While loans are paid out and repaid -- charges of random size,
some delivered twice, some sent many times at once, some unmatched then matched by hand, one
charged back, one too large -- processes are killed with SIGKILL at random moments and started
again, including the transaction sender at its kill points (after broadcast: the crash between
the database commit and the chain transaction) and the repayment service while chain events
flow (between the chain and the ledger). Afterwards:

- the ledger balances: debits equal credits per currency, nothing left pending;
- the ledger matches the chain: each loan's receivable equals LoanBook.outstanding;
- nothing lost or counted twice: every charge is one payment row, the rail clearing account
  holds exactly what was charged, each payment_ref is on chain at most once.

Seed: CAAS_CRASH_SEED (default fixed); the seed is printed on failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eventually import eventually_async
from identities import operator_headers
from journey_support import approved_loan, chain_settings, loan_state
from simulator_support import PAYSTACK_SECRET, SME_SECRET, ServerThread
from sqlalchemy import select, text
from web3 import Web3

from offchain.chain.contracts import Deployment
from offchain.chain.sender import KILL_SWITCH_ENV
from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.persistence import ledger as journal
from offchain.persistence.money import Payment
from offchain.platform import auth
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.rails.simulator.app import create_app as simulator_app
from offchain.rails.simulator.config import SimulatorConfig

pytestmark = pytest.mark.asyncio
REPO = Path(__file__).resolve().parents[3]
SEED = int(os.environ.get("CAAS_CRASH_SEED", "20261127"))
SERVICES = ("gateway", "underwriting", "orchestration", "disbursement", "repayment")


class Processes:
    """`caas serve <name>` subprocesses that can be killed with SIGKILL and started again."""

    def __init__(self, env: dict[str, str], ports: dict[str, int], logs: Path) -> None:
        self.env, self.ports, self.logs = env, ports, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0

    def start(self, name: str, **extra: str) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "offchain.cli",
                "serve",
                name,
                "--port",
                str(self.ports[name]),
                "--state-dir",
                str(self.logs / "no-state"),
            ],
            cwd=REPO,
            env={**self.env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.kills += 1

    def restart(self, name: str, **extra: str) -> None:
        if name in self.running:
            self.kill(name)
        self.start(name, **extra)

    def stop_all(self) -> None:
        for name in list(self.running):
            process = self.running.pop(name)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def crash_env(
    make_database, redis_url, stream_prefix, anvil_url, tmp_path: Path, free_port
) -> Iterator[dict]:
    settings = chain_settings(
        database_url=make_database(),
        redis_url=redis_url,
        stream_prefix=f"{stream_prefix}-crash-{uuid.uuid4().hex[:6]}",
        anvil_url=anvil_url,
        out_dir=tmp_path,
    )
    ports = {name: free_port() for name in SERVICES}
    config = SimulatorConfig(
        paystack_secret_key=PAYSTACK_SECRET,
        sme_events_secret=SME_SECRET,
        gateway_url=f"http://127.0.0.1:{ports['gateway']}",
        # Paystack retries for 72 hours; here long enough to outlive a gateway restart
        webhook_attempts=30,
        webhook_max_backoff_s=2.0,
    )
    with ServerThread(simulator_app(config), free_port()) as simulator:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CAAS_", "DATABASE", "REDIS", "CHAIN"))
        }
        env.update(
            {
                "CAAS_ENV": "test",
                "LOG_LEVEL": "WARNING",
                "DATABASE_URL": settings.database.url,
                "REDIS_URL": redis_url,
                "CHAIN_RPC_URL": anvil_url,
                "DEPLOYMENT_FILE": str(settings.chain.deployment_file),
                "SENDER_PRIVATE_KEY": dev_roles().sender.private_key,
                "PAYSTACK_SECRET_KEY": PAYSTACK_SECRET,
                "SME_EVENTS_SECRET": SME_SECRET,
                "SIMULATOR_URL": simulator.url,
                "EVENTS__STREAM_PREFIX": settings.events.stream_prefix,
                "EVENTS__RETRY_IDLE_MS": "500",
                "MONEY__PAYOUT_RETRY_BASE_S": "0.2",
                "MONEY__PAYOUT_VERIFY_AFTER_S": "2",
                "MONEY__WORKER_POLL_S": "0.1",
            }
        )
        processes = Processes(env, ports, tmp_path)
        try:
            for name in SERVICES:
                processes.start(name)
            yield {"settings": settings, "processes": processes, "simulator": simulator.url, "ports": ports}
        finally:
            processes.stop_all()


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2) as probe:
        try:
            return (await probe.get(f"{url}/health/ready")).status_code == 200
        except httpx.HTTPError:
            return False


async def test_seeded_random_run_with_crashes__ledger_balances_and_matches_chain(crash_env: dict) -> None:
    rng = random.Random(SEED)
    settings, processes = crash_env["settings"], crash_env["processes"]
    gateway = f"http://127.0.0.1:{crash_env['ports']['gateway']}"
    for name, port in crash_env["ports"].items():
        await eventually_async(lambda port=port: _ready(f"http://127.0.0.1:{port}"), within_s=60)
    secret = settings.auth.jwt_secret.get_secret_value()
    headers = {"Authorization": "Bearer " + auth.issue_token(secret, partner_id=uuid.uuid4())}
    charged: list[tuple[str, int]] = []  # (reference, amount) of every charge the rail took

    async with (
        httpx.AsyncClient(base_url=gateway, timeout=30) as client,
        httpx.AsyncClient(base_url=crash_env["simulator"], timeout=30) as sim,
    ):
        # -- three loans; the disbursement service dies while their payouts are in flight
        loans = await asyncio.gather(
            *(
                approved_loan(
                    client, headers, external_id=f"crash-{SEED}-{i}", amount=rng.randint(2, 8) * 100_000_00
                )
                for i in range(3)
            )
        )
        processes.restart("disbursement")
        active = [
            await loan_state(client, headers, loan["loan_id"], "ACTIVE", within_s=120) for loan in loans
        ]
        owed = {loan["id"]: loan["outstanding"]["value"] for loan in active}
        ids = {loan["id"]: loan["chain_loan_id"] for loan in active}

        async def charge(loan_id: str | None, amount: int, reference: str) -> None:
            body = {"amount": amount, "currency": "NGN", "reference": reference}
            if loan_id:
                body["loan_id"] = loan_id if rng.random() < 0.5 else ids[loan_id]
            answer = await sim.post("/simulate/charge", json=body)
            assert answer.status_code == 201, answer.text
            charged.append((reference, amount))

        # -- the random stream of money in, with crashes at random steps
        steps = 14
        crash_at = dict(
            zip(rng.sample(range(steps), 4), ["repayment", "sender", "repayment", "gateway"], strict=True)
        )
        unmatched: list[tuple[str, str]] = []
        for step in range(steps):
            loan_id = rng.choice(list(owed))
            reference = f"crash-{SEED}-{step}"
            kind = rng.choices(["part", "duplicate", "unmatched", "overpay"], weights=[5, 3, 2, 1])[0]
            amount = max(1_00, rng.randint(1, max(1, owed[loan_id] // 4)))
            if kind == "duplicate":
                await sim.post(
                    "/simulate/scenario", json={"webhook": {"fault": "duplicate", "event": "charge.success"}}
                )
            if kind == "overpay":
                amount = owed[loan_id] + rng.randint(1, 50_000_00)
            if kind == "unmatched":
                await charge(None, amount, reference)
                unmatched.append((reference, loan_id))
            else:
                await charge(loan_id, amount, reference)
                owed[loan_id] = max(0, owed[loan_id] - amount)
            victim = crash_at.get(step)
            if victim == "sender":
                # dies right after its next broadcast: the intent is committed, the tx is out,
                # the receipt is not recorded
                processes.restart("orchestration", **{KILL_SWITCH_ENV: "after_broadcast"})
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                processes.restart("orchestration")
            elif victim is not None:
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                processes.restart(victim)
            await asyncio.sleep(rng.uniform(0.0, 0.3))

        db = Database.from_settings(settings.database)
        try:
            # -- money in suspense, matched by hand to the loan it was meant for
            async def payment(reference: str):  # type: ignore[no-untyped-def]
                async with db.worker_session() as session:
                    return (
                        await session.execute(select(Payment).where(Payment.provider_reference == reference))
                    ).scalar_one_or_none()

            for reference, loan_id in unmatched:
                row = await eventually_async(lambda reference=reference: payment(reference), within_s=60)
                assert row.status == "unmatched", row.status
                if rng.random() < 0.5:
                    # money no partner can place: an operator matches it (suspense is platform-wide)
                    matched = await client.post(
                        f"/v1/payments/{row.id}/match", json={"loan_id": loan_id}, headers=operator_headers()
                    )
                    assert matched.status_code == 200, matched.text

            # -- one recorded payment charged back
            async def recorded_payment():  # type: ignore[no-untyped-def]
                async with db.worker_session() as session:
                    return (
                        await session.execute(select(Payment).where(Payment.status == "recorded").limit(1))
                    ).scalar_one_or_none()

            victim_payment = await eventually_async(recorded_payment, within_s=60)
            reversed_ = await client.post(
                f"/v1/payments/{victim_payment.id}/reverse", json={"reason": "chargeback"}, headers=headers
            )
            assert reversed_.status_code == 202, reversed_.text
            processes.restart("repayment")  # once more, while the reversal is on its way

            # -- quiescence: every payment settled, every intent final, nothing pending
            async def quiet():  # type: ignore[no-untyped-def]
                async with db.worker_session() as session:
                    rows = list((await session.execute(select(Payment))).scalars())
                    open_intents = (
                        await session.execute(
                            text(
                                "SELECT count(*) FROM caas_tx_intents WHERE status NOT IN ('confirmed', 'reverted', 'failed')"
                            )
                        )
                    ).scalar_one()
                    lines = await journal.trial_balance(session)
                settled = {"recorded", "review", "reversed", "unmatched"}
                done = (
                    len(rows) == len(charged)
                    and all(r.status in settled for r in rows)
                    and open_intents == 0
                    and all(line.pending_debits == 0 and line.pending_credits == 0 for line in lines)
                )
                return rows if done else None

            rows = await eventually_async(quiet, within_s=180, every=0.5)

            deployment = Deployment.load(settings.chain.deployment_file)
            book = deployment.loan_book(Web3(Web3.HTTPProvider(settings.chain.rpc_url)))
            async with db.worker_session() as session:
                # the ledger balances
                for line in await journal.trial_balance(session):
                    assert line.debits == line.credits, (SEED, line)
                # the ledger matches the chain, loan by loan
                for loan_id, chain_id in ids.items():
                    receivable = await journal.balance(session, accounts.loan_receivable(loan_id), "NGN")
                    assert (
                        receivable.posted == book.functions.outstanding(bytes.fromhex(chain_id[2:])).call()
                    ), (
                        SEED,
                        loan_id,
                    )
                # nothing lost, nothing twice
                assert sorted(r.provider_reference for r in rows) == sorted(ref for ref, _ in charged), SEED
                clearing = await journal.balance(session, accounts.rail_clearing(mm.PAYSTACK), "NGN")
                charged_back = sum(r.amount for r in rows if r.status == "reversed")
                # clearing holds what Paystack settles: the charges less its fees (kept whatever
                # became of the money; the simulator's merchant bears them)
                fees = sum(r.provider_fee - r.payer_fee for r in rows)
                assert clearing.posted == sum(amount for _, amount in charged) - charged_back - fees, SEED
                rail_fees = await journal.balance(session, accounts.rail_fees(mm.PAYSTACK), "NGN")
                assert rail_fees.posted == sum(r.provider_fee for r in rows), SEED
                on_chain = dict(
                    (
                        await session.execute(
                            text(
                                "SELECT args->>'payment_ref', count(*) FROM caas_chain_events "
                                "WHERE event = 'RepaymentRecorded' GROUP BY 1"
                            )
                        )
                    ).all()
                )
                assert all(count == 1 for count in on_chain.values()), (SEED, on_chain)
                recorded = {r.payment_ref for r in rows if r.status in ("recorded", "reversed")}
                assert set(on_chain) == recorded, SEED
                for row in rows:
                    assert book.functions.is_payment_recorded(bytes.fromhex(row.payment_ref[2:])).call() == (
                        row.payment_ref in recorded
                    ), (SEED, row.provider_reference, row.status)
                suspense = await journal.balance(session, accounts.SUSPENSE, "NGN")
                assert suspense.posted == sum(r.amount for r in rows if r.status == "unmatched"), SEED
            assert processes.kills >= 5
        finally:
            await db.dispose()
