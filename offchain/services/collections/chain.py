"""What collections reads from and writes to the chain: batched LoanBook views, calldata.

Reads go out as JSON-RPC batches (three views per loan), so a close of business over thousands of
loans is a handful of round trips. Writes are never sent from here: the use cases hand calldata to
the transaction sender (`offchain.chain.sender.submit`) inside their own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_abi import decode as abi_decode
from eth_typing import ABIFunction
from eth_utils.abi import get_abi_output_types
from web3 import Web3

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.domain.collections import LoanSnapshot
from offchain.domain.loan_book import LoanState

ACTION_WRITE_OFF = 5
ZERO_ADDRESS = "0x" + "00" * 20


class ChainReadError(RuntimeError):
    """A view call failed: the close of business of that loan waits for the next run."""


@dataclass
class LoanBookClient:
    deployment: Deployment
    rpc: JsonRpc

    def __post_init__(self) -> None:
        w3 = Web3()
        self.book = w3.eth.contract(abi=self.deployment.loan_book_abi)
        self.committee = w3.eth.contract(abi=self.deployment.committee_abi)
        self._outputs = {
            item["name"]: (get_abi_output_types(cast(ABIFunction, item)), item["outputs"])
            for item in [*self.deployment.loan_book_abi, *self.deployment.committee_abi]
            if item.get("type") == "function"
        }

    # -- reads -------------------------------------------------------------------------------

    def _call(self, address: str, data: str) -> tuple[str, list[Any]]:
        return "eth_call", [{"to": address, "data": data}, "latest"]

    def _decode(self, name: str, raw: Any) -> tuple[Any, ...]:
        if isinstance(raw, RpcError):
            raise ChainReadError(f"{name}: {raw.message}")
        types, _ = self._outputs[name]
        return tuple(abi_decode(types, bytes.fromhex(str(raw)[2:])))

    async def head_timestamp(self) -> int:
        block = await self.rpc.call("eth_getBlockByNumber", "latest", False)
        return hex_int(block["timestamp"])

    async def default_after_days(self) -> int:
        data = self.book.encode_abi("default_after_days", args=[])
        method, params = self._call(self.deployment.loan_book_address, data)
        raw = await self.rpc.call(method, *params)
        return int(self._decode("default_after_days", raw)[0])

    async def committee_signers(self) -> list[str]:
        data = self.committee.encode_abi("signers", args=[])
        method, params = self._call(self.deployment.committee_address, data)
        raw = await self.rpc.call(method, *params)
        return [address.lower() for address in self._decode("signers", raw)[0]]

    async def snapshots(self, loan_ids: Sequence[str], at: int) -> dict[str, LoanSnapshot | ChainReadError]:
        """`loans`, `amount_due(at)` and `days_past_due(at)` of every loan, in batches."""
        address = self.deployment.loan_book_address
        calls = []
        for loan_id in loan_ids:
            raw_id = bytes.fromhex(loan_id[2:])
            calls += [
                self._call(address, self.book.encode_abi("loans", args=[raw_id])),
                self._call(address, self.book.encode_abi("amount_due", args=[raw_id, at])),
                self._call(address, self.book.encode_abi("days_past_due", args=[raw_id, at])),
            ]
        results = await self.rpc.batch(calls)
        out: dict[str, LoanSnapshot | ChainReadError] = {}
        names = [c["name"] for c in self._outputs["loans"][1][0]["components"]]
        for n, loan_id in enumerate(loan_ids):
            loans_raw, due_raw, dpd_raw = results[3 * n : 3 * n + 3]
            try:
                fields = dict(zip(names, self._decode("loans", loans_raw)[0], strict=True))
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
                    amount_due=int(self._decode("amount_due", due_raw)[0]),
                    days_past_due=int(self._decode("days_past_due", dpd_raw)[0]),
                    at=at,
                )
            except ChainReadError as error:
                out[loan_id] = error
        return out

    # -- calldata ------------------------------------------------------------------------------

    def assess_late_fee(self, loan_id: str, amount: int, fee_ref: bytes) -> str:
        args = [bytes.fromhex(loan_id[2:]), amount, fee_ref]
        return str(self.book.encode_abi("assess_late_fee", args=args))

    def mark_default(self, loan_id: str) -> str:
        return str(self.book.encode_abi("mark_default", args=[bytes.fromhex(loan_id[2:])]))

    def propose_write_off(self, loan_id: str, expires_at: int) -> str:
        return str(
            self.committee.encode_abi(
                "propose",
                args=[ACTION_WRITE_OFF, ZERO_ADDRESS, bytes.fromhex(loan_id[2:]), 0, expires_at],
            )
        )
