"""A `caas up` stack for the load, soak and drill scripts: started in a scratch directory (as the
system tests do, tests/system/conftest.py) or attached to one already running (`--env .caas/dev.env`).

The scripts drive it only from the outside: the partner API, the simulator's control endpoints,
the chain's JSON-RPC and (to count what landed) the stack's own PostgreSQL, read-only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg2
from eth_utils import keccak

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support"), str(ROOT / "tests" / "system")]

import launcher  # noqa: E402  (tests/support: the one `caas up` launcher)
from eventually import EventuallyTimeout, eventually  # noqa: E402
from system_support import Stack  # noqa: E402

from offchain.stack.devstack import read_env_file  # noqa: E402

PORTS, SIMULATOR_PORT = launcher.PORTS, launcher.SIMULATOR_PORT
# Same clock settings as the system tests: retries of a failed payout after 1 s, and no daily
# close of business on the wall clock (nothing here moves business dates).
STACK_SETTINGS = {
    "MONEY__PAYOUT_RETRY_BASE_S": "1",
    "COLLECTIONS__SCHEDULE_ENABLED": "false",
    "LOG__LEVEL": "WARNING",
}
# Paystack retries an unacknowledged webhook for 72 hours; the simulator's default (6 attempts,
# ~6 s) is for tests. Outage drills need the real provider's patience, approximated: 40 attempts,
# at most 5 s apart (~3 minutes).
PATIENT_WEBHOOKS = {"webhook_attempts": 40, "webhook_backoff_s": 0.5, "webhook_max_backoff_s": 5.0}


def payment_ref(reference: str) -> str:
    """DESIGN §3: keccak256(utf8 "<provider>:<provider reference>")."""
    return "0x" + keccak(text=f"paystack:{reference}").hex()


@dataclass
class Running:
    """A running stack: its dev.env, its scratch directory and (when we started it) its process."""

    cwd: Path
    dev_env: dict[str, str]
    process: subprocess.Popen[bytes] | None
    log: Path | None

    def client(self) -> Stack:
        return Stack.connect(cwd=self.cwd, env=dict(os.environ), dev_env=self.dev_env, log=self.log or Path())

    def db(self) -> Any:
        """A read-only-by-convention connection as the stack's superuser (no row-level security)."""
        url = self.dev_env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        url = url.replace("postgresql+asyncpg://", "postgresql://")
        conn = psycopg2.connect(url)
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.db()) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def service_pids(self) -> dict[str, int]:
        """`caas up --processes`: the pid of each service's `caas serve <name>` child (run from our cwd)."""
        found = {}
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cmd = proc.info["cmdline"] or []
            if "offchain.cli" in cmd and "serve" in cmd and proc.info["cwd"] == str(self.cwd):
                found[cmd[cmd.index("serve") + 1]] = proc.pid
        return found

    def dependency_pids(self) -> dict[str, int]:
        """The embedded postmaster, redis-server and anvil of this stack."""
        found = {}
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(self.cwd) not in cmd:
                continue
            if "pginstall/bin/postgres" in cmd:
                found["postgres"] = proc.pid
            elif "redis-server" in cmd:
                found["redis"] = proc.pid
            elif "bin/anvil" in cmd:
                found["anvil"] = proc.pid
        return found


def ready(ports: list[int], within_s: float, process: subprocess.Popen[bytes] | None = None) -> list[int]:
    """Wait for /health/ready on each port; returns those still not ready at the deadline."""
    pending = list(ports)
    with httpx.Client(timeout=2) as client:

        def still_pending() -> list[int]:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"caas up exited with {process.returncode}")
            pending[:] = [port for port in pending if not _ready(client, port)]
            return pending

        with contextlib.suppress(EventuallyTimeout):
            eventually(still_pending, what="ready", within_s=within_s, every=0.3, accept=lambda p: not p)
    return pending


def _ready(client: httpx.Client, port: int) -> bool:
    try:
        return client.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def pg_ctl(args: list[str], data: Path) -> None:
    """pgserver's own pg_ctl call: as its unprivileged `pgserver` user when we are root, as it does."""
    from pgserver._commands import pg_ctl as run_pg_ctl

    run_pg_ctl(args, pgdata=data, user="pgserver" if os.geteuid() == 0 else None, timeout=60)


