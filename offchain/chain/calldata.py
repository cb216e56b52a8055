"""Calldata of the LoanBook calls the money services make, encoded straight with eth_abi.

Building a web3 contract object from the ABI for every call cost more CPU than the rest of a
repayment's intake together (profiled); these few signatures never change, and a test pins
them to the deployed ABI (tests/offchain/unit/test_calldata.py).
"""

from __future__ import annotations

from functools import cache

from eth_abi import encode
from eth_utils import keccak

RECORD_DISBURSEMENT = "record_disbursement(bytes32,uint256,bytes32,bytes32)"
RECORD_REPAYMENT = "record_repayment(bytes32,uint256,bytes32)"
REVERSE_REPAYMENT = "reverse_repayment(bytes32,bytes32,bytes32)"


@cache
def _selector_and_types(signature: str) -> tuple[bytes, list[str]]:
    name_end = signature.index("(")
    types = [t for t in signature[name_end + 1 : -1].split(",") if t]
    return keccak(text=signature)[:4], types


def encode_call(signature: str, *args: object) -> bytes:
    selector, types = _selector_and_types(signature)
    return selector + encode(types, list(args))


def record_disbursement(loan_id: bytes, amount: int, payout_ref: bytes, rail_ref: bytes) -> bytes:
    return encode_call(RECORD_DISBURSEMENT, loan_id, amount, payout_ref, rail_ref)


def record_repayment(loan_id: bytes, amount: int, payment_ref: bytes) -> bytes:
    return encode_call(RECORD_REPAYMENT, loan_id, amount, payment_ref)


def reverse_repayment(loan_id: bytes, payment_ref: bytes, reason: bytes) -> bytes:
    return encode_call(REVERSE_REPAYMENT, loan_id, payment_ref, reason)
