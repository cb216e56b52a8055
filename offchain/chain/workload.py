"""Drive a deployed LoanBook + committee with raw signed transactions, in bulk: for tests,
benchmarks and local demos on Anvil (never a path production takes).

Transactions are signed locally with explicit nonces and fixed gas limits and sent as JSON-RPC
batches, so thousands go out per second; `send` then checks every receipt. The same signed
transactions can instead be handed to `anvil_reorg`, which is how the reorg tests replace a
piece of history with a different one.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, keccak

from offchain.chain.contracts import Deployment, sign_approval, sort_signatures
from offchain.domain.approvals import ApprovalTerms, approval_typed_data
from offchain.domain.loan_book import SECONDS_PER_DAY

GAS = {
    "create_loan": 300_000,
    "approve": 200_000,
    "approve_with_signatures": 250_000,
    "propose": 250_000,
    "confirm": 100_000,
    "execute": 200_000,
}
DEFAULT_GAS = 150_000
MAX_FEE = 50 * 10**9
WRITE_OFF_ACTION = 5
PAUSE_ACTION, UNPAUSE_ACTION = 7, 8  # DisbursementCommittee.ACTION_PAUSE / ACTION_UNPAUSE


def _type(item: dict[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in item["components"]) + ")" + kind[5:]
    return kind


class Rpc:
    """Synchronous JSON-RPC with batches (the workload runs beside, not inside, the indexer)."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.client = httpx.Client(timeout=timeout_s)
        self.url = url
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        payload = self.client.post(self.url, json=body).json()
        if payload.get("error"):
            raise RuntimeError(f"{method}: {payload['error']}")
        return payload.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], chunk: int = 500) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(calls), chunk):
            part = calls[start : start + chunk]
            first = next(self._ids)
            body = [
                {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)}
                for i, (m, p) in enumerate(part)
            ]
            for _ in range(len(part)):
                next(self._ids)
            answers = {item["id"]: item for item in self.client.post(self.url, json=body).json()}
            for i, (method, _) in enumerate(part):
                item = answers[first + i]
                if item.get("error"):
                    raise RuntimeError(f"{method}: {item['error']}")
                out.append(item.get("result"))
        return out

    def close(self) -> None:
        self.client.close()


class _Contract:
    def __init__(self, address: str, abi: list[dict[str, Any]]) -> None:
        self.address = address
        self.functions = {
            item["name"]: (
                function_abi_to_4byte_selector(item),  # type: ignore[arg-type]
                [_type(arg) for arg in item["inputs"]],
            )
            for item in abi
            if item.get("type") == "function"
        }

    def calldata(self, name: str, *args: Any) -> str:
        selector, types = self.functions[name]
        return "0x" + (selector + abi_encode(types, list(args))).hex()


@dataclass
class LoanTerms:
    loan_id: bytes
    principal: int
    total_due: int
    installment_count: int = 3
    installment_interval: int = 30 * SECONDS_PER_DAY
    grace_period: int = 3 * SECONDS_PER_DAY
    max_late_fees: int = 50_000
    currency: int = 566
    borrower_ref: bytes = field(default_factory=lambda: keccak(text=f"borrower:{uuid.uuid4()}"))
    partner_ref: bytes = field(default_factory=lambda: keccak(text="partner:dev"))
    payout_ref: bytes = field(default_factory=lambda: keccak(text=f"payout:{uuid.uuid4()}"))
    terms_hash: bytes = field(default_factory=lambda: keccak(text=f"terms:{uuid.uuid4()}"))

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.borrower_ref,
            self.partner_ref,
            self.currency,
            self.principal,
            self.total_due,
            self.installment_count,
            self.installment_interval,
            self.grace_period,
            self.max_late_fees,
            self.payout_ref,
            self.terms_hash,
        )

    def approval_terms(self) -> ApprovalTerms:
        """What the committee's signers approve for this loan."""
        return ApprovalTerms(
            terms_hash=self.terms_hash,
            currency=self.currency,
            principal=self.principal,
            total_due=self.total_due,
            installment_count=self.installment_count,
            installment_interval=self.installment_interval,
            grace_period=self.grace_period,
            max_late_fees=self.max_late_fees,
            payout_ref=self.payout_ref,
        )


def new_loan_id() -> bytes:
    return keccak(text=str(uuid.uuid4()))


def ref(text: str) -> bytes:
    return keccak(text=text)


