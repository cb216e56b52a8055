"""What collections reads from and writes to the chain: batched LoanBook views, calldata.

Reads go out as JSON-RPC batches (three views per loan), so a close of business over thousands of
loans is a handful of round trips. Writes are never sent from here: the use cases hand calldata to
the transaction sender (`offchain.chain.sender.submit`) inside their own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.domain.collections import LoanSnapshot
from offchain.domain.loan_book import LoanState


class ChainReadError(RuntimeError):
    """A view call failed: the close of business of that loan waits for the next run."""


@dataclass
class LoanBookClient:
    deployment: Deployment
    rpc: JsonRpc

    def __post_init__(self) -> None:
        # the typed bindings of offchain.chain.binding, built once per deployment
        self.book = self.deployment.loan_book_contract
        self.committee = self.deployment.committee_contract

    # -- reads -------------------------------------------------------------------------------

    def _decode(self, contract: Any, name: str, raw: Any) -> tuple[Any, ...]:
        if isinstance(raw, RpcError):
            raise ChainReadError(f"{name}: {raw.message}")
        return tuple(contract.decode(name, raw))

    async def head_timestamp(self) -> int:
        block = await self.rpc.call("eth_getBlockByNumber", "latest", False)
        return hex_int(block["timestamp"])

    async def default_after_days(self) -> int:
        method, params = self.book.call_request("default_after_days")
        raw = await self.rpc.call(method, *params)
        return int(self._decode(self.book, "default_after_days", raw)[0])

    async def committee_signers(self) -> list[str]:
        method, params = self.committee.call_request("signers")
        raw = await self.rpc.call(method, *params)
        return [address.lower() for address in self._decode(self.committee, "signers", raw)[0]]

    async def snapshots(self, loan_ids: Sequence[str], at: int) -> dict[str, LoanSnapshot | ChainReadError]:
        """`loans`, `amount_due(at)` and `days_past_due(at)` of every loan, in batches."""
        calls = []
        for loan_id in loan_ids:
            raw_id = bytes.fromhex(loan_id[2:])
            calls += [
                self.book.call_request("loans", raw_id),
                self.book.call_request("amount_due", raw_id, at),
                self.book.call_request("days_past_due", raw_id, at),
            ]
        results = await self.rpc.batch(calls)
        out: dict[str, LoanSnapshot | ChainReadError] = {}
        names = self.book.function("loans").output_fields()
        for n, loan_id in enumerate(loan_ids):
            loans_raw, due_raw, dpd_raw = results[3 * n : 3 * n + 3]
            try:
                fields = dict(zip(names, self._decode(self.book, "loans", loans_raw)[0], strict=True))
                out[loan_id] = LoanSnapshot(
                    state=LoanState(fields["state"]),
                    currency=fields["currency"],
                    principal=fields["principal"],
                    total_due=fields["total_due"],
                    installment_count=fields["installment_count"],
                    installment_interval=fields["installment_interval"],
                    grace_period=fields["grace_period"],
                    max_late_fees=fields["max_late_fees"],
                    disbursed_at=fields["disbursed_at"],
                    scheduled_repaid=fields["scheduled_repaid"],
                    late_fees_assessed=fields["late_fees_assessed"],
                    late_fees_paid=fields["late_fees_paid"],
                    outstanding=fields["outstanding"],
                    amount_due=int(self._decode(self.book, "amount_due", due_raw)[0]),
                    days_past_due=int(self._decode(self.book, "days_past_due", dpd_raw)[0]),
                    at=at,
                )
            except ChainReadError as error:
                out[loan_id] = error
        return out

    # -- calldata ------------------------------------------------------------------------------

    def assess_late_fee(self, loan_id: str, amount: int, fee_ref: bytes) -> str:
        return self.book.assess_late_fee(bytes.fromhex(loan_id[2:]), amount, fee_ref)

    def mark_default(self, loan_id: str) -> str:
        return self.book.mark_default(bytes.fromhex(loan_id[2:]))

    def propose_write_off(self, loan_id: str, expires_at: int) -> str:
        return self.committee.propose_write_off(bytes.fromhex(loan_id[2:]), expires_at)