@contextlib.contextmanager
def stack(*, env_file: str | None = None, processes: bool = False, keep: bool = False) -> Iterator[Running]:
    """Attach to the stack of `env_file`, or start `caas up` in a scratch directory and stop it after."""
    if env_file:
        path = Path(env_file).resolve()
        yield Running(cwd=path.parent.parent, dev_env=read_env_file(path), process=None, log=None)
        return
    busy = launcher.busy_ports()
    if busy:
        raise SystemExit(f"ports {busy} are in use: stop the other stack, or pass --env <its .caas/dev.env>")
    cwd = Path(tempfile.mkdtemp(prefix="caas-bench-"))
    up = launcher.start(
        cwd, *(["--processes"] if processes else []), env_overrides=STACK_SETTINGS, log=cwd / "caas-up.log"
    )
    try:
        ready_s = up.wait_ready(300)  # launcher.LaunchError (a RuntimeError) with the log's tail if not
        print(f"stack up in {ready_s:.0f} s ({cwd}, processes={processes})", flush=True)
        yield Running(cwd=cwd, dev_env=up.dev_env, process=up.process, log=up.log)
    finally:
        up.stop(90)
        # a PostgreSQL restarted by a drill is not the one pgserver's cleanup knows: stop it too
        if (cwd / ".caas" / "pg" / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                pg_ctl(["-w", "-m", "fast", "stop"], cwd / ".caas" / "pg")
        up.reap()
        if not keep:
            import shutil

            shutil.rmtree(cwd, ignore_errors=True)


# -- counting what landed ---------------------------------------------------------------------------


@dataclass
class Charge:
    reference: str
    loan_id: str  # the partner API's loan id
    chain_loan_id: str
    amount: int


def recorded_count(running: Running, references: list[str]) -> int:
    rows = running.query(
        "SELECT count(*) FROM caas_payments WHERE provider_reference = ANY(%s) AND status = 'recorded'",
        (references,),
    )
    return int(rows[0][0])


def wait_recorded(running: Running, references: list[str], *, stall_s: float = 120) -> float:
    """Wait until every charge is recorded, or nothing moved for `stall_s`; returns the seconds waited."""
    started = last_move = time.monotonic()
    seen = -1
    while True:
        count = recorded_count(running, references)
        if count >= len(references):
            return time.monotonic() - started
        if count != seen:
            seen, last_move = count, time.monotonic()
        if time.monotonic() - last_move > stall_s:
            return time.monotonic() - started
        time.sleep(1)


def count_money(
    running: Running, charges: list[Charge], outstanding_before: dict[str, int]
) -> dict[str, Any]:
    """Charges sent vs what the backend and the chain hold: lost and doubled, both ways.

    - backend: one caas_payments row per charge reference, status `recorded`;
    - indexed: one RepaymentRecorded event per payment_ref in caas_chain_events;
    - chain: LoanBook.is_payment_recorded(payment_ref) for every charge, and per loan the drop in
      LoanBook.outstanding equals the sum of the charges sent for it (a double would show here).
    """
    from concurrent.futures import ThreadPoolExecutor

    references = [c.reference for c in charges]
    refs = {payment_ref(c.reference): c for c in charges}
    rows = running.query(
        "SELECT provider_reference, status FROM caas_payments WHERE provider_reference = ANY(%s)",
        (references,),
    )
    statuses: dict[str, int] = {}
    per_reference: dict[str, int] = {}
    for reference, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
        per_reference[reference] = per_reference.get(reference, 0) + 1
    events = dict(
        running.query(
            "SELECT args->>'payment_ref', count(*) FROM caas_chain_events "
            "WHERE event = 'RepaymentRecorded' AND args->>'payment_ref' = ANY(%s) GROUP BY 1",
            (list(refs),),
        )
    )
    client = running.client()
    book = client.book

    def on_chain(ref: str) -> bool:
        return bool(book.functions.is_payment_recorded(bytes.fromhex(ref[2:])).call())

    with ThreadPoolExecutor(8) as pool:
        recorded_on_chain = sum(pool.map(on_chain, list(refs)))
    sent_per_loan: dict[str, int] = {}
    for c in charges:
        sent_per_loan[c.chain_loan_id] = sent_per_loan.get(c.chain_loan_id, 0) + c.amount
    mismatched_loans = []
    for chain_loan_id, sent in sent_per_loan.items():
        now = int(book.functions.outstanding(bytes.fromhex(chain_loan_id[2:])).call())
        if outstanding_before[chain_loan_id] - now != sent:
            mismatched_loans.append(
                {"loan": chain_loan_id, "sent": sent, "repaid": outstanding_before[chain_loan_id] - now}
            )
    client.close()
    return {
        "charges_sent": len(charges),
        "payments_rows": len(rows),
        "payments_recorded": statuses.get("recorded", 0),
        "payment_statuses": statuses,
        "payments_missing": len(set(references) - set(per_reference)),
        "payments_doubled": sum(1 for n in per_reference.values() if n > 1),
        "events_indexed": sum(int(n) for n in events.values()),
        "events_doubled": sum(1 for n in events.values() if int(n) > 1),
        "recorded_on_chain": recorded_on_chain,
        "loans_outstanding_mismatch": mismatched_loans,
    }


def money_ok(counts: dict[str, Any]) -> bool:
    n = counts["charges_sent"]
    return (
        counts["payments_recorded"] == n
        and counts["payments_doubled"] == 0
        and counts["events_indexed"] == n
        and counts["events_doubled"] == 0
        and counts["recorded_on_chain"] == n
        and not counts["loans_outstanding_mismatch"]
    )


def outstanding(running: Running, chain_loan_ids: list[str]) -> dict[str, int]:
    client = running.client()
    book = client.book
    values = {c: int(book.functions.outstanding(bytes.fromhex(c[2:])).call()) for c in chain_loan_ids}
    client.close()
    return values
