"""The hand-encoded LoanBook calls equal what web3 encodes from the contract's own ABI."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from offchain.chain import calldata
from offchain.chain.artifacts import compile_contract

BYTES32 = st.binary(min_size=32, max_size=32)
AMOUNT = st.integers(min_value=0, max_value=2**96 - 1)
BOOK = Web3().eth.contract(abi=compile_contract("LoanBook").abi)


@given(BYTES32, AMOUNT, BYTES32, BYTES32)
def test_record_disbursement(loan_id: bytes, amount: int, payout_ref: bytes, rail_ref: bytes) -> None:
    expected = BOOK.encode_abi("record_disbursement", [loan_id, amount, payout_ref, rail_ref])
    assert "0x" + calldata.record_disbursement(loan_id, amount, payout_ref, rail_ref).hex() == expected


@given(BYTES32, AMOUNT, BYTES32)
def test_record_repayment(loan_id: bytes, amount: int, payment_ref: bytes) -> None:
    expected = BOOK.encode_abi("record_repayment", [loan_id, amount, payment_ref])
    assert "0x" + calldata.record_repayment(loan_id, amount, payment_ref).hex() == expected


@given(BYTES32, BYTES32, BYTES32)
def test_reverse_repayment(loan_id: bytes, payment_ref: bytes, reason: bytes) -> None:
    expected = BOOK.encode_abi("reverse_repayment", [loan_id, payment_ref, reason])
    assert "0x" + calldata.reverse_repayment(loan_id, payment_ref, reason).hex() == expected
