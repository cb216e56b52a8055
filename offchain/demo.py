"""`caas demo`: one loan end to end against a running stack, every step printed with its transaction.

Application -> decision -> offer -> acceptance (LoanCreated) -> two EIP-712 signer signatures
(LoanApproved) -> payout through the simulated Paystack (LoanDisbursed) -> three repayments by
Paystack charges, the first one's webhook delivered twice (RepaymentRecorded x3, LoanRepaid) ->
REPAID, read back straight from the LoanBook contract.

It drives the stack only from the outside, as a partner, a signer and the payment provider would:
the partner REST API on GATEWAY_URL, the simulator's control endpoints on SIMULATOR_URL, and the
chain on CHAIN_RPC_URL. The settings come from the environment or, for those not set, from the
`.caas/dev.env` that `caas up` writes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from offchain.demo_config import (
    PAYOUT_BANK_CODE,
    PAYOUT_SERIAL,
    REQUIRED_KEYS,
    DemoConfig,
    DemoError,
    DemoResult,
    money,
    valid_nuban,
)

__all__ = [
    "PAYOUT_BANK_CODE",
    "PAYOUT_SERIAL",
    "REQUIRED_KEYS",
    "Demo",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "money",
    "run_demo",
    "valid_nuban",
]

T = TypeVar("T")


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    if isinstance(body, dict):
        parts = [str(body.get("title") or ""), str(body.get("detail") or "")]
        for error in body.get("errors") or []:
            if isinstance(error, dict):
                parts.append(f"{error.get('field')}: {error.get('reason')}")
        text = "; ".join(p for p in parts if p)
        if text:
            return f"HTTP {response.status_code}: {text}"
    return f"HTTP {response.status_code}: {str(body)[:300]}"


class Demo:
    """One run of the demo journey; `out` receives the printed lines."""

    def __init__(
        self,
        config: DemoConfig,
        *,
        out: Callable[[str], None] = print,
        http: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.out = out
        self.http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))
        self.run_id = uuid.uuid4().hex[:10]
        self.borrower = config.sme_user_id or f"acme-trading-{self.run_id}"
        self.payout_serial = f"{int(self.run_id, 16) % 10**9:09d}"
        self.result = DemoResult()
        self._number = 0
        self.step = "preflight"  # the step under way, for errors nobody anticipated
        self._auth = {"Authorization": f"Bearer {config.token}"}

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, step: str, method: str, url: str, *, expect: tuple[int, ...] = (200,), **kw: Any) -> Any:
        self.step = step
        try:
            response = self.http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise DemoError(step, f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code not in expect:
            raise DemoError(step, f"{method} {url} -> {_problem(response)}")
        return response.json()

    def _api(self, step: str, method: str, path: str, **kw: Any) -> Any:
        headers = {**self._auth, **kw.pop("headers", {})}
        return self._call(step, method, f"{self.config.gateway_url}{path}", headers=headers, **kw)

    def _sim(self, step: str, method: str, path: str, **kw: Any) -> Any:
        return self._call(step, method, f"{self.config.simulator_url}{path}", **kw)

    def _until(self, step: str, what: str, check: Callable[[], T | None], every: float = 0.25) -> T:
        deadline = time.monotonic() + self.config.step_timeout_s
        last: Any = None
        while True:
            try:
                value = check()
            except _NotYet as pending:
                value, last = None, pending.seen
            if value:
                return value
            if time.monotonic() > deadline:
                seen = f" (last seen: {last})" if last is not None else ""
                raise DemoError(
                    step, f"timed out after {self.config.step_timeout_s:.0f}s waiting for {what}{seen}"
                )
            time.sleep(every)

    def _print(self, label: str, text: str, tx: str | None = None) -> None:
        self._number += 1
        where = f"tx {tx}" if tx else "off-chain"
        self.out(f"{self._number:>2}. {label:<16} {text}")
        self.out(f"    {'':<16} {where}")

    def _loan(self, step: str) -> dict[str, Any]:
        return self._api(step, "GET", f"/v1/loans/{self.result.loan_id}")

    def _event(self, step: str, event: str, **args: Any) -> dict[str, Any]:
        """Wait until the indexer shows `event` for this loan (with these args); return it."""

        def found() -> dict[str, Any] | None:
            loan = self._loan(step)
            for tx in loan.get("transactions") or []:
                if tx["event"] == event and all(
                    str(tx["args"].get(k)).lower() == str(v).lower() for k, v in args.items()
                ):
                    return tx
            raise _NotYet(f"chain_state {loan.get('chain_state')}, events {_events(loan)}")

        return self._until(step, f"{event} on chain", found)

    # -- the journey ---------------------------------------------------------------------------

    def run(self) -> DemoResult:
        started = time.monotonic()
        self._preflight()
        application = self._apply()
        offer = self._decide(application)
        self._offer(offer)
        self._accept(offer)
        self._approve()
        self._payout()
        self._repay()
        self._confirm_on_chain()
        self.result.seconds = time.monotonic() - started
        self.out(
            f"done in {self.result.seconds:.1f}s: loan {self.result.loan_id} is {self.result.chain_state} "
            f"on chain; audit it with `caas audit {self.result.chain_loan_id}`"
        )
        return self.result

    def _preflight(self) -> None:
        cfg = self.config
        for name, url in (("gateway", cfg.gateway_url), ("simulator", cfg.simulator_url)):
            try:
                ready = self.http.get(f"{url}/health/ready", timeout=10)
            except httpx.HTTPError as exc:
                raise DemoError(
                    "preflight",
                    f"cannot reach the {name} at {url} ({type(exc).__name__}): is `caas up` running?",
                ) from exc
            if ready.status_code != 200:
                raise DemoError("preflight", f"the {name} at {url} is not ready: {_problem(ready)}")
        self.out(
            f"caas demo {self.run_id}: gateway {cfg.gateway_url}, simulator {cfg.simulator_url}, "
            f"chain {cfg.chain_rpc_url or '(via the gateway)'}"
        )

    def _apply(self) -> dict[str, Any]:
        cfg = self.config
        step = "application"
        created = self._api(
            step,
            "POST",
            "/v1/applications",
            expect=(201,),
            json={
                "external_id": f"demo-{self.run_id}",
                "borrower": {"sme_user_id": self.borrower},
                "amount": {"value": cfg.amount, "currency": "NGN"},
                "tenor_months": cfg.tenor_months,
                "purpose": "inventory",
            },
            headers={"Idempotency-Key": f"demo-{self.run_id}-application"},
        )
        self._print(
            step,
            f"{created['id']} {created['status']}: {money(cfg.amount)} over {cfg.tenor_months} months "
            f"for SME user {self.borrower}",
        )
        return created

    def _decide(self, application: dict[str, Any]) -> dict[str, Any]:
        step = "decision"

        def decided() -> dict[str, Any] | None:
            body = self._api(step, "GET", f"/v1/applications/{application['id']}")
            if body["status"] in ("submitted", "underwriting"):
                raise _NotYet(f"status {body['status']}")
            return body

        body = self._until(step, "the underwriting decision", decided)
        decision = body.get("decision") or {}
        reasons = ", ".join(
            str(r.get("code") if isinstance(r, dict) else r) for r in decision.get("reasons") or []
        )
        if body["status"] != "offered" or not body.get("offers"):
            raise DemoError(step, f"the application was {body['status']} ({reasons or 'no reasons given'})")
        self._print(
            step,
            f"{body['status']}: score {decision.get('score')}, risk {decision.get('risk_rating')}"
            + (f", reasons {reasons}" if reasons else ""),
        )
        return body["offers"][0]

    def _offer(self, offer: dict[str, Any]) -> None:
        amount, total = offer["amount"], offer["total_due"]
        installments = len(offer.get("schedule") or [])
        apr = int(offer["apr_bps"])
        self._print(
            "offer",
            f"{offer['id']}: {money(amount['value'], amount['currency'])} at APR "
            f"{apr // 100}.{apr % 100:02d}%, {installments} installments, total due "
            f"{money(total['value'], total['currency'])}",
        )

    def _accept(self, offer: dict[str, Any]) -> None:
        step = "acceptance"
        accepted = self._api(
            step,
            "POST",
            f"/v1/offers/{offer['id']}/accept",
            expect=(200, 201),
            json={
                "payout": {
                    "method": "bank_transfer",
                    "account_number": valid_nuban(serial=self.payout_serial),
                    "bank_code": PAYOUT_BANK_CODE,
                }
            },
            headers={"Idempotency-Key": f"demo-{self.run_id}-accept"},
        )
        self.result.loan_id = accepted["loan_id"]
        self.result.chain_loan_id = accepted["chain_loan_id"]
        created = self._event(step, "LoanCreated")
        self.result.tx_hashes["LoanCreated"] = created["tx_hash"]
        self._print(
            step,
            f"loan {self.result.loan_id} = chain id {self.result.chain_loan_id}; "
            "LoanBook.create_loan -> PENDING",
            created["tx_hash"],
        )

    def _approve(self) -> None:
        loan_id = self.result.loan_id
        request = self._api("signatures", "GET", f"/v1/loans/{loan_id}/approval-request")
        required = int(request["required"])
        keys = self.config.signer_keys
        if len(keys) < required:
            raise DemoError(
                "signatures", f"the committee needs {required} signatures but SIGNER_KEYS holds {len(keys)}"
            )
        from offchain.chain.contracts import sign_approval

        for number, key in enumerate(keys[:required], start=1):
            step = f"signature {number}/{required}"
            signer, signature = sign_approval(request["typed_data"], key)
            added = self._api(
                step,
                "POST",
                f"/v1/loans/{loan_id}/approvals",
                json={"signer": signer, "signature": "0x" + signature.hex()},
            )
            if number < required:
                self._print(
                    step,
                    f"signer {signer} signed ApproveDisbursement (EIP-712); {added['approvals']}"
                    f"/{added['required']} approvals",
                )
                continue
            if not added.get("submitted"):
                raise DemoError(step, f"threshold reached but nothing was submitted: {added}")
            approved = self._event(step, "LoanApproved")
            self.result.tx_hashes["LoanApproved"] = approved["tx_hash"]
            self._print(
                step,
                f"signer {signer} signed; {added['approvals']}/{added['required']}: "
                "committee.approve_with_signatures -> APPROVED",
                approved["tx_hash"],
            )

    def _payout(self) -> None:
        step = "payout"
        disbursed = self._event(step, "LoanDisbursed")

        def paid() -> dict[str, Any] | None:
            payout = self._api(step, "GET", f"/v1/payouts/{self.result.loan_id}")
            if payout["status"] != "succeeded":
                raise _NotYet(f"payout {payout['status']}")
            return payout

        payout = self._until(step, "the payout to succeed", paid)
        self.result.tx_hashes["LoanDisbursed"] = disbursed["tx_hash"]
        self._print(
            step,
            f"{money(payout['amount']['value'], payout['amount']['currency'])} by Paystack transfer "
            f"{payout['reference']} ({payout['provider_status'] or payout['status']}); "
            "record_disbursement -> ACTIVE",
            disbursed["tx_hash"],
        )

    def _repay(self) -> None:
        loan = self._loan("repayments")
        total = int(loan["outstanding"]["value"])
        currency = loan["outstanding"]["currency"]
        first = total // 3
        parts = [first, first, total - 2 * first]
        for number, amount in enumerate(parts, start=1):
            step = f"repayment {number}/3"
            reference = f"demo-{self.run_id}-r{number}"
            twice = number == 1
            if twice:
                # the provider's webhook for this charge arrives twice; the chain must see it once
                self._sim(
                    step,
                    "POST",
                    "/simulate/scenario",
                    json={"webhook": {"fault": "duplicate", "event": "charge.success"}},
                )
            self._sim(
                step,
                "POST",
                "/simulate/charge",
                expect=(201,),
                json={
                    "amount": amount,
                    "currency": currency,
                    "loan_id": self.result.loan_id,
                    "reference": reference,
                },
            )
            payment = self._recorded(step, reference)
            recorded = self._event(step, "RepaymentRecorded", payment_ref=payment["payment_ref"])
            if int(recorded["args"]["amount"]) != amount:
                raise DemoError(step, f"charged {amount} but the chain recorded {recorded['args']['amount']}")
            self.result.tx_hashes[f"RepaymentRecorded:{number}"] = recorded["tx_hash"]
            note = ""
            if twice:
                note = "; " + self._delivered_twice_recorded_once(step, reference, payment["payment_ref"])
            self._print(
                step,
                f"{money(amount, currency)} Paystack charge {reference}{note}; record_repayment, "
                f"outstanding {money(int(recorded['args']['outstanding_after']), currency)}",
                recorded["tx_hash"],
            )

    def _recorded(self, step: str, reference: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            payments = self._api(step, "GET", "/v1/payments", params={"limit": 200})["data"]
            mine = [p for p in payments if p["reference"] == reference]
            if not mine:
                raise _NotYet("no payment yet")
            if mine[0]["status"] in ("unmatched", "failed", "rejected", "reversed"):
                raise DemoError(step, f"payment {reference} is {mine[0]['status']}: {mine[0].get('detail')}")
            if mine[0]["status"] != "recorded" or not mine[0].get("recorded_tx"):
                raise _NotYet(f"payment {mine[0]['status']}")
            return mine[0]

        return self._until(step, f"payment {reference} to be recorded on chain", found)

    def _delivered_twice_recorded_once(self, step: str, reference: str, payment_ref: str) -> str:
        def both() -> list[dict[str, Any]] | None:
            deliveries = self._sim(
                step, "GET", "/simulate/webhooks", params={"event": "charge.success", "reference": reference}
            )
            done = [d for d in deliveries if d["state"] == "delivered"]
            if len(done) < 2:
                raise _NotYet(f"{len(done)} deliveries done")
            return done

        deliveries = self._until(step, "the duplicated webhook to be delivered twice", both)
        events = [
            tx
            for tx in self._loan(step).get("transactions") or []
            if tx["event"] == "RepaymentRecorded"
            and str(tx["args"].get("payment_ref")).lower() == payment_ref.lower()
        ]
        if len(events) != 1:
            raise DemoError(step, f"the twice-delivered charge was recorded {len(events)} times on chain")
        return f"webhook delivered {len(deliveries)}x, recorded once"

    def _confirm_on_chain(self) -> None:
        step = "REPAID"
        repaid = self._event(step, "LoanRepaid")
        self.result.tx_hashes["LoanRepaid"] = repaid["tx_hash"]
        state, outstanding, source = self._read_chain(step)
        self.result.chain_state, self.result.outstanding = state, outstanding
        if state != "REPAID" or outstanding != 0:
            raise DemoError(step, f"the chain says {state}, outstanding {outstanding}")
        self._print(
            step, f"LoanRepaid; {source}: state {state}, outstanding {outstanding}", repaid["tx_hash"]
        )

    def _read_chain(self, step: str) -> tuple[str, int, str]:
        """State and outstanding straight from LoanBook; the gateway's audit (which reads the
        chain itself) when this machine has no deployment file, e.g. against docker compose."""
        cfg = self.config
        chain_id = bytes.fromhex(self.result.chain_loan_id.removeprefix("0x"))
        if cfg.chain_rpc_url and cfg.deployment_file and Path(cfg.deployment_file).is_file():
            from offchain.chain.contracts import Deployment
            from offchain.chain.jsonrpc import JsonRpc
            from offchain.domain.loan_book import LoanState

            deployment = Deployment.load(cfg.deployment_file)
            book = deployment.loan_book_contract
            rpc_url = cfg.chain_rpc_url

            async def read() -> tuple[int, int]:
                rpc = JsonRpc(rpc_url, timeout_s=30)
                try:
                    answers = await book.call_many(
                        rpc, [("loan_state", [chain_id]), ("outstanding", [chain_id])]
                    )
                finally:
                    await rpc.aclose()
                return answers[0][0], answers[1][0]

            try:
                state, outstanding = asyncio.run(read())
            except Exception as exc:  # the node is away, or the call failed: "could not read"
                raise DemoError(
                    step, f"reading LoanBook at {deployment.loan_book_address} failed: {exc}"
                ) from exc
            return LoanState(state).name, int(outstanding), f"LoanBook {deployment.loan_book_address} says"
        report = self._api(step, "GET", f"/v1/audit/loans/{self.result.loan_id}")
        onchain = report.get("onchain") or {}
        return (
            str(onchain.get("state_name")),
            int(onchain.get("outstanding", -1)),
            "the chain (read by /v1/audit) says",
        )


class _NotYet(Exception):
    """Not there yet; `seen` is what a timeout reports."""

    def __init__(self, seen: str) -> None:
        super().__init__(seen)
        self.seen = seen


def _events(loan: dict[str, Any]) -> list[str]:
    return [tx["event"] for tx in loan.get("transactions") or []]


def run_demo(config: DemoConfig, out: Callable[[str], None] = print) -> DemoResult:
    demo = Demo(config, out=out)
    try:
        return demo.run()
    except DemoError:
        raise
    except Exception as exc:  # an answer of an unexpected shape: still one line naming the step
        raise DemoError(demo.step, f"unexpected {type(exc).__name__}: {exc}") from exc
    finally:
        demo.http.close()
