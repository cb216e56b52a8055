"""The committee's approval message and signature forms (offchain.domain.approvals), and the
reversal rule of the LoanBook model (offchain.domain.loan_book)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from offchain.domain.approvals import (
    APPROVE_DISBURSEMENT_TYPE,
    HALF_N,
    SECP256K1_N,
    ApprovalTerms,
    SignatureRefused,
    approval_typed_data,
    parse_signature,
)
from offchain.domain.loan_book import Loan, LoanState

KEY = "0x" + "11" * 32
TERMS = ApprovalTerms(
    terms_hash=keccak(text="agreement"),
    currency=566,
    principal=1_000_000,
    total_due=1_100_003,
    installment_count=3,
    installment_interval=30 * 86_400,
    grace_period=3 * 86_400,
    max_late_fees=50_000,
    payout_ref=keccak(text="payout"),
)


def _typed() -> dict:
    return approval_typed_data(
        chain_id=31337,
        committee="0x" + "ab" * 20,
        loan_id=keccak(text="loan"),
        terms=TERMS,
        epoch=1,
        deadline=1_800_000_000,
    )


def _signed() -> bytes:
    return bytes(Account.sign_message(encode_typed_data(full_message=_typed()), KEY).signature)


def test_typed_data__fields_are_the_design_type_in_order():
    fields = _typed()["types"]["ApproveDisbursement"]
    rendered = "ApproveDisbursement(" + ",".join(f"{f['type']} {f['name']}" for f in fields) + ")"
    assert rendered == APPROVE_DISBURSEMENT_TYPE
    assert rendered == (
        "ApproveDisbursement(bytes32 loanId,bytes32 termsHash,uint16 currency,uint256 principal,"
        "uint256 totalDue,uint16 installmentCount,uint32 installmentInterval,uint32 gracePeriod,"
        "uint256 maxLateFees,bytes32 payoutRef,uint256 epoch,uint256 deadline)"
    )
    assert set(_typed()["message"]) == {f["name"] for f in fields}


def test_from_chain__abi_order():
    row = (1, 566, 1_000_000, 1_100_003, 3, 2_592_000, 259_200, 50_000, TERMS.payout_ref, TERMS.terms_hash)
    assert ApprovalTerms.from_chain(row) == (1, TERMS)


def test_parse_signature__wallet_form_unchanged():
    signature = _signed()
    assert parse_signature("0x" + signature.hex()) == signature


@pytest.mark.parametrize("offset", [-27, 8], ids=["y_parity", "eip155_chain_0"])
def test_parse_signature__v_forms_normalized(offset):
    signature = _signed()
    other = signature[:64] + bytes([signature[64] + offset])
    assert parse_signature("0x" + other.hex()) == signature


def test_parse_signature__eip2098_compact_normalized():
    signature = _signed()
    vs = ((signature[64] - 27) << 255) | int.from_bytes(signature[32:64], "big")
    assert parse_signature("0x" + (signature[:32] + vs.to_bytes(32, "big")).hex()) == signature


@pytest.mark.parametrize(
    "text, reason",
    [
        ("0x" + "ab" * 64 + "c", "odd number"),
        ("0x" + "ab" * 66, "66 bytes"),
        ("0x" + "ab" * 64 + "1d", "v = 29"),
        ("0x" + "00" * 64 + "1b", "zero"),
        ("0x" + "ff" * 64 + "1b", "curve order"),
        ("0x" + "01" * 32 + (HALF_N + 1).to_bytes(32, "big").hex() + "1b", "high-s"),
        ("0xgg", "not 0x-prefixed hex"),
        ("abab", "not 0x-prefixed hex"),
    ],
)
def test_parse_signature__refusals_name_the_reason(text, reason):
    with pytest.raises(SignatureRefused, match=reason):
        parse_signature(text)


def test_parse_signature__compact_high_s_refused():
    s = HALF_N + 1  # above n/2, below 2**255: representable in compact form
    assert s < 2**255 < SECP256K1_N
    with pytest.raises(SignatureRefused, match="high-s"):
        parse_signature("0x" + ("01" * 32) + s.to_bytes(32, "big").hex())


def _active(**kw) -> Loan:
    loan = Loan(
        currency=566,
        principal=100,
        total_due=112,
        installment_count=4,
        installment_interval=30,
        grace_period=3,
        max_late_fees=50,
        **kw,
    )
    loan.approve()
    loan.disburse(0)
    return loan


def test_reverse__off_the_schedule_first__fees_stay_paid():
    loan = _active()
    loan.late_fees_assessed = 10  # assessed while past due
    fee_payment = loan.repay(10)
    loan.repay(112)
    assert loan.state == LoanState.REPAID
    undone = loan.reverse(fee_payment.fee_part + fee_payment.scheduled_part)
    assert (undone.scheduled_part, undone.fee_part) == (10, 0)
    assert (loan.late_fees_paid, loan.scheduled_repaid, loan.state) == (10, 102, LoanState.ACTIVE)
    assert loan.oldest_unpaid_due_at() == loan.due_at(4)  # owed on an installment: falls past due


def test_repay__written_off_takes_recoveries_and_stays_written_off():
    loan = _active()
    loan.state, loan.ever_defaulted = LoanState.WRITTEN_OFF, True
    loan.repay(112)
    assert (loan.outstanding, loan.state) == (0, LoanState.WRITTEN_OFF)
    loan.reverse(12)
    assert (loan.outstanding, loan.state) == (12, LoanState.WRITTEN_OFF)
