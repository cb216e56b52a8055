"""Load over the whole `caas up` stack: the partner API and the webhook intake, open loop.

Traffic (by weight, `--mix`): `POST /v1/applications` (fresh Idempotency-Key each), `GET
/v1/applications/{id}` (one this run created), `GET /v1/loans/{id}` (one of the active loans set up
first), and Paystack charges through the simulator (`POST /simulate/charge`: the simulator takes
the money and delivers the signed `charge.success` webhook to the gateway; the repayment is then
verified, matched, recorded on chain and indexed). Applications are spread over `--partners`
partner tokens, as many partners would send them (the gateway's rate limit is per partner).

Requests are scheduled at a fixed rate whatever the answers (open loop); a request's latency runs
from when it was due, so a stalled server is not hidden by a stalled client.

- `capacity`: a ladder of rates, `--step-s` each; the capacity is the highest rate served with no
  error, at least 95 % of the offered rate, and p99 <= `--p99-ms`.
- `soak`: `--minutes` at `--rate` (default: half the capacity, measured first), then counts:
  requests sent and errors, applications created vs found in the database, charges sent vs
  payments recorded (backend row, indexed event, LoanBook.is_payment_recorded, and each loan's
  outstanding dropped by exactly what was charged).

    python bench/load.py capacity --write
    python bench/load.py soak --minutes 10 --write          # make soak
    python bench/load.py soak --env .caas/dev.env --rate 20 --minutes 1   # against a running stack
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_section
from stack import (
    Charge,
    Running,
    count_money,
    money_ok,
    outstanding,
    stack,
    wait_recorded,
)

from offchain.platform.auth import issue_token

CHARGE_AMOUNT = 100_00  # NGN 100: thousands fit in one loan's outstanding
LOAN_AMOUNT = 500_000_00
OPS = ("apply", "get_application", "get_loan", "charge")
DEFAULT_MIX = "apply=2,get_application=3,get_loan=3,charge=2"
LADDER = (5, 10, 20, 30, 40, 50, 60, 80, 100, 120, 150)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Loan:
    id: str
    chain_loan_id: str


@dataclass
class Tally:
    """What one run of traffic did: per operation latencies (ms) and errors."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    skipped: int = 0  # due while --max-inflight were already out: the client could not keep up
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + sum(self.errors.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]

    def summary(self, offered: float) -> dict[str, Any]:
        every = self.all_latencies()
        return {
            "offered_rps": offered,
            "achieved_rps": round(len(every) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "sent": self.sent,
            "ok": len(every),
            "errors": self.error_count,
            "skipped": self.skipped,
            "p50_ms": round(_pct(every, 0.5), 1),
            "p95_ms": round(_pct(every, 0.95), 1),
            "p99_ms": round(_pct(every, 0.99), 1),
            "max_ms": round(max(every), 1) if every else 0.0,
            "per_op": {
                op: {
                    "n": len(v),
                    "p50_ms": round(_pct(v, 0.5), 1),
                    "p99_ms": round(_pct(v, 0.99), 1),
                    "errors": self.errors.get(op, 0),
                }
                for op, v in self.latencies.items()
            },
        }


class Traffic:
    """The partner API and the simulator, driven with a fixed mix; remembers what it created."""

    def __init__(self, running: Running, loans: list[Loan], *, partners: int, mix: dict[str, float]) -> None:
        env = running.dev_env
        self.run_id = uuid.uuid4().hex[:8]
        self.loans = loans
        self.mix_ops = list(mix)
        self.mix_weights = [mix[op] for op in self.mix_ops]
        secret = env["JWT_SECRET"]
        self.tokens = [issue_token(secret, partner_id=uuid.uuid4()) for _ in range(partners)]
        self.loan_token = env["DEMO_PARTNER_TOKEN"]
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self.api = httpx.AsyncClient(base_url=env["GATEWAY_URL"], timeout=30, limits=limits)
        self.sim = httpx.AsyncClient(base_url=env["SIMULATOR_URL"], timeout=30, limits=limits)
        self.applications: list[tuple[str, str]] = []  # (id, token)
        self.application_keys: set[str] = set()
        self.charges: list[Charge] = []
        self.counter = 0

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.sim.aclose()

    async def one(self, op: str) -> tuple[bool, str]:
        self.counter += 1
        n = self.counter
        if op == "get_application" and not self.applications:
            op = "apply"
        if op == "apply":
            token = self.tokens[n % len(self.tokens)]
            key = f"load-{self.run_id}-{n}"
            response = await self.api.post(
                "/v1/applications",
                json={
                    "external_id": key,
                    "borrower": {"sme_user_id": f"load-sme-{n % 50}"},
                    "amount": {"value": 250_000_00, "currency": "NGN"},
                    "tenor_months": 3,
                    "purpose": "inventory",
                },
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            )
            if response.status_code == 201:
                self.applications.append((response.json()["id"], token))
                self.application_keys.add(key)
                return True, ""
        elif op == "get_application":
            app_id, token = random.choice(self.applications)
            response = await self.api.get(
                f"/v1/applications/{app_id}", headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code == 200:
                return True, ""
        elif op == "get_loan":
            loan = random.choice(self.loans)
            response = await self.api.get(
                f"/v1/loans/{loan.id}", headers={"Authorization": f"Bearer {self.loan_token}"}
            )
            if response.status_code == 200:
                return True, ""
        else:
            loan = self.loans[n % len(self.loans)]
            reference = f"load-{self.run_id}-c{n}"
            response = await self.sim.post(
                "/simulate/charge",
                json={"amount": CHARGE_AMOUNT, "currency": "NGN", "loan_id": loan.id, "reference": reference},
            )
            if response.status_code == 201:
                self.charges.append(Charge(reference, loan.id, loan.chain_loan_id, CHARGE_AMOUNT))
                return True, ""
        return False, f"{op} {response.status_code} {response.text[:200]}"

    async def run(
        self, rate: float, seconds: float, *, max_inflight: int = 400, tally: Tally | None = None
    ) -> Tally:
        tally = tally if tally is not None else Tally()
        inflight: set[asyncio.Task[None]] = set()
        rng = random.Random(7)

        async def timed(op: str, due: float) -> None:
            try:
                ok, why = await self.one(op)
            except httpx.HTTPError as exc:
                ok, why = False, f"{op} {type(exc).__name__} {exc}"
            if ok:
                tally.latencies[op].append((time.monotonic() - due) * 1000)
            else:
                tally.errors[op] = tally.errors.get(op, 0) + 1
                if len(tally.error_samples) < 10:
                    tally.error_samples.append(why)

        started = time.monotonic()
        interval = 1 / rate
        i = 0
        while True:
            due = started + i * interval
            if due - started >= seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            i += 1
            if len(inflight) >= max_inflight:
                tally.skipped += 1
                continue
            op = rng.choices(self.mix_ops, self.mix_weights)[0]
            task = asyncio.create_task(timed(op, due))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight)
        tally.elapsed_s = time.monotonic() - started
        return tally


def approved_loan(client: Any, external_id: str, *, sme_user_id: str, amount: int = LOAN_AMOUNT) -> str:
    """tests/system's journey to APPROVED, for a borrower of our choosing: transaction monitoring
    holds a sixth payout to one borrower within 30 days for review, so every loan here has its own
    borrower and payout account."""
    from offchain.chain.contracts import sign_approval
    from offchain.demo import PAYOUT_BANK_CODE, valid_nuban

    created = client.post(
        "/v1/applications",
        {
            "external_id": external_id,
            "borrower": {"sme_user_id": sme_user_id},
            "amount": {"value": amount, "currency": "NGN"},
            "tenor_months": 3,
            "purpose": "inventory",
        },
        expect=201,
        headers={"Idempotency-Key": f"{external_id}-application"},
    )

    def decided() -> dict[str, Any] | None:
        body = client.get(f"/v1/applications/{created['id']}")
        return body if body["status"] not in ("submitted", "underwriting") else None

    from eventually import eventually

    application = eventually(decided, what="the decision")
    assert application["status"] == "offered", application
    # and its own payout account: one account receiving several borrowers' payouts is held too
    serial = f"{int(uuid.uuid4().hex[:8], 16) % 10**9:09d}"
    account = valid_nuban(PAYOUT_BANK_CODE, serial)
    payout = {"method": "bank_transfer", "account_number": account, "bank_code": PAYOUT_BANK_CODE}
    accepted = client.post(
        f"/v1/offers/{application['offers'][0]['id']}/accept",
        {"payout": payout},
        expect=201,
        headers={"Idempotency-Key": f"{external_id}-accept"},
    )
    loan_id = accepted["loan_id"]
    client.loan_in(loan_id, "PENDING")
    request = client.get(f"/v1/loans/{loan_id}/approval-request")
    for key in client.signer_keys[: request["required"]]:
        signer, signature = sign_approval(request["typed_data"], key)
        client.post(f"/v1/loans/{loan_id}/approvals", {"signer": signer, "signature": "0x" + signature.hex()})
    client.loan_in(loan_id, "APPROVED")
    return str(loan_id)


def setup_loans(running: Running, count: int) -> list[Loan]:
    """`count` loans taken to ACTIVE through the partner API, two signers and the simulated payout."""
    from concurrent.futures import ThreadPoolExecutor

    tag = uuid.uuid4().hex[:6]

    def one(i: int) -> Loan:
        client = running.client()
        try:
            loan_id = approved_loan(client, f"load-loan-{tag}-{i}", sme_user_id=f"load-borrower-{tag}-{i}")
            loan = client.loan_in(loan_id, "ACTIVE", within_s=180)
            return Loan(loan_id, loan["chain_loan_id"])
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        loans = list(pool.map(one, range(count)))
    print(f"{count} loans ACTIVE in {time.monotonic() - started:.0f} s", flush=True)
    return loans


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        op, _, weight = part.partition("=")
        if op.strip() not in OPS:
            raise SystemExit(f"unknown operation {op!r} in --mix (known: {', '.join(OPS)})")
        mix[op.strip()] = float(weight)
    return mix


async def capacity(traffic: Traffic, args: argparse.Namespace) -> dict[str, Any]:
    steps = []
    best = 0.0
    rates = [r for r in LADDER if r <= args.max_rate]
    for rate in rates:
        tally = await traffic.run(rate, args.step_s)
        step = tally.summary(rate)
        sane = (
            step["errors"] == 0
            and step["skipped"] == 0
            and step["achieved_rps"] >= 0.95 * rate
            and step["p99_ms"] <= args.p99_ms
        )
        step["sane"] = sane
        steps.append(step)
        print(json.dumps({k: v for k, v in step.items() if k != "per_op"}), flush=True)
        if tally.error_samples:
            print("  errors:", tally.error_samples[:3], flush=True)
        if not sane:
            break
        best = rate
        await asyncio.sleep(args.rest_s)  # let the pipeline behind the intake drain between steps
    return {"capacity_rps": best, "p99_limit_ms": args.p99_ms, "step_s": args.step_s, "steps": steps}


def count_applications(running: Running, traffic: Traffic) -> dict[str, Any]:
    keys = list(traffic.application_keys)
    rows = running.query(
        "SELECT status, count(*) FROM caas_applications WHERE external_id = ANY(%s) GROUP BY status", (keys,)
    )
    statuses = {status: int(n) for status, n in rows}
    found = sum(statuses.values())
    distinct = running.query(
        "SELECT count(DISTINCT external_id), count(*) FROM caas_applications WHERE external_id = ANY(%s)",
        (keys,),
    )[0]
    return {
        "created": len(keys),
        "found": found,
        "doubled": int(distinct[1]) - int(distinct[0]),
        "statuses": statuses,
    }


async def soak(traffic: Traffic, running: Running, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    # the capacity ladder's charges are still in the pipeline: let them land before the snapshot the
    # per-loan check subtracts from, or they would count as the soak's
    await asyncio.to_thread(wait_recorded, running, [c.reference for c in traffic.charges])
    before = outstanding(running, [loan.chain_loan_id for loan in traffic.loans])
    traffic.charges.clear()
    traffic.application_keys.clear()
    tally = await traffic.run(rate, args.minutes * 60)
    summary = tally.summary(rate)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_op"}), flush=True)
    references = [c.reference for c in traffic.charges]
    drain_s = await asyncio.to_thread(wait_recorded, running, references)
    money = await asyncio.to_thread(count_money, running, traffic.charges, before)
    applications = count_applications(running, traffic)
    return {
        "rate": rate,
        "minutes": args.minutes,
        "traffic": summary,
        "error_samples": tally.error_samples,
        "drain_s": round(drain_s, 1),
        "money": money,
        "money_ok": money_ok(money),
        "applications": applications,
        "applications_ok": applications["created"] == applications["found"] and applications["doubled"] == 0,
    }


def render_capacity(result: dict[str, Any], command: str, loans: int, mix: str) -> str:
    lines = [
        f"Command: `{command}` ({datetime.now(UTC).date()}, `caas up` on its embedded default, every "
        "service in one process, on this 2-core machine shared with other work).",
        "",
        f"Open-loop mix {mix} (weights) over {loans} active loans; charges go through the simulator "
        "(signed `charge.success` webhook to the gateway). A step is sane with no error, >= 95 % of the "
        f"offered rate served and p99 <= {result['p99_limit_ms']:.0f} ms (latency from when the request "
        f"was due). {result['step_s']:.0f} s per step.",
        "",
        "| offered req/s | achieved | errors | p50 ms | p95 ms | p99 ms | max ms | sane |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in result["steps"]:
        lines.append(
            f"| {s['offered_rps']} | {s['achieved_rps']} | {s['errors']} | {s['p50_ms']} | {s['p95_ms']} "
            f"| {s['p99_ms']} | {s['max_ms']} | {'yes' if s['sane'] else 'no'} |"
        )
    lines += ["", f"**Capacity: {result['capacity_rps']} req/s** (the last sane step)."]
    return "\n".join(lines)


def passed(result: dict[str, Any]) -> bool:
    return bool(result["money_ok"] and result["applications_ok"] and result["traffic"]["errors"] == 0)


def render_soak(result: dict[str, Any], command: str) -> str:
    t, m, a = result["traffic"], result["money"], result["applications"]
    per_op = ", ".join(f"{op} {v['n']} (p99 {v['p99_ms']} ms)" for op, v in t["per_op"].items())
    lines = [
        f"Command: `{command}` ({datetime.now(UTC).date()}, same stack and machine as the capacity run).",
        "",
        "| count | value |",
        "|---|---|",
        f"| duration, offered rate | {result['minutes']} min at {result['rate']} req/s |",
        f"| requests sent / ok / errors | {t['sent']} / {t['ok']} / **{t['errors']}** |",
        f"| per operation | {per_op} |",
        f"| latency p50 / p95 / p99 / max | {t['p50_ms']} / {t['p95_ms']} / {t['p99_ms']} / "
        f"{t['max_ms']} ms |",
        "| applications created (201) / found in caas_applications / doubled | "
        f"{a['created']} / {a['found']} / {a['doubled']} |",
        f"| their status at the end | {', '.join(f'{k} {v}' for k, v in sorted(a['statuses'].items()))} |",
        f"| charges sent (simulator 201) | {m['charges_sent']} |",
        f"| caas_payments rows / recorded / missing / doubled | {m['payments_rows']} / "
        f"{m['payments_recorded']} / {m['payments_missing']} / {m['payments_doubled']} |",
        f"| RepaymentRecorded indexed / doubled | {m['events_indexed']} / {m['events_doubled']} |",
        f"| LoanBook.is_payment_recorded true | {m['recorded_on_chain']} |",
        "| loans whose outstanding fell by other than what was charged | "
        f"{len(m['loans_outstanding_mismatch'])} |",
        f"| last payment recorded after the load stopped | {result['drain_s']} s |",
        "",
        f"Verdict: errors {t['errors']}, applications lost {a['created'] - a['found']}, repayments lost "
        f"{m['charges_sent'] - m['recorded_on_chain']}, doubled {m['payments_doubled'] + m['events_doubled']}"
        f" -> **{'PASS' if passed(result) else 'FAIL'}**.",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    mix = parse_mix(args.mix)
    with stack(env_file=args.env, keep=args.keep) as running:
        loans = await asyncio.to_thread(setup_loans, running, args.loans)
        traffic = Traffic(running, loans, partners=args.partners, mix=mix)
        try:
            # a short warm-up so first-request costs (connections, caches) stay out of the figures
            await traffic.run(5, 5)
            command = "python bench/load.py " + " ".join(a for a in sys.argv[1:] if a != "--write")
            rate = args.rate
            if args.mode == "capacity" or rate is None:
                result = await capacity(traffic, args)
                rendered = render_capacity(result, command, len(loans), args.mix)
                print(rendered)
                if args.write:
                    write_section("load-capacity", "Load: capacity of the whole stack", rendered)
                rate = max(1.0, result["capacity_rps"] / 2)
                if args.mode == "capacity":
                    return 0
                await asyncio.sleep(args.rest_s)
            result = await soak(traffic, running, args, rate)
            print(json.dumps(result, indent=1, default=str))
            rendered = render_soak(result, command)
            print(rendered)
            if args.write:
                write_section("load-soak", "Load: soak at half the capacity", rendered)
            return 0 if passed(result) else 1
        finally:
            await traffic.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("capacity", "soak"))
    parser.add_argument("--env", help="drive the stack of this dev.env instead of starting one")
    parser.add_argument("--loans", type=int, default=12)
    parser.add_argument("--partners", type=int, default=8)
    parser.add_argument("--mix", default=DEFAULT_MIX)
    parser.add_argument("--step-s", type=float, default=30)
    parser.add_argument("--rest-s", type=float, default=10)
    parser.add_argument("--p99-ms", type=float, default=1000)
    parser.add_argument("--max-rate", type=float, default=max(LADDER))
    parser.add_argument("--rate", type=float, help="soak rate (req/s); default: half the measured capacity")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, state)")
    parser.add_argument("--write", action="store_true", help="write the sections of docs/BENCHMARKS.md")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
