"""An auditor's view of one loan, read straight from the chain.

Reads the LoanBook's stored state, fetches every log of the loan with plain `eth_getLogs`, decodes
them, recomputes `event_chain` and says whether the logs in hand are complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3._utils.events import get_event_data

from offchain.chain.contracts import Deployment
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


def _event_abis(abi: list[dict]) -> dict[bytes, dict]:
    from eth_utils import event_abi_to_log_topic

    return {event_abi_to_log_topic(item): item for item in abi if item.get("type") == "event"}


def fetch_loan_logs(w3: Web3, deployment: Deployment, loan_id: bytes, chunk: int = 50_000) -> list[Any]:
    """Every LoanBook log whose first indexed topic is `loan_id`, in emission order."""
    head = w3.eth.block_number
    logs: list[Any] = []
    start = deployment.loan_book_block
    while start <= head:
        end = min(start + chunk - 1, head)
        logs.extend(
            w3.eth.get_logs(
                {
                    "address": deployment.loan_book_address,
                    "fromBlock": start,
                    "toBlock": end,
                    "topics": [None, "0x" + loan_id.hex()],
                }
            )
        )
        start = end + 1
    return sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))


def audit_loan(w3: Web3, deployment: Deployment, loan_id: bytes) -> LoanAudit:
    book = deployment.loan_book(w3)
    raw = book.functions.loans(loan_id).call()
    names = [
        item["name"]
        for item in next(fn for fn in deployment.loan_book_abi if fn.get("name") == "loans")["outputs"][0][
            "components"
        ]
    ]
    state = dict(zip(names, raw, strict=True))
    state["state_name"] = LoanState(state["state"]).name
    logs = fetch_loan_logs(w3, deployment, loan_id)
    abis = _event_abis(deployment.loan_book_abi)
    events = []
    for log in logs:
        decoded = get_event_data(w3.codec, abis[bytes(log["topics"][0])], log)
        events.append(
            {
                "event": decoded["event"],
                "block": log["blockNumber"],
                "tx": log["transactionHash"].hex(),
                "args": dict(decoded["args"]),
            }
        )
    return LoanAudit(
        loan_id=loan_id,
        state=state,
        events=events,
        onchain_event_chain=bytes(book.functions.event_chain(loan_id).call()),
        recomputed_event_chain=event_chain.recompute((log["topics"], log["data"]) for log in logs),
    )
