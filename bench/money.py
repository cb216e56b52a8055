"""Repayment pipeline benchmark: Paystack charge -> signed webhook -> verify -> record_repayment on
Anvil -> indexed -> ledger posted -> partner event `credit.repayment.received` in the outbox.

The whole path runs for real: the simulator (Paystack) delivers signed webhooks over HTTP to the
gateway (uvicorn on a free port); underwriting, orchestration (relay, sender, indexer),
disbursement, repayment and notifications run on a fresh PostgreSQL database, Redis and an
Anvil of their own. Loans are created, approved and paid out through the partner
API first.

Topology: by default the simulator, the gateway and each service (underwriting, orchestration,
disbursement, repayment, notifications) run in a process of their own (spawned, uvicorn), as
deployed: no two share an interpreter lock, and this process only drives the load and measures.
`--one-process` runs them all in this process instead (the simulator and the gateway as threads,
the services in its event loop: the topology of the figures before 2026-11-28).

- latency: charges at a steady rate; per charge, charge accepted by the rail -> partner event
  committed (caas_outbox.created_at of credit.repayment.received for its reference);
- throughput: a burst of charges; repayments/s from the first charge to the last partner event.

    python bench/money.py --loans 8 --latency-n 100 --rate 10 --burst 1000 --write
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import psutil
import psycopg2
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support"), str(ROOT / "tests" / "offchain" / "integration")]

from http_receiver import receiver  # noqa: E402
from journey_support import approved_loan, chain_settings, loan_state  # noqa: E402
from report import write_section  # noqa: E402
from simulator_support import PAYSTACK_SECRET, SME_SECRET, ServerThread  # noqa: E402

from offchain.platform import auth  # noqa: E402
from offchain.platform.db import Database  # noqa: E402
from offchain.rails.simulator.app import create_app as simulator_app  # noqa: E402
from offchain.rails.simulator.config import SimulatorConfig  # noqa: E402
from offchain.services.disbursement.app import create_app as disbursement_app  # noqa: E402
from offchain.services.gateway.app import create_app as gateway_app  # noqa: E402
from offchain.services.notifications.app import create_app as notifications_app  # noqa: E402
from offchain.services.orchestration.app import create_app as orchestration_app  # noqa: E402
from offchain.services.repayment.app import create_app as repayment_app  # noqa: E402
from offchain.services.underwriting.app import create_app as underwriting_app  # noqa: E402
from offchain.stack.embedded import anvil_executable, rpc_call  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


WORKERS = {
    "underwriting": underwriting_app,
    "orchestration": orchestration_app,
    "disbursement": disbursement_app,
    "repayment": repayment_app,
    "notifications": notifications_app,
}
APPS = {"simulator": simulator_app, "gateway": gateway_app, **WORKERS}


def _serve(kind: str, options: object, port: int) -> None:
    """A spawned process's body: one app (the simulator, a service) under uvicorn until terminated."""
    import uvicorn

    app = APPS[kind](options)  # type: ignore[operator]
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")


class ServerProcess:
    """`ServerThread`, in a process of its own."""

    def __init__(self, kind: str, options: object, port: int) -> None:
        self.kind = kind
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(kind, options, port), name=f"bench-{kind}", daemon=True
        )

    def __enter__(self) -> ServerProcess:
        self._process.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.TransportError:
                if not self._process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"server on {self.url} did not start") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def __exit__(self, *_: object) -> None:
        self._process.terminate()  # uvicorn shuts down on SIGTERM (lifespan shutdown runs)
        self._process.join(15)
        if self._process.is_alive():
            self._process.kill()


@contextlib.contextmanager
def _database():
    name = f"caas_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


ANVIL_PIDS: list[int] = []


