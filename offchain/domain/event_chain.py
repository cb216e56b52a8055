"""Recompute a loan's `event_chain` from its raw logs (DESIGN §3, LoanBook natspec).

chain_0 = 32 zero bytes
chain_n = keccak256(chain_{n-1} ++ topic_0 ++ topic_1 ++ ... ++ data)

over the loan's LoanBook logs in emission order (block number, log index).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eth_hash.auto import keccak

GENESIS = b"\x00" * 32


def link(previous: bytes, topics: Sequence[bytes], data: bytes) -> bytes:
    return keccak(previous + b"".join(bytes(t) for t in topics) + bytes(data))


def recompute(logs: Iterable[tuple[Sequence[bytes], bytes]]) -> bytes:
    """Fold (topics, data) pairs, already in emission order, into the chain head."""
    head = GENESIS
    for topics, data in logs:
        head = link(head, topics, data)
    return head
