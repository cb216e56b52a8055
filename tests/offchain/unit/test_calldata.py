"""The typed LoanBook binding encodes exactly what web3 encodes from the contract's own ABI."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from offchain.chain.artifacts import compile_contract
from offchain.chain.binding import Committee, LoanBook

BYTES32 = st.binary(min_size=32, max_size=32)
AMOUNT = st.integers(min_value=0, max_value=2**96 - 1)
BOOK_ABI = compile_contract("LoanBook").abi
COMMITTEE_ABI = compile_contract("DisbursementCommittee").abi
BOOK = Web3().eth.contract(abi=BOOK_ABI)
COMMITTEE = Web3().eth.contract(abi=COMMITTEE_ABI)
calldata = LoanBook("0x" + "42" * 20, BOOK_ABI)
committee = Committee("0x" + "43" * 20, COMMITTEE_ABI)


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


@given(BYTES32, AMOUNT, BYTES32)
def test_collections_calls(loan_id: bytes, amount: int, fee_ref: bytes) -> None:
    assert calldata.assess_late_fee(loan_id, amount, fee_ref) == BOOK.encode_abi(
        "assess_late_fee", [loan_id, amount, fee_ref]
    )
    assert calldata.mark_default(loan_id) == BOOK.encode_abi("mark_default", [loan_id])
    assert committee.propose_write_off(loan_id, amount) == COMMITTEE.encode_abi(
        "propose", [5, "0x" + "00" * 20, loan_id, 0, amount]
    )


@given(BYTES32, st.lists(st.binary(min_size=65, max_size=65), max_size=4), AMOUNT)
def test_approve_with_signatures(loan_id: bytes, signatures: list[bytes], deadline: int) -> None:
    expected = COMMITTEE.encode_abi("approve_with_signatures", [loan_id, deadline, signatures])
    assert committee.approve_with_signatures(loan_id, deadline, signatures) == expected


@given(BYTES32, st.tuples(BYTES32, BYTES32, *[st.integers(0, 200)] * 7, BYTES32, BYTES32))
def test_create_loan(loan_id: bytes, terms: tuple) -> None:
    assert calldata.create_loan(loan_id, terms) == BOOK.encode_abi("create_loan", [loan_id, terms])


def test_views_decode_as_web3_does() -> None:
    """Struct answers come back as tuples with checksummed addresses, as web3 returned them."""
    signers = ["0x" + "ab" * 20, "0x" + "0c" * 20]
    raw = "0x" + COMMITTEE.w3.codec.encode(["address[]"], [signers]).hex()
    assert committee.decode("signers", raw) == ([Web3.to_checksum_address(s) for s in signers],)
    fields = calldata.function("loans").output_fields()
    assert fields[0] == "state" and "outstanding" in fields


@given(BYTES32, st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_logs_decode_as_web3_does(loan_id: bytes, granted: bytes, sender: bytes) -> None:
    """LoanApproved (an address in the data) and RoleGranted (addresses in topics), as the
    audit read them with web3's get_event_data."""
    from eth_abi import encode
    from eth_utils import event_abi_to_log_topic
    from hexbytes import HexBytes
    from web3._utils.events import get_event_data

    codec = BOOK.w3.codec
    for name, topics, data in (
        ("LoanApproved", [loan_id], encode(["address"], ["0x" + granted.hex()])),
        (
            "RoleGranted",
            [loan_id, b"\0" * 12 + granted, b"\0" * 12 + sender],
            b"",
        ),
    ):
        abi = next(i for i in BOOK_ABI if i.get("type") == "event" and i["name"] == name)
        all_topics = [bytes(event_abi_to_log_topic(abi)), *topics]
        web3_log = {
            "topics": [HexBytes(t) for t in all_topics],
            "data": HexBytes(data),
            "logIndex": 0,
            "transactionIndex": 0,
            "transactionHash": HexBytes(b"\1" * 32),
            "address": "0x" + "42" * 20,
            "blockHash": HexBytes(b"\2" * 32),
            "blockNumber": 1,
        }
        expected = get_event_data(codec, abi, web3_log)
        ours = calldata.decode_log(all_topics, data)
        assert ours.event == expected["event"]
        assert ours.args == dict(expected["args"])