class Workload:
    """Signs and sends LoanBook / committee transactions for the dev accounts it is given."""

    def __init__(
        self,
        rpc_url: str,
        deployment: Deployment,
        *,
        sender_key: str,
        signer_keys: Sequence[str],
    ) -> None:
        self.rpc = Rpc(rpc_url)
        self.deployment = deployment
        self.chain_id = deployment.chain_id
        self.book = _Contract(deployment.loan_book_address, deployment.loan_book_abi)
        self.committee = _Contract(deployment.committee_address, deployment.committee_abi)
        self.sender: LocalAccount = Account.from_key(sender_key)
        self.signer_keys = list(signer_keys)
        self.signers: list[LocalAccount] = [Account.from_key(key) for key in signer_keys]
        self.nonces: dict[str, int] = {}
        self.terms: dict[bytes, LoanTerms] = {}
        self.proposals = 0
        self.sync_nonces()

    # -- plumbing -----------------------------------------------------------------------------

    def sync_nonces(self) -> None:
        """Re-read nonces from the chain (after a reorg or revert rewound them)."""
        accounts = [self.sender, *self.signers]
        counts = self.rpc.batch([("eth_getTransactionCount", [a.address, "pending"]) for a in accounts])
        self.nonces = {a.address: int(c, 16) for a, c in zip(accounts, counts, strict=True)}
        self.proposals = int(self.call(self.committee, "proposal_count"), 16)

    def call(self, contract: _Contract, name: str, *args: Any) -> str:
        return str(
            self.rpc.call(
                "eth_call", {"to": contract.address, "data": contract.calldata(name, *args)}, "latest"
            )
        )

    def sign(self, account: LocalAccount, contract: _Contract, name: str, *args: Any) -> str:
        nonce = self.nonces[account.address]
        self.nonces[account.address] = nonce + 1
        tx: dict[str, Any] = {
            "to": contract.address,
            "data": contract.calldata(name, *args),
            "value": 0,
            "gas": GAS.get(name, DEFAULT_GAS),
            "maxFeePerGas": MAX_FEE,
            "maxPriorityFeePerGas": 0,
            "nonce": nonce,
            "chainId": self.chain_id,
        }
        return "0x" + account.sign_transaction(tx).raw_transaction.hex()

    def send(self, raws: Sequence[str], *, check: bool = True) -> list[str]:
        """Broadcast (in batches) and, with `check`, require every receipt to show success."""
        hashes = [str(h) for h in self.rpc.batch([("eth_sendRawTransaction", [raw]) for raw in raws])]
        if check:
            self.check(hashes, raws=dict(zip(hashes, raws, strict=True)))
        return hashes

    def send_in_blocks(self, raws: Sequence[str], *, per_block: int = 200) -> list[str]:
        """Mine `per_block` transactions to a block (automine paused meanwhile): the fast way to
        a long history. Keep per_block * gas under the block gas limit (30M on Anvil)."""
        hashes: list[str] = []
        self.set_automine(False)
        try:
            for start in range(0, len(raws), per_block):
                hashes += self.send(raws[start : start + per_block], check=False)
                self.mine()
        finally:
            self.set_automine(True)
        self.check(hashes)
        return hashes

    def send_one_by_one(self, raws: Sequence[str]) -> list[str]:
        """One transaction per block under automine (a batch may share blocks)."""
        return [self.send([raw])[0] for raw in raws]

    def check(
        self, hashes: Sequence[str], *, timeout_s: float = 60.0, raws: dict[str, str] | None = None
    ) -> None:
        """Wait for every receipt (Anvil mines asynchronously even under automine); all must succeed.

        On a loaded machine Anvil occasionally leaves an accepted transaction in its pool: after a
        couple of seconds the stragglers are sent again (same bytes, so at most one mines) and a
        block is mined to pick them up."""
        deadline = time.monotonic() + timeout_s
        nudge_at = time.monotonic() + 2.0
        pending = list(hashes)
        while pending:
            receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in pending])
            failed = [
                h for h, r in zip(pending, receipts, strict=True) if r is not None and r["status"] != "0x1"
            ]
            if failed:
                raise RuntimeError(f"{len(failed)} of {len(hashes)} transactions reverted, e.g. {failed[0]}")
            pending = [h for h, r in zip(pending, receipts, strict=True) if r is None]
            if pending:
                if time.monotonic() > deadline:
                    pool = None
                    with contextlib.suppress(RuntimeError):
                        pool = self.rpc.call("txpool_status")
                    raise RuntimeError(
                        f"{len(pending)} of {len(hashes)} transactions unmined after {timeout_s} s"
                        f" (node pool: {pool}, e.g. {pending[0]})"
                    )
                if time.monotonic() > nudge_at:
                    nudge_at = time.monotonic() + 2.0
                    for tx_hash in pending:
                        if raws and tx_hash in raws:
                            with contextlib.suppress(RuntimeError):  # "already known" is fine
                                self.rpc.call("eth_sendRawTransaction", raws[tx_hash])
                    with contextlib.suppress(RuntimeError):
                        self.rpc.call("evm_mine")
                time.sleep(0.01)

    def head(self) -> int:
        return int(self.rpc.call("eth_blockNumber"), 16)

    def block(self, number: int | str = "latest") -> dict[str, Any]:
        tag = hex(number) if isinstance(number, int) else number
        return dict(self.rpc.call("eth_getBlockByNumber", tag, False))

    def mine(self, blocks: int = 1) -> None:
        self.rpc.call("anvil_mine", hex(blocks))

    def warp(self, seconds: int) -> None:
        """Move chain time forward and mine a block there."""
        self.rpc.call("evm_increaseTime", hex(seconds))
        self.mine()

    def set_automine(self, on: bool) -> None:
        self.rpc.call("evm_setAutomine", on)

    def automine(self) -> bool:
        return bool(self.rpc.call("anvil_getAutomine"))

    def reorg(self, depth: int, txs: Sequence[tuple[str, int]]) -> None:
        """Replace the last `depth` blocks with new ones holding `txs` ((raw, block offset))."""
        self.rpc.call("anvil_reorg", depth, [[raw, offset] for raw, offset in txs])
        self.sync_nonces()

    def close(self) -> None:
        self.rpc.close()

    # -- LoanBook -----------------------------------------------------------------------------

    def create_loan(self, terms: LoanTerms) -> str:
        self.terms[terms.loan_id] = terms
        return self.sign(self.sender, self.book, "create_loan", terms.loan_id, terms.as_tuple())

    def approve(self, loan_id: bytes, signer: int) -> str:
        return self.sign(self.signers[signer], self.committee, "approve", loan_id)

    def approve_with_signatures(
        self, loan_id: bytes, signers: Sequence[int], *, epoch: int, deadline: int
    ) -> str:
        terms = self.terms[loan_id]
        typed = approval_typed_data(
            chain_id=self.chain_id,
            committee=self.committee.address,
            loan_id=loan_id,
            terms=terms.approval_terms(),
            epoch=epoch,
            deadline=deadline,
        )
        signed = [sign_approval(typed, self.signer_keys[i]) for i in signers]
        return self.sign(
            self.sender, self.committee, "approve_with_signatures", loan_id, deadline, sort_signatures(signed)
        )

    def disburse(self, loan_id: bytes) -> str:
        terms = self.terms[loan_id]
        return self.sign(
            self.sender, self.book, "record_disbursement", loan_id, terms.principal, terms.payout_ref,
            ref(f"rail:{loan_id.hex()}"),
        )  # fmt: skip

    def repay(self, loan_id: bytes, amount: int, payment_ref: bytes) -> str:
        return self.sign(self.sender, self.book, "record_repayment", loan_id, amount, payment_ref)

    def reverse(
        self, loan_id: bytes, payment_ref: bytes, reason: bytes = b"chargeback".ljust(32, b"\0")
    ) -> str:
        return self.sign(self.sender, self.book, "reverse_repayment", loan_id, payment_ref, reason)

    def late_fee(self, loan_id: bytes, amount: int, fee_ref: bytes) -> str:
        return self.sign(self.sender, self.book, "assess_late_fee", loan_id, amount, fee_ref)

    def mark_default(self, loan_id: bytes) -> str:
        return self.sign(self.sender, self.book, "mark_default", loan_id)

    def cancel(self, loan_id: bytes, reason: bytes = b"withdrawn".ljust(32, b"\0")) -> str:
        return self.sign(self.sender, self.book, "cancel_loan", loan_id, reason)

    def write_off(self, loan_id: bytes, *, now: int) -> list[str]:
        """Committee governance: propose, confirm, execute (three transactions, in order)."""
        return self.govern(WRITE_OFF_ACTION, arg=loan_id, now=now)

    def govern(self, action: int, *, arg: bytes = b"\x00" * 32, now: int) -> list[str]:
        """A committee governance action by signers 0 and 1: propose, confirm, execute."""
        self.proposals += 1
        proposal = self.proposals
        zero = "0x" + "00" * 20
        return [
            self.sign(self.signers[0], self.committee, "propose", action, zero, arg, 0, now + 86_400),
            self.sign(self.signers[1], self.committee, "confirm", proposal),
            self.sign(self.signers[0], self.committee, "execute", proposal),
        ]

    def epoch(self) -> int:
        return int(self.call(self.committee, "epoch"), 16)

    def outstanding(self, loan_id: bytes) -> int:
        return int(self.call(self.book, "outstanding", loan_id), 16)


