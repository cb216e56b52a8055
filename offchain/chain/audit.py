"""An auditor's view of one loan, read straight from the chain.

Reads the LoanBook's stored state, fetches every log of the loan with plain `eth_getLogs`, decodes
them, recomputes `event_chain` and says whether the logs in hand are complete.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from offchain.chain.contracts import Deployment
from offchain.chain.jsonrpc import JsonRpc, RpcError, hex_int
from offchain.domain import event_chain
from offchain.domain.loan_book import LoanState


@dataclass
class LoanAudit:
    loan_id: bytes
    state: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    onchain_event_chain: bytes = b""
    recomputed_event_chain: bytes = b""

    @property
    def complete(self) -> bool:
        return self.onchain_event_chain == self.recomputed_event_chain


async def fetch_loan_logs(
    rpc: JsonRpc, deployment: Deployment, loan_id: bytes, chunk: int = 50_000
) -> list[dict[str, Any]]:
    """Every LoanBook log whose first indexed topic is `loan_id`, in emission order."""
    head = hex_int(await rpc.call("eth_blockNumber"))
    logs: list[dict[str, Any]] = []
    start = deployment.loan_book_block
    while start <= head:
        end = min(start + chunk - 1, head)
        logs.extend(
            await rpc.call(
                "eth_getLogs",
                {
                    "address": deployment.loan_book_address,
                    "fromBlock": hex(start),
                    "toBlock": hex(end),
                    "topics": [None, "0x" + loan_id.hex()],
                },
            )
        )
        start = end + 1
    return sorted(logs, key=lambda log: (hex_int(log["blockNumber"]), hex_int(log["logIndex"])))


def _raw(log: dict[str, Any]) -> tuple[list[bytes], bytes]:
    return [bytes.fromhex(t[2:]) for t in log["topics"]], bytes.fromhex(str(log["data"])[2:])


async def read_loan_audit(rpc: JsonRpc, deployment: Deployment, loan_id: bytes) -> LoanAudit:
    book = deployment.loan_book_contract
    raw_state, onchain_chain = await book.call_many(rpc, [("loans", [loan_id]), ("event_chain", [loan_id])])
    state = dict(zip(book.function("loans").output_fields(), raw_state[0], strict=True))
    state["state_name"] = LoanState(state["state"]).name
    logs = await fetch_loan_logs(rpc, deployment, loan_id)
    events = []
    for log in logs:
        topics, data = _raw(log)
        decoded = book.decode_log(topics, data)
        events.append(
            {
                "event": decoded.event,
                "block": hex_int(log["blockNumber"]),
                "tx": str(log["transactionHash"]).removeprefix("0x"),  # as HexBytes.hex() wrote it
                "args": decoded.args,
            }
        )
    return LoanAudit(
        loan_id=loan_id,
        state=state,
        events=events,
        onchain_event_chain=bytes(onchain_chain[0]),
        recomputed_event_chain=event_chain.recompute(_raw(log) for log in logs),
    )


def audit_loan(rpc_url: str, deployment: Deployment, loan_id: bytes, *, timeout_s: float = 30.0) -> LoanAudit:
    """`read_loan_audit` for synchronous callers (`caas audit`, scripts/audit_loan.py, a worker
    thread of the gateway): its own client, closed after."""

    async def read() -> LoanAudit:
        rpc = JsonRpc(rpc_url, timeout_s=timeout_s)
        try:
            return await read_loan_audit(rpc, deployment, loan_id)
        finally:
            await rpc.aclose()

    return asyncio.run(read())


__all__ = ["LoanAudit", "RpcError", "audit_loan", "fetch_loan_logs", "read_loan_audit"]