@contextlib.contextmanager
def _anvil():
    port = _free_port()
    process = subprocess.Popen([anvil_executable(), "--port", str(port), "--silent"])
    ANVIL_PIDS.append(process.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                rpc_call(url, "eth_chainId", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


class CpuMeter:
    """CPU seconds each named process spent between `start()` and `stop()` (user + system).

    The processes are this driver, each spawned server, Anvil and the PostgreSQL backends connected
    to the bench's database (Redis is shared with other users of the machine and left out)."""

    def __init__(self) -> None:
        self.processes: dict[str, list[psutil.Process]] = {}
        self._before: dict[tuple[str, int], float] = {}
        self.used: dict[str, float] = {}

    def add(self, name: str, pid: int | None) -> None:
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self.processes.setdefault(name, []).append(psutil.Process(pid))

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def start(self) -> None:
        self._before = {
            (name, proc.pid): self._cpu(proc) for name, procs in self.processes.items() for proc in procs
        }

    def stop(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, procs in self.processes.items():
            for proc in procs:
                before = self._before.get((name, proc.pid))
                if before is not None:
                    used[name] = used.get(name, 0.0) + max(0.0, self._cpu(proc) - before)
        self.used = used
        return used


def _profile(meter: CpuMeter, out: str) -> list[subprocess.Popen]:
    """py-spy (PY_SPY, default /tmp/pyspy/bin/py-spy) records each Python process of the burst for
    --profile-s seconds into OUT/<name>.txt (raw: collapsed stacks, for flamegraphs or grep)."""
    import os

    Path(out).mkdir(parents=True, exist_ok=True)
    spy = os.environ.get("PY_SPY", "/tmp/pyspy/bin/py-spy")
    seconds = os.environ.get("PROFILE_S", "6")
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(proc.pid),
                "-o",
                f"{out}/{name}.txt",
                "-f",
                "raw",
                "--nonblocking",
                "-r",
                "200",
                "-d",
                seconds,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, procs in meter.processes.items()
        if name not in ("anvil", "postgres")
        for proc in procs
    ]


def _pg_backends(database_url: str) -> list[int]:
    name = database_url.rsplit("/", 1)[1]
    with contextlib.closing(psycopg2.connect(PG)) as admin:
        cursor = admin.cursor()
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
        return [row[0] for row in cursor.fetchall()]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _partner_events(db: Database, prefix: str) -> dict[str, datetime]:
    async with db.worker_session() as session:
        rows = await session.execute(
            text(
                "SELECT payload->>'reference', created_at FROM caas_outbox "
                "WHERE topic = 'credit.repayment.received' AND payload->>'reference' LIKE :p"
            ),
            {"p": prefix + "%"},
        )
        return {ref: at for ref, at in rows.all()}


async def _wait_for(db: Database, prefix: str, count: int, within_s: float) -> dict[str, datetime]:
    deadline = time.monotonic() + within_s
    while True:
        seen = await _partner_events(db, prefix)
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.2)


async def _stages(db: Database, prefix: str, started: float) -> dict[str, dict[str, float]]:
    """When the burst's payments passed each stage: seconds after the first charge (p50, p100)."""
    query = text(
        """
        SELECT w.consumed_at AS webhook, p.created_at AS intake, i.confirmed_at AS confirmed,
               e.created_at AS indexed, o.created_at AS partner
        FROM caas_payments p
        LEFT JOIN caas_consumed_events w ON w.consumer = 'gateway.paystack-webhooks'
             AND w.event_id = 'paystack:charge.success:' || p.provider_reference
        LEFT JOIN caas_tx_intents i ON i.idempotency_key = 'repay:' || p.payment_ref
        LEFT JOIN caas_chain_events e
             ON e.event = 'RepaymentRecorded' AND e.args->>'payment_ref' = p.payment_ref
        LEFT JOIN caas_outbox o
             ON o.topic = 'credit.repayment.received' AND o.payload->>'payment_ref' = p.payment_ref
        WHERE p.provider_reference LIKE :p
        """
    )
    async with db.worker_session() as session:
        rows = (await session.execute(query, {"p": prefix + "%"})).mappings().all()
    out: dict[str, dict[str, float]] = {}
    for stage in ("webhook", "intake", "confirmed", "indexed", "partner"):
        times = [row[stage].timestamp() - started for row in rows if row[stage] is not None]
        if times:
            out[stage] = {
                "p50": round(statistics.median(times), 2),
                "last": round(max(times), 2),
                "n": len(times),
            }
    return out


async def _delivered(partner, prefix: str, count: int, within_s: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """When each credit.repayment.received for `prefix` references reached the partner's endpoint."""
    deadline = time.monotonic() + within_s
    while True:
        arrived: dict[str, float] = {}
        for request in partner.to("/ok/caas"):
            reference = (request.json().get("data") or {}).get("reference", "")
            if reference.startswith(prefix):
                arrived.setdefault(reference, request.at)
        if len(arrived) >= count or time.monotonic() > deadline:
            return arrived
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict:
    with _database() as database_url, _anvil() as anvil_url, tempfile.TemporaryDirectory() as tmp:
        settings = chain_settings(
            database_url=database_url,
            redis_url=REDIS,
            stream_prefix=f"bench-money-{uuid.uuid4().hex[:6]}",
            anvil_url=anvil_url,
            out_dir=Path(tmp),
        )
        gateway_port = _free_port()
        config = SimulatorConfig(
            paystack_secret_key=PAYSTACK_SECRET,
            sme_events_secret=SME_SECRET,
            gateway_url=f"http://127.0.0.1:{gateway_port}",
        )
        simulator_port = _free_port()
        simulator_server = (
            ServerThread(simulator_app(config), simulator_port)
            if args.one_process
            else ServerProcess("simulator", config, simulator_port)
        )
        with simulator_server as simulator:
            settings = settings.model_copy(
                update={
                    "rails": settings.rails.model_copy(update={"simulator_url": simulator.url}),
                    "log": settings.log.model_copy(update={"level": "WARNING"}),
                    # the deployed default, not the tests' 200 ms: under a burst a message
                    # waits longer than that in its consumer and would be claimed and run again
                    "events": settings.events.model_copy(update={"retry_idle_ms": 30_000}),
                    # the partner's receiver listens on loopback: opted in (never in production)
                    "outbound": settings.outbound.model_copy(update={"allow_loopback": True}),
                }
            )
            gateway_server = (
                ServerThread(gateway_app(settings), gateway_port)
                if args.one_process
                else ServerProcess("gateway", settings, gateway_port)
            )
            with gateway_server as gateway:
                meter = CpuMeter()
                # with --one-process this process runs the services too: their CPU is counted here
                meter.add("this process" if args.one_process else "driver", psutil.Process().pid)
                meter.add("simulator", getattr(simulator, "pid", None))
                meter.add("gateway", getattr(gateway, "pid", None))
                for pid in ANVIL_PIDS:
                    meter.add("anvil", pid)
                async with contextlib.AsyncExitStack() as stack:
                    for kind, factory in WORKERS.items():
                        if args.one_process:
                            app = factory(settings)
                            await stack.enter_async_context(app.router.lifespan_context(app))
                        else:
                            server = stack.enter_context(ServerProcess(kind, settings, _free_port()))
                            meter.add(kind, server.pid)
                    client = await stack.enter_async_context(
                        httpx.AsyncClient(base_url=gateway.url, timeout=60)
                    )
                    # aiohttp for the load itself: httpx costs this driver ~3x the CPU per request,
                    # and the driver shares the two cores with what it measures
                    sim = await stack.enter_async_context(
                        aiohttp.ClientSession(
                            base_url=simulator.url,
                            timeout=aiohttp.ClientTimeout(total=60),
                            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=3.0),
                        )
                    )
                    db = Database.from_settings(settings.database)
                    stack.push_async_callback(db.dispose)
                    secret = settings.auth.jwt_secret.get_secret_value()
                    headers = {"Authorization": "Bearer " + auth.issue_token(secret, partner_id=uuid.uuid4())}
                    # the partner's webhook endpoint: a real HTTP server that notes when each arrives
                    partner = stack.enter_context(receiver())
                    subscribed = await client.post(
                        "/v1/webhook-endpoints",
                        json={"url": f"{partner.url}/ok/caas", "event_types": ["credit.repayment.received"]},
                        headers={**headers, "Idempotency-Key": "bench-endpoint"},
                    )
                    subscribed.raise_for_status()
                    loans = await asyncio.gather(
                        *(
                            approved_loan(
                                client,
                                headers,
                                external_id=f"bench-{i}",
                                sme_user_id=f"bench-sme-{i}",
                                account_serial=f"{100_000_000 + i:09d}",
                            )
                            for i in range(args.loans)
                        )
                    )
                    loan_ids = [loan["loan_id"] for loan in loans]
                    for loan_id in loan_ids:
                        await loan_state(client, headers, loan_id, "ACTIVE", within_s=180)

                    async def charge(i: int, reference: str) -> float:
                        body = {
                            "amount": 100_00,
                            "currency": "NGN",
                            "loan_id": loan_ids[i % len(loan_ids)],
                            "reference": reference,
                        }
                        sent = time.time()
                        for attempt in range(3):
                            try:
                                async with sim.post("/simulate/charge", json=body) as answer:
                                    await answer.read()
                                break
                            except aiohttp.ClientConnectionError:
                                # a kept-alive connection the server closed as it was reused
                                if attempt == 2:
                                    raise
                        if answer.status == 409 and attempt > 0:
                            return sent  # the first attempt did reach it: the charge exists
                        answer.raise_for_status()
                        return sent

                    # -- latency at a steady rate
                    sent_at: dict[str, float] = {}
                    tasks = []
                    for i in range(args.latency_n):
                        reference = f"lat-{i}"
                        tasks.append(asyncio.create_task(charge(i, reference)))
                        await asyncio.sleep(1 / args.rate)
                    for i, task in enumerate(tasks):
                        sent_at[f"lat-{i}"] = await task
                    seen = await _wait_for(db, "lat-", args.latency_n, 120)
                    latencies = [seen[ref].timestamp() - sent_at[ref] for ref in seen]
                    delivered = await _delivered(partner, "lat-", args.latency_n, 120)
                    webhook_latencies = [delivered[ref] - sent_at[ref] for ref in delivered]

                    # -- throughput on a burst
                    gate = asyncio.Semaphore(args.concurrency)

                    async def limited(i: int) -> float:
                        async with gate:
                            return await charge(i, f"burst-{i}")

                    for pid in _pg_backends(database_url):
                        meter.add("postgres", pid)
                    profilers = _profile(meter, args.profile) if args.profile else []
                    meter.start()
                    wall = time.monotonic()
                    started = time.time()
                    await asyncio.gather(*(limited(i) for i in range(args.burst)))
                    accepted = time.time()
                    burst_seen = await _wait_for(db, "burst-", args.burst, 600)
                    cpu = meter.stop()
                    wall = time.monotonic() - wall
                    for profiler in profilers:
                        profiler.wait()
                    stages = await _stages(db, "burst-", started)
                    last = max(at.timestamp() for at in burst_seen.values()) if burst_seen else accepted
                    return {
                        "loans": args.loans,
                        "latency_n": args.latency_n,
                        "latency_seen": len(seen),
                        "rate": args.rate,
                        "p50_s": statistics.median(latencies) if latencies else None,
                        "p99_s": _pct(latencies, 0.99) if latencies else None,
                        "max_s": max(latencies) if latencies else None,
                        "webhook_seen": len(delivered),
                        "webhook_p50_s": statistics.median(webhook_latencies) if webhook_latencies else None,
                        "webhook_p99_s": _pct(webhook_latencies, 0.99) if webhook_latencies else None,
                        "burst": args.burst,
                        "burst_seen": len(burst_seen),
                        "charges_per_s": args.burst / (accepted - started),
                        "repayments_per_s": len(burst_seen) / (last - started),
                        "stages": stages,
                        # CPU per repayment (ms) of each process over the burst, and its busy share
                        "cpu_ms_per_repayment": {
                            name: round(1000 * used / max(1, len(burst_seen)), 1)
                            for name, used in sorted(cpu.items(), key=lambda kv: -kv[1])
                        },
                        "cpu_busy_pct": round(100 * sum(cpu.values()) / wall),
                    }


def render(result: dict, command: str) -> str:
    return "\n".join(
        [
            f"Command: `{command}` ({datetime.now(UTC).date()}, this 2-core shared machine, Anvil automine;"
            f" {result.get('topology', '')}).",
            "",
            "Path measured: simulator `POST /simulate/charge` (Paystack takes the money) -> signed",
            "`charge.success` webhook -> gateway -> outbox -> repayment (verify with Paystack, match,",
            "ledger hold, intent) ->",
            "sender -> Anvil -> indexer -> repayment (hold posted, interest) -> `credit.repayment.received`",
            "committed to the outbox (the partner webhook is sent from there by notifications).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| latency p50 (charge -> partner event), {result['latency_n']} charges at {result['rate']}/s "
            f"| {result['p50_s']:.2f} s | <= 1.5 s |",
            f"| latency p99 | {result['p99_s']:.2f} s (max {result['max_s']:.2f} s) | <= 3 s |",
            f"| latency to the partner's webhook endpoint (signed delivery received), p50 / p99 "
            f"| {result['webhook_p50_s']:.2f} s / {result['webhook_p99_s']:.2f} s "
            f"({result['webhook_seen']}/{result['latency_n']}) | <= 1.5 s / <= 3 s |",
            f"| sustained repayments/s, burst of {result['burst']} over {result['loans']} loans "
            f"| {result['repayments_per_s']:.0f}/s ({result['burst_seen']}/{result['burst']} seen) "
            "| >= 100/s |",
            f"| rail intake (simulator accepted charges) | {result['charges_per_s']:.0f}/s | |",
            "",
            "When the burst's payments passed each stage (seconds after the first charge, median / last):",
            "",
            "| " + " | ".join(result["stages"]) + " |",
            "|" + "---|" * len(result["stages"]),
            "| " + " | ".join(f"{v['p50']} / {v['last']}" for v in result["stages"].values()) + " |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loans", type=int, default=8)
    parser.add_argument("--latency-n", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="the simulator, the gateway and the services in this process (the old topology)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy each Python process during the burst into DIR"
    )
    parser.add_argument("--write", action="store_true", help="write the section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(result)
    per = result["cpu_ms_per_repayment"]
    print(
        f"CPU per repayment over the burst ({result['cpu_busy_pct']} % busy):",
        ", ".join(f"{name} {ms}" for name, ms in per.items()),
        f"= {sum(per.values()):.1f} ms",
    )
    command = "python bench/money.py " + " ".join(sys.argv[1:])
    topology = (
        "simulator, gateway and services in one process"
        if args.one_process
        else "simulator, gateway and each service in a process of its own"
    )
    result["topology"] = topology
    rendered = render(result, command.replace(" --write", ""))
    print(rendered)
    if args.write:
        write_section("money", "Repayments: webhook to partner event", rendered)


if __name__ == "__main__":
    main()