def active_loans(workload: Workload, count: int, *, principal: int = 1_000_000) -> list[bytes]:
    """`count` new loans, approved by signatures and disbursed: ready for repayments."""
    w = workload
    ids = [new_loan_id() for _ in range(count)]

    # Mined a batch to a block, not under automine: a burst of 40 under automine once left 15 in
    # Anvil's pool for over a minute on a loaded CI machine; an explicit evm_mine takes them all.
    # Under interval mining the blocks come anyway (and switching automine back on would end it).
    def send(raws: list[str]) -> None:
        if w.automine():
            w.send_in_blocks(raws, per_block=80)  # 80 x 300k gas stays under the 30M block limit
        else:
            w.send(raws)

    send([w.create_loan(LoanTerms(loan_id, principal, principal + principal // 10)) for loan_id in ids])
    epoch, deadline = w.epoch(), int(w.block()["timestamp"], 16) + 86_400
    send([w.approve_with_signatures(loan_id, [0, 1], epoch=epoch, deadline=deadline) for loan_id in ids])
    send([w.disburse(loan_id) for loan_id in ids])
    return ids


def lifecycle(workload: Workload, loans: int = 30, *, seed: int = 7) -> list[bytes]:
    """Take `loans` loans through every path of the book (under automine; about 8 transactions
    per loan): committee approval on chain and by signatures, cancellations, disbursement,
    partial and closing repayments, reversals (one reopening a repaid loan), late fees (paid
    first by the next repayment), defaults, recoveries after default and a write-off."""
    rng = random.Random(seed)
    w = workload
    ids = [new_loan_id() for _ in range(loans)]
    for loan_id in ids:
        principal = rng.randrange(100_000, 5_000_000)
        w.send([w.create_loan(LoanTerms(loan_id, principal, principal + principal // 10))])
    epoch = w.epoch()
    deadline = int(w.block()["timestamp"], 16) + 86_400
    raws = []
    for i, loan_id in enumerate(ids):
        if i % 10 == 9 or i == loans - 1:
            continue  # not approved
        if i % 2:
            raws += [w.approve(loan_id, 0), w.approve(loan_id, 1)]
        else:
            raws.append(w.approve_with_signatures(loan_id, [0, 2], epoch=epoch, deadline=deadline))
    w.send(raws)
    # every tenth loan is cancelled while pending, the one before it after approval; the last
    # two stay pending and approved
    held = {loans - 1, loans - 2}
    active = [loan_id for i, loan_id in enumerate(ids) if i % 10 not in (8, 9) and i not in held]
    w.send([w.cancel(loan_id) for i, loan_id in enumerate(ids) if i % 10 in (8, 9) and i not in held])
    w.send([w.disburse(loan_id) for loan_id in active])

    raws = []
    for i, loan_id in enumerate(active):
        terms = w.terms[loan_id]
        if i % 4 == 0:  # repaid in full at once
            raws.append(w.repay(loan_id, terms.total_due, ref(f"paystack:full-{loan_id.hex()}")))
        else:
            raws.append(w.repay(loan_id, terms.total_due // 5, ref(f"paystack:p1-{loan_id.hex()}")))
    w.send(raws)
    # chargebacks: one reopens a repaid loan, the others undo a partial payment
    w.send(
        [w.reverse(active[0], ref(f"paystack:full-{active[0].hex()}"))]
        + [w.reverse(loan_id, ref(f"paystack:p1-{loan_id.hex()}")) for loan_id in active[1:4]]
    )
    # past the first due date and its grace period
    w.warp(35 * SECONDS_PER_DAY)
    late = [loan_id for i, loan_id in enumerate(active) if i % 4 and i % 3 == 0]
    w.send(
        [
            w.late_fee(loan_id, 10_000 + 1_000 * n, ref(f"fee:{loan_id.hex()}:1"))
            for n, loan_id in enumerate(late)
        ]
    )
    w.send([w.repay(loan_id, 15_000, ref(f"paystack:fee-{loan_id.hex()}")) for loan_id in late])
    # far behind: defaults (default_after_days of the deployment) and a recovery after default
    w.warp(100 * SECONDS_PER_DAY)
    defaulted = [loan_id for i, loan_id in enumerate(active) if i % 4 and i % 5 == 1]
    w.send([w.mark_default(loan_id) for loan_id in defaulted])
    if defaulted:
        w.send([w.repay(defaulted[0], 7_777, ref(f"paystack:recovery-{defaulted[0].hex()}"))])
        if len(defaulted) > 1:
            # in order: an execute mined before its confirm would revert
            w.send_one_by_one(w.write_off(defaulted[-1], now=int(w.block()["timestamp"], 16)))
    return ids
