"""Unit tests of LoanBook: every function, every revert path, with its reason."""

from __future__ import annotations

import ape
import pytest
from conftest import DAY, DEFAULT_AFTER_DAYS, NGN, STATE, default_terms, ref, role
from eth_utils import keccak

from offchain.domain import event_chain

MISSING_ROLE = "access_control: account is missing role"
PAUSED = "pausable: contract is paused"


def loan_of(loan_book, loan_id):
    return loan_book.loans(loan_id)


def disbursed_at(loan_book, loan_id) -> int:
    return loan_of(loan_book, loan_id).disbursed_at


# -- roles and construction ---------------------------------------------------


def test_roles__are_keccak_of_their_names(loan_book):
    for name in ("ORIGINATOR_ROLE", "SERVICER_ROLE", "APPROVER_ROLE", "PAUSER_ROLE", "UNPAUSER_ROLE"):
        assert getattr(loan_book, name)() == role(name)
    assert loan_book.DEFAULT_ADMIN_ROLE() == b"\x00" * 32


def test_constructor__default_after_days(loan_book):
    assert loan_book.default_after_days() == DEFAULT_AFTER_DAYS


def test_constructor__zero_default_after_days__reverts(project, deployer):
    with ape.reverts("loan_book: default_after_days is zero"):
        deployer.deploy(project.LoanBook, 0)


def test_constructor__deployer_is_admin(loan_book, deployer):
    assert loan_book.hasRole(b"\x00" * 32, deployer)


# -- create_loan ------------------------------------------------------------------


def test_create_loan__records_pending_loan_and_event(loan_book, originator):
    loan_id = keccak(text="loan:create")
    terms = default_terms()
    tx = loan_book.create_loan(loan_id, terms, sender=originator)
    loan = loan_of(loan_book, loan_id)
    assert loan.state == STATE["PENDING"]
    assert loan.principal == terms["principal"]
    assert loan.total_due == terms["total_due"]
    assert loan.currency == NGN
    assert loan.installment_count == terms["installment_count"]
    assert loan.installment_interval == terms["installment_interval"]
    assert loan.grace_period == terms["grace_period"]
    assert loan.max_late_fees == terms["max_late_fees"]
    assert loan.payout_ref == terms["payout_ref"]
    assert loan.terms_hash == terms["terms_hash"]
    assert loan.outstanding == terms["total_due"]
    assert loan_book.loan_state(loan_id) == STATE["PENDING"]
    [event] = tx.events
    assert event.event_name == "LoanCreated"
    assert event.loan_id == loan_id
    assert event.borrower_ref == terms["borrower_ref"]
    assert event.partner_ref == terms["partner_ref"]
    assert event.principal == terms["principal"]


def test_create_loan__duplicate_id__reverts(loan_book, originator, create_loan):
    loan_id = create_loan()
    with ape.reverts("loan_book: loan exists"):
        loan_book.create_loan(loan_id, default_terms(), sender=originator)


def test_create_loan__not_originator__reverts(loan_book, stranger, servicer):
    for who in (stranger, servicer):
        with ape.reverts(MISSING_ROLE):
            loan_book.create_loan(keccak(text="x"), default_terms(), sender=who)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"currency": 0}, "loan_book: currency missing"),
        ({"principal": 0}, "loan_book: principal is zero"),
        ({"total_due": 99}, "loan_book: total_due below principal"),
        ({"principal": 2**96, "total_due": 2**96}, "loan_book: amount too large"),
        ({"max_late_fees": 2**80}, "loan_book: late fee cap too large"),
        ({"installment_count": 0}, "loan_book: no installments"),
        ({"installment_interval": 0}, "loan_book: interval is zero"),
        (
            {"principal": 3, "total_due": 3, "installment_count": 4},
            "loan_book: installment below one unit",
        ),
        ({"payout_ref": b"\x00" * 32}, "loan_book: payout_ref missing"),
        ({"terms_hash": b"\x00" * 32}, "loan_book: terms_hash missing"),
    ],
)
def test_create_loan__invalid_terms__reverts(loan_book, originator, overrides, reason):
    if "total_due" in overrides and overrides["total_due"] == 99:
        overrides = {"principal": 100, "total_due": 99}
    with ape.reverts(reason):
        loan_book.create_loan(keccak(text="bad"), default_terms(**overrides), sender=originator)


def test_create_loan__empty_id__reverts(loan_book, originator):
    with ape.reverts("loan_book: empty loan id"):
        loan_book.create_loan(b"\x00" * 32, default_terms(), sender=originator)


def test_create_loan__largest_amounts_fit(loan_book, originator):
    loan_id = keccak(text="max")
    terms = default_terms(principal=2**96 - 1, total_due=2**96 - 1, max_late_fees=2**80 - 1)
    loan_book.create_loan(loan_id, terms, sender=originator)
    loan = loan_of(loan_book, loan_id)
    assert loan.principal == 2**96 - 1
    assert loan.total_due == 2**96 - 1
    assert loan.max_late_fees == 2**80 - 1


def test_create_loan__while_paused__reverts(loan_book, originator, pauser):
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.create_loan(keccak(text="p"), default_terms(), sender=originator)


# -- approve / cancel ---------------------------------------------------------------


def test_approve_loan__pending_to_approved(loan_book, approver, create_loan):
    loan_id = create_loan()
    tx = loan_book.approve_loan(loan_id, sender=approver)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]
    assert tx.events[0].event_name == "LoanApproved"
    assert tx.events[0].approver == approver.address


def test_approve_loan__twice__reverts(loan_book, approver, create_loan):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    with ape.reverts("loan_book: not pending"):
        loan_book.approve_loan(loan_id, sender=approver)


def test_approve_loan__unknown__reverts(loan_book, approver):
    with ape.reverts("loan_book: unknown loan"):
        loan_book.approve_loan(keccak(text="nope"), sender=approver)


def test_approve_loan__not_approver__reverts(loan_book, originator, create_loan):
    loan_id = create_loan()
    with ape.reverts(MISSING_ROLE):
        loan_book.approve_loan(loan_id, sender=originator)


def test_approve_loan__while_paused__reverts(loan_book, approver, pauser, create_loan):
    loan_id = create_loan()
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.approve_loan(loan_id, sender=approver)


@pytest.mark.parametrize("approve_first", [False, True])
def test_cancel_loan__pending_or_approved(loan_book, originator, approver, create_loan, approve_first):
    loan_id = create_loan()
    if approve_first:
        loan_book.approve_loan(loan_id, sender=approver)
    tx = loan_book.cancel_loan(loan_id, ref("reason:borrower_withdrew"), sender=originator)
    assert loan_book.loan_state(loan_id) == STATE["CANCELLED"]
    assert tx.events[0].reason == ref("reason:borrower_withdrew")


def test_cancel_loan__active__reverts(loan_book, originator, active_loan):
    loan_id = active_loan()
    with ape.reverts("loan_book: not cancellable"):
        loan_book.cancel_loan(loan_id, ref("r"), sender=originator)


def test_cancel_loan__stranger__reverts(loan_book, stranger, create_loan):
    loan_id = create_loan()
    with ape.reverts(MISSING_ROLE):
        loan_book.cancel_loan(loan_id, ref("r"), sender=stranger)


def test_cancel_loan__paused__originator_reverts_but_approver_unwinds(
    loan_book, originator, approver, pauser, create_loan
):
    loan_id = create_loan()
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.cancel_loan(loan_id, ref("r"), sender=originator)
    loan_book.cancel_loan(loan_id, ref("r"), sender=approver)
    assert loan_book.loan_state(loan_id) == STATE["CANCELLED"]


# -- record_disbursement --------------------------------------------------------------


def test_record_disbursement__approved_to_active(loan_book, approver, servicer, create_loan, chain):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    terms = default_terms()
    tx = loan_book.record_disbursement(
        loan_id, terms["principal"], terms["payout_ref"], ref("paystack:TRF_1"), sender=servicer
    )
    loan = loan_of(loan_book, loan_id)
    assert loan.state == STATE["ACTIVE"]
    assert loan.disbursed_at == chain.blocks[tx.block_number].timestamp
    event = tx.events[0]
    assert event.event_name == "LoanDisbursed"
    assert event.rail_ref == ref("paystack:TRF_1")
    assert event.amount == terms["principal"]


def test_record_disbursement__pending__reverts(loan_book, servicer, create_loan):
    loan_id = create_loan()
    terms = default_terms()
    with ape.reverts("loan_book: not approved"):
        loan_book.record_disbursement(
            loan_id, terms["principal"], terms["payout_ref"], ref("t"), sender=servicer
        )


def test_record_disbursement__twice__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    terms = default_terms()
    with ape.reverts("loan_book: not approved"):
        loan_book.record_disbursement(
            loan_id, terms["principal"], terms["payout_ref"], ref("t2"), sender=servicer
        )


@pytest.mark.parametrize(
    ("amount_delta", "payout", "rail", "reason"),
    [
        (-1, None, "rail", "loan_book: amount is not the principal"),
        (1, None, "rail", "loan_book: amount is not the principal"),
        (0, "payout:other", "rail", "loan_book: payout_ref mismatch"),
        (0, None, None, "loan_book: rail_ref missing"),
    ],
)
def test_record_disbursement__wrong_values__revert(
    loan_book, approver, servicer, create_loan, amount_delta, payout, rail, reason
):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    terms = default_terms()
    payout_ref = ref(payout) if payout else terms["payout_ref"]
    rail_ref = ref(rail) if rail else b"\x00" * 32
    with ape.reverts(reason):
        loan_book.record_disbursement(
            loan_id, terms["principal"] + amount_delta, payout_ref, rail_ref, sender=servicer
        )


def test_record_disbursement__not_servicer__reverts(loan_book, approver, originator, create_loan):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    terms = default_terms()
    with ape.reverts(MISSING_ROLE):
        loan_book.record_disbursement(
            loan_id, terms["principal"], terms["payout_ref"], ref("t"), sender=originator
        )


def test_record_disbursement__paused__reverts(loan_book, approver, servicer, pauser, create_loan):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    loan_book.pause(sender=pauser)
    terms = default_terms()
    with ape.reverts(PAUSED):
        loan_book.record_disbursement(
            loan_id, terms["principal"], terms["payout_ref"], ref("t"), sender=servicer
        )


# -- record_repayment -------------------------------------------------------------------


def test_record_repayment__reduces_outstanding_and_marks_ref(loan_book, servicer, active_loan):
    loan_id = active_loan()
    tx = loan_book.record_repayment(loan_id, 28_000_00, ref("paystack:T1"), sender=servicer)
    assert loan_book.outstanding(loan_id) == 112_000_00 - 28_000_00
    assert loan_book.is_payment_recorded(ref("paystack:T1"))
    assert not loan_book.is_payment_recorded(ref("paystack:T2"))
    event = tx.events[0]
    assert event.event_name == "RepaymentRecorded"
    assert (event.amount, event.fee_part, event.scheduled_part) == (28_000_00, 0, 28_000_00)
    assert event.outstanding_after == 84_000_00


def test_record_repayment__duplicate_ref__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 1_00, ref("paystack:T1"), sender=servicer)
    with ape.reverts("loan_book: payment already recorded"):
        loan_book.record_repayment(loan_id, 1_00, ref("paystack:T1"), sender=servicer)


def test_record_repayment__ref_used_on_another_loan__reverts(loan_book, servicer, active_loan):
    first, second = active_loan(), active_loan()
    loan_book.record_repayment(first, 1_00, ref("paystack:T1"), sender=servicer)
    with ape.reverts("loan_book: payment already recorded"):
        loan_book.record_repayment(second, 1_00, ref("paystack:T1"), sender=servicer)


def test_record_repayment__overpayment__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    with ape.reverts("loan_book: amount exceeds outstanding"):
        loan_book.record_repayment(loan_id, 112_000_00 + 1, ref("paystack:T1"), sender=servicer)


def test_record_repayment__zero_amount__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    with ape.reverts("loan_book: amount is zero"):
        loan_book.record_repayment(loan_id, 0, ref("paystack:T1"), sender=servicer)


def test_record_repayment__empty_ref__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    with ape.reverts("loan_book: payment_ref missing"):
        loan_book.record_repayment(loan_id, 1, b"\x00" * 32, sender=servicer)


@pytest.mark.parametrize("stage", ["pending", "approved"])
def test_record_repayment__before_disbursement__reverts(loan_book, servicer, approver, create_loan, stage):
    loan_id = create_loan()
    if stage == "approved":
        loan_book.approve_loan(loan_id, sender=approver)
    with ape.reverts("loan_book: not repayable"):
        loan_book.record_repayment(loan_id, 1, ref("paystack:T1"), sender=servicer)


def test_record_repayment__unknown_loan__reverts(loan_book, servicer):
    with ape.reverts("loan_book: unknown loan"):
        loan_book.record_repayment(keccak(text="nope"), 1, ref("paystack:T1"), sender=servicer)


def test_record_repayment__not_servicer__reverts(loan_book, originator, active_loan):
    loan_id = active_loan()
    with ape.reverts(MISSING_ROLE):
        loan_book.record_repayment(loan_id, 1, ref("paystack:T1"), sender=originator)


def test_record_repayment__paused__reverts(loan_book, servicer, pauser, active_loan):
    loan_id = active_loan()
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.record_repayment(loan_id, 1, ref("paystack:T1"), sender=servicer)


def test_record_repayment__full_amount__repaid(loan_book, servicer, active_loan):
    loan_id = active_loan()
    tx = loan_book.record_repayment(loan_id, 112_000_00, ref("paystack:T1"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["REPAID"]
    assert loan_book.outstanding(loan_id) == 0
    assert [e.event_name for e in tx.events] == ["RepaymentRecorded", "LoanRepaid"]
    with ape.reverts("loan_book: not repayable"):
        loan_book.record_repayment(loan_id, 1, ref("paystack:T2"), sender=servicer)


def test_record_repayment__pays_late_fees_first(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    start = disbursed_at(loan_book, loan_id)
    chain.pending_timestamp = start + 30 * DAY + 3 * DAY + 1
    loan_book.assess_late_fee(loan_id, 1_000_00, ref("late_fee:1"), sender=servicer)
    tx = loan_book.record_repayment(loan_id, 1_500_00, ref("paystack:T1"), sender=servicer)
    event = tx.events[0]
    assert (event.fee_part, event.scheduled_part) == (1_000_00, 500_00)
    loan = loan_of(loan_book, loan_id)
    assert loan.late_fees_paid == 1_000_00
    assert loan.scheduled_repaid == 500_00
    assert loan.outstanding == 112_000_00 + 1_000_00 - 1_500_00


# -- reverse_repayment -------------------------------------------------------------------


def test_reverse_repayment__restores_amounts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 10_000_00, ref("paystack:T1"), sender=servicer)
    tx = loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("reason:chargeback"), sender=servicer)
    assert loan_book.outstanding(loan_id) == 112_000_00
    assert loan_book.is_payment_recorded(ref("paystack:T1"))
    assert loan_book.is_payment_reversed(ref("paystack:T1"))
    event = tx.events[0]
    assert event.event_name == "RepaymentReversed"
    assert (event.amount, event.scheduled_part, event.outstanding_after) == (
        10_000_00,
        10_000_00,
        112_000_00,
    )
    assert event.state_after == STATE["ACTIVE"]


def test_reverse_repayment__reopens_repaid_loan_as_active(loan_book, servicer, active_loan):
    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 12_000_00, ref("paystack:T0"), sender=servicer)
    loan_book.record_repayment(loan_id, 100_000_00, ref("paystack:T1"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["REPAID"]
    # reversing an earlier (not the closing) payment reopens the loan too
    loan_book.reverse_repayment(loan_id, ref("paystack:T0"), ref("reason:chargeback"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["ACTIVE"]
    assert loan_book.outstanding(loan_id) == 12_000_00


def test_reverse_repayment__restores_fee_part(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 34 * DAY
    loan_book.assess_late_fee(loan_id, 2_000_00, ref("late_fee:1"), sender=servicer)
    loan_book.record_repayment(loan_id, 3_000_00, ref("paystack:T1"), sender=servicer)
    loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("r"), sender=servicer)
    loan = loan_of(loan_book, loan_id)
    assert (loan.late_fees_paid, loan.scheduled_repaid) == (0, 0)
    assert loan.outstanding == 114_000_00


def test_reverse_repayment__twice__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 1_00, ref("paystack:T1"), sender=servicer)
    loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("r"), sender=servicer)
    with ape.reverts("loan_book: payment already reversed"):
        loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("r"), sender=servicer)
    with ape.reverts("loan_book: payment already recorded"):
        loan_book.record_repayment(loan_id, 1_00, ref("paystack:T1"), sender=servicer)


def test_reverse_repayment__unknown_payment__reverts(loan_book, servicer, active_loan):
    loan_id = active_loan()
    with ape.reverts("loan_book: unknown payment"):
        loan_book.reverse_repayment(loan_id, ref("paystack:nope"), ref("r"), sender=servicer)


def test_reverse_repayment__other_loan__reverts(loan_book, servicer, active_loan):
    first, second = active_loan(), active_loan()
    loan_book.record_repayment(first, 1_00, ref("paystack:T1"), sender=servicer)
    with ape.reverts("loan_book: payment of another loan"):
        loan_book.reverse_repayment(second, ref("paystack:T1"), ref("r"), sender=servicer)


def _disbursed(loan_book, originator, approver, servicer, loan_id: bytes) -> bytes:
    terms = default_terms()
    loan_book.create_loan(loan_id, terms, sender=originator)
    loan_book.approve_loan(loan_id, sender=approver)
    loan_book.record_disbursement(
        loan_id, terms["principal"], terms["payout_ref"], ref("TRF"), sender=servicer
    )
    return loan_id


def test_reverse_repayment__other_loan_sharing_all_but_one_bit__reverts(
    loan_book, originator, approver, servicer
):
    """The guard compares loan serials, not some bits of the id: ids chosen to share every bit but
    the top one (so any truncated tag, like the 72 low bits kept before, would collide)."""
    first = keccak(text="collision:first")
    twin = bytes([first[0] ^ 0x80]) + first[1:]
    _disbursed(loan_book, originator, approver, servicer, first)
    _disbursed(loan_book, originator, approver, servicer, twin)
    loan_book.record_repayment(first, 1_00, ref("paystack:collide"), sender=servicer)
    with ape.reverts("loan_book: payment of another loan"):
        loan_book.reverse_repayment(twin, ref("paystack:collide"), ref("r"), sender=servicer)
    unknown = bytes([first[0] ^ 0x40]) + first[1:]
    with ape.reverts("loan_book: payment of another loan"):
        loan_book.reverse_repayment(unknown, ref("paystack:collide"), ref("r"), sender=servicer)
    loan_book.reverse_repayment(first, ref("paystack:collide"), ref("r"), sender=servicer)


def test_reverse_repayment__fee_payment_after_schedule_cleared__loan_falls_past_due(
    loan_book, servicer, active_loan, chain
):
    """Issue 15's stranded loan: a fee-only repayment, then one that clears the schedule, then the
    chargeback of the fee payment. What is owed again must fall on an installment (past due in
    time, defaultable), not sit as unpaid fees on a fully paid schedule."""
    loan_id = active_loan()
    t0 = disbursed_at(loan_book, loan_id)
    chain.pending_timestamp = t0 + 40 * DAY
    loan_book.assess_late_fee(loan_id, 2_000_00, ref("late_fee:strand"), sender=servicer)
    loan_book.record_repayment(loan_id, 2_000_00, ref("paystack:fee"), sender=servicer)
    loan_book.record_repayment(loan_id, 112_000_00, ref("paystack:rest"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["REPAID"]

    tx = loan_book.reverse_repayment(loan_id, ref("paystack:fee"), ref("chargeback"), sender=servicer)
    event = tx.events[0]
    # off the schedule first: the fee stays paid (fees first), the last installment owes 2_000_00
    assert (event.amount, event.fee_part, event.scheduled_part) == (2_000_00, 0, 2_000_00)
    assert (event.outstanding_after, event.state_after) == (2_000_00, STATE["ACTIVE"])
    loan = loan_of(loan_book, loan_id)
    assert (loan.late_fees_paid, loan.scheduled_repaid) == (2_000_00, 110_000_00)
    due4 = t0 + 4 * 30 * DAY
    assert loan_book.next_due(loan_id) == (due4, 2_000_00)
    assert loan_book.days_past_due(loan_id, due4 + 3 * DAY + 1) == 3
    chain.pending_timestamp = due4 + DEFAULT_AFTER_DAYS * DAY
    loan_book.mark_default(loan_id, sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["DEFAULTED"]


def test_reverse_repayment__takes_the_schedule_first_then_fees(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 40 * DAY
    loan_book.assess_late_fee(loan_id, 2_000_00, ref("late_fee:order"), sender=servicer)
    loan_book.record_repayment(loan_id, 2_500_00, ref("paystack:A"), sender=servicer)  # fee 2_000, sched 500
    loan_book.record_repayment(loan_id, 300_00, ref("paystack:B"), sender=servicer)  # sched 300
    tx = loan_book.reverse_repayment(loan_id, ref("paystack:A"), ref("r"), sender=servicer)
    # 2_500 back: all 800 of the schedule first, then 1_700 of the fee
    assert (tx.events[0].scheduled_part, tx.events[0].fee_part) == (800_00, 1_700_00)
    loan = loan_of(loan_book, loan_id)
    assert (loan.scheduled_repaid, loan.late_fees_paid) == (0, 300_00)
    assert loan.outstanding == 112_000_00 + 2_000_00 - 300_00


def test_reverse_repayment__not_servicer__reverts(loan_book, servicer, stranger, active_loan):
    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 1_00, ref("paystack:T1"), sender=servicer)
    with ape.reverts(MISSING_ROLE):
        loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("r"), sender=stranger)


def test_reverse_repayment__paused__reverts(loan_book, servicer, pauser, active_loan):
    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 1_00, ref("paystack:T1"), sender=servicer)
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("r"), sender=servicer)


# -- late fees -----------------------------------------------------------------------------


def test_assess_late_fee__within_grace__reverts(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 30 * DAY + 3 * DAY
    with ape.reverts("loan_book: not past due"):
        loan_book.assess_late_fee(loan_id, 1_00, ref("late_fee:1"), sender=servicer)


def test_assess_late_fee__past_grace__charges(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 30 * DAY + 3 * DAY + 1
    tx = loan_book.assess_late_fee(loan_id, 1_00, ref("late_fee:1"), sender=servicer)
    assert loan_book.is_fee_assessed(ref("late_fee:1"))
    event = tx.events[0]
    assert (event.amount, event.late_fees_assessed, event.outstanding_after) == (
        1_00,
        1_00,
        112_001_00,
    )


def test_assess_late_fee__after_catching_up__reverts(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 40 * DAY
    loan_book.record_repayment(loan_id, 28_000_00, ref("paystack:T1"), sender=servicer)
    with ape.reverts("loan_book: not past due"):
        loan_book.assess_late_fee(loan_id, 1_00, ref("late_fee:1"), sender=servicer)


def test_assess_late_fee__cap__reverts(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 40 * DAY
    loan_book.assess_late_fee(loan_id, 4_000_00, ref("late_fee:1"), sender=servicer)
    with ape.reverts("loan_book: late fee cap exceeded"):
        loan_book.assess_late_fee(loan_id, 1_000_01, ref("late_fee:2"), sender=servicer)
    loan_book.assess_late_fee(loan_id, 1_000_00, ref("late_fee:3"), sender=servicer)
    assert loan_of(loan_book, loan_id).late_fees_assessed == 5_000_00


def test_assess_late_fee__duplicate_ref__reverts(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 40 * DAY
    loan_book.assess_late_fee(loan_id, 1_00, ref("late_fee:1"), sender=servicer)
    with ape.reverts("loan_book: fee already assessed"):
        loan_book.assess_late_fee(loan_id, 1_00, ref("late_fee:1"), sender=servicer)


@pytest.mark.parametrize(
    ("amount", "fee_ref", "reason"),
    [(0, "late_fee:1", "loan_book: amount is zero"), (1, None, "loan_book: fee_ref missing")],
)
def test_assess_late_fee__bad_input__reverts(
    loan_book, servicer, active_loan, chain, amount, fee_ref, reason
):
    loan_id = active_loan()
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 40 * DAY
    with ape.reverts(reason):
        loan_book.assess_late_fee(loan_id, amount, ref(fee_ref) if fee_ref else b"\x00" * 32, sender=servicer)


def test_assess_late_fee__not_active__reverts(loan_book, servicer, create_loan):
    loan_id = create_loan()
    with ape.reverts("loan_book: not active"):
        loan_book.assess_late_fee(loan_id, 1, ref("late_fee:1"), sender=servicer)


def test_assess_late_fee__not_servicer__reverts(loan_book, stranger, active_loan):
    loan_id = active_loan()
    with ape.reverts(MISSING_ROLE):
        loan_book.assess_late_fee(loan_id, 1, ref("late_fee:1"), sender=stranger)


def test_assess_late_fee__paused__reverts(loan_book, servicer, pauser, active_loan):
    loan_id = active_loan()
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.assess_late_fee(loan_id, 1, ref("late_fee:1"), sender=servicer)


# -- schedule views ---------------------------------------------------------------------------


def test_amount_due__follows_the_schedule(loan_book, servicer, active_loan):
    loan_id = active_loan(total_due=100_000_03, principal=90_000_00)  # 4 x 25_000_00 + 3 remainder
    t0 = disbursed_at(loan_book, loan_id)
    assert loan_book.amount_due(loan_id, t0) == 0
    assert loan_book.amount_due(loan_id, t0 + 30 * DAY - 1) == 0
    assert loan_book.amount_due(loan_id, t0 + 30 * DAY) == 25_000_00
    assert loan_book.amount_due(loan_id, t0 + 90 * DAY) == 75_000_00
    assert loan_book.amount_due(loan_id, t0 + 120 * DAY) == 100_000_03
    assert loan_book.amount_due(loan_id, t0 + 10_000 * DAY) == 100_000_03
    loan_book.record_repayment(loan_id, 30_000_00, ref("paystack:T1"), sender=servicer)
    assert loan_book.amount_due(loan_id, t0 + 30 * DAY) == 0
    assert loan_book.amount_due(loan_id, t0 + 60 * DAY) == 20_000_00
    assert loan_book.next_due(loan_id) == (t0 + 60 * DAY, 20_000_00)


def test_days_past_due__counts_from_due_date_after_grace(loan_book, servicer, active_loan):
    loan_id = active_loan()
    t0 = disbursed_at(loan_book, loan_id)
    due1 = t0 + 30 * DAY
    assert loan_book.days_past_due(loan_id, due1) == 0
    assert loan_book.days_past_due(loan_id, due1 + 3 * DAY) == 0  # still in grace
    assert loan_book.days_past_due(loan_id, due1 + 3 * DAY + 1) == 3
    assert loan_book.days_past_due(loan_id, due1 + 45 * DAY) == 45
    # a partial payment of installment 1 does not move the oldest unpaid due date
    loan_book.record_repayment(loan_id, 27_999_99, ref("paystack:T1"), sender=servicer)
    assert loan_book.days_past_due(loan_id, due1 + 45 * DAY) == 45
    loan_book.record_repayment(loan_id, 1, ref("paystack:T2"), sender=servicer)
    assert loan_book.days_past_due(loan_id, due1 + 45 * DAY) == 15


def test_schedule__all_but_the_remainder_paid__last_installment_still_due(
    loan_book, servicer, active_loan, chain
):
    """total_due 112_000_03 over 4: three of 28_000_00 and a last one of 28_000_03. Paying
    4 x 28_000_00 leaves the remainder on the LAST installment (due 4), not on a fifth that does
    not exist: the cap on the installment index."""
    loan_id = active_loan(total_due=112_000_03)
    t0 = disbursed_at(loan_book, loan_id)
    loan_book.record_repayment(loan_id, 112_000_00, ref("paystack:most"), sender=servicer)
    due4 = t0 + 4 * 30 * DAY
    assert loan_book.loan_state(loan_id) == STATE["ACTIVE"]
    assert loan_book.outstanding(loan_id) == 3
    assert loan_book.next_due(loan_id) == (due4, 3)
    assert loan_book.amount_due(loan_id, due4 - 1) == 0
    assert loan_book.amount_due(loan_id, due4) == 3
    assert loan_book.days_past_due(loan_id, due4 + 3 * DAY) == 0
    assert loan_book.days_past_due(loan_id, due4 + 3 * DAY + 1) == 3
    chain.pending_timestamp = due4 + DEFAULT_AFTER_DAYS * DAY
    loan_book.mark_default(loan_id, sender=servicer)
    loan_book.record_repayment(loan_id, 3, ref("paystack:remainder"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["REPAID"]


def test_views__zero_for_loans_not_in_repayment(loan_book, create_loan):
    loan_id = create_loan()
    assert loan_book.amount_due(loan_id, 2**40) == 0
    assert loan_book.days_past_due(loan_id, 2**40) == 0
    assert loan_book.next_due(loan_id) == (0, 0)


def test_views__unknown_loan(loan_book):
    unknown = keccak(text="unknown")
    assert loan_book.loan_state(unknown) == 0
    assert loan_book.loans(unknown).state == 0
    assert tuple(loan_book.approval_terms(unknown)) == (0, 0, 0, 0, 0, 0, 0, 0, b"\x00" * 32, b"\x00" * 32)
    assert loan_book.approval_state(unknown) == (0, 0)
    assert loan_book.outstanding(unknown) == 0
    assert loan_book.loan_serial(unknown) == 0


def test_approval_terms__every_economic_term(loan_book, create_loan):
    loan_id = create_loan()
    terms = default_terms()
    got = loan_book.approval_terms(loan_id)
    assert got.state == STATE["PENDING"]
    for name in (
        "currency",
        "principal",
        "total_due",
        "installment_count",
        "installment_interval",
        "grace_period",
        "max_late_fees",
        "payout_ref",
        "terms_hash",
    ):
        assert getattr(got, name) == terms[name], name
    assert loan_book.approval_state(loan_id) == (STATE["PENDING"], terms["principal"])


def test_loan_serial__counts_up_from_one(loan_book, create_loan):
    before = loan_book.loan_count()
    first, second = create_loan(), create_loan()
    assert (loan_book.loan_serial(first), loan_book.loan_serial(second)) == (before + 1, before + 2)
    assert loan_book.loan_count() == before + 2


# -- default and write-off ---------------------------------------------------------------------


def test_mark_default__before_threshold__reverts(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    due1 = disbursed_at(loan_book, loan_id) + 30 * DAY
    chain.pending_timestamp = due1 + (DEFAULT_AFTER_DAYS - 1) * DAY + DAY - 1
    with ape.reverts("loan_book: not in default yet"):
        loan_book.mark_default(loan_id, sender=servicer)


def test_mark_default__at_threshold__defaults(loan_book, servicer, active_loan, chain):
    loan_id = active_loan()
    due1 = disbursed_at(loan_book, loan_id) + 30 * DAY
    chain.pending_timestamp = due1 + DEFAULT_AFTER_DAYS * DAY
    tx = loan_book.mark_default(loan_id, sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["DEFAULTED"]
    assert tx.events[0].days_past_due == DEFAULT_AFTER_DAYS
    assert loan_of(loan_book, loan_id).ever_defaulted


def test_mark_default__not_active__reverts(loan_book, servicer, create_loan):
    loan_id = create_loan()
    with ape.reverts("loan_book: not active"):
        loan_book.mark_default(loan_id, sender=servicer)


def test_mark_default__not_servicer__reverts(loan_book, stranger, active_loan):
    with ape.reverts(MISSING_ROLE):
        loan_book.mark_default(active_loan(), sender=stranger)


def test_mark_default__paused__reverts(loan_book, servicer, pauser, active_loan):
    loan_id = active_loan()
    loan_book.pause(sender=pauser)
    with ape.reverts(PAUSED):
        loan_book.mark_default(loan_id, sender=servicer)


@pytest.fixture
def defaulted_loan(loan_book, servicer, active_loan, chain):
    def _defaulted() -> bytes:
        loan_id = active_loan()
        chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 30 * DAY + DEFAULT_AFTER_DAYS * DAY
        loan_book.mark_default(loan_id, sender=servicer)
        return loan_id

    return _defaulted


def test_recovery_after_default__counts_and_can_repay(loan_book, servicer, defaulted_loan):
    loan_id = defaulted_loan()
    loan_book.record_repayment(loan_id, 12_000_00, ref("paystack:R1"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["DEFAULTED"]
    loan_book.record_repayment(loan_id, 100_000_00, ref("paystack:R2"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["REPAID"]
    loan_book.reverse_repayment(loan_id, ref("paystack:R2"), ref("r"), sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["DEFAULTED"]


def test_write_off__defaulted_to_written_off(loan_book, approver, defaulted_loan):
    loan_id = defaulted_loan()
    tx = loan_book.write_off(loan_id, sender=approver)
    assert loan_book.loan_state(loan_id) == STATE["WRITTEN_OFF"]
    assert tx.events[0].outstanding == 112_000_00


def test_write_off__while_paused__is_allowed(loan_book, approver, pauser, defaulted_loan):
    loan_id = defaulted_loan()
    loan_book.pause(sender=pauser)
    loan_book.write_off(loan_id, sender=approver)
    assert loan_book.loan_state(loan_id) == STATE["WRITTEN_OFF"]


def test_write_off__not_defaulted__reverts(loan_book, approver, active_loan):
    with ape.reverts("loan_book: not defaulted"):
        loan_book.write_off(active_loan(), sender=approver)


def test_write_off__servicer__reverts(loan_book, servicer, defaulted_loan):
    loan_id = defaulted_loan()
    with ape.reverts(MISSING_ROLE):
        loan_book.write_off(loan_id, sender=servicer)


def test_written_off__recoveries_recorded_and_loan_stays_written_off(
    loan_book, approver, servicer, defaulted_loan
):
    loan_id = defaulted_loan()
    loan_book.write_off(loan_id, sender=approver)
    tx = loan_book.record_repayment(loan_id, 12_000_00, ref("paystack:R1"), sender=servicer)
    assert tx.events[0].outstanding_after == 100_000_00
    assert loan_book.loan_state(loan_id) == STATE["WRITTEN_OFF"]
    # recovered in full: outstanding 0, still WRITTEN_OFF (a write-off is final), no LoanRepaid
    tx = loan_book.record_repayment(loan_id, 100_000_00, ref("paystack:R2"), sender=servicer)
    assert [e.event_name for e in tx.events] == ["RepaymentRecorded"]
    assert loan_book.outstanding(loan_id) == 0
    assert loan_book.loan_state(loan_id) == STATE["WRITTEN_OFF"]
    with ape.reverts("loan_book: amount exceeds outstanding"):
        loan_book.record_repayment(loan_id, 1, ref("paystack:R3"), sender=servicer)


def test_written_off__reversal_of_a_recovery_raises_outstanding_again(
    loan_book, approver, servicer, defaulted_loan
):
    loan_id = defaulted_loan()
    loan_book.record_repayment(loan_id, 2_000_00, ref("paystack:before"), sender=servicer)
    loan_book.write_off(loan_id, sender=approver)
    loan_book.record_repayment(loan_id, 5_000_00, ref("paystack:R1"), sender=servicer)
    assert loan_book.outstanding(loan_id) == 105_000_00
    # both directions: a recovery's chargeback and one of a payment from before the write-off
    tx = loan_book.reverse_repayment(loan_id, ref("paystack:R1"), ref("chargeback"), sender=servicer)
    assert (tx.events[0].outstanding_after, tx.events[0].state_after) == (110_000_00, STATE["WRITTEN_OFF"])
    loan_book.reverse_repayment(loan_id, ref("paystack:before"), ref("chargeback"), sender=servicer)
    assert loan_book.outstanding(loan_id) == 112_000_00
    assert loan_book.loan_state(loan_id) == STATE["WRITTEN_OFF"]


# -- pause -----------------------------------------------------------------------------------------


def test_pause__pauser_pauses__only_unpauser_resumes(loan_book, pauser, approver, stranger):
    with ape.reverts(MISSING_ROLE):
        loan_book.pause(sender=stranger)
    loan_book.pause(sender=pauser)
    assert loan_book.paused()
    with ape.reverts("pausable: contract is paused"):
        loan_book.pause(sender=pauser)
    # an operations PAUSER cannot undo a pause: that takes UNPAUSER_ROLE (the committee's)
    for account in (stranger, pauser):
        with ape.reverts(MISSING_ROLE):
            loan_book.unpause(sender=account)
    assert loan_book.paused()
    loan_book.unpause(sender=approver)
    assert not loan_book.paused()
    with ape.reverts("pausable: contract is not paused"):
        loan_book.unpause(sender=approver)


# -- event chain -----------------------------------------------------------------------------------


def test_event_chain__recomputes_from_raw_logs(loan_book, servicer, approver, create_loan, chain):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    terms = default_terms()
    loan_book.record_disbursement(
        loan_id, terms["principal"], terms["payout_ref"], ref("paystack:TRF"), sender=servicer
    )
    chain.pending_timestamp = disbursed_at(loan_book, loan_id) + 40 * DAY
    loan_book.assess_late_fee(loan_id, 1_00, ref("late_fee:1"), sender=servicer)
    loan_book.record_repayment(loan_id, 50_000_00, ref("paystack:T1"), sender=servicer)
    loan_book.reverse_repayment(loan_id, ref("paystack:T1"), ref("chargeback"), sender=servicer)
    loan_book.record_repayment(loan_id, 112_001_00, ref("paystack:T2"), sender=servicer)

    raw = chain.provider.web3.eth.get_logs(
        {
            "address": loan_book.address,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [None, loan_id],
        }
    )
    raw.sort(key=lambda log: (log["blockNumber"], log["logIndex"]))
    assert len(raw) == 8  # created, approved, disbursed, fee, repay, reverse, repay, repaid
    recomputed = event_chain.recompute((log["topics"], log["data"]) for log in raw)
    assert loan_book.event_chain(loan_id) == recomputed


def _raw_logs(chain, loan_book, loan_id):
    raw = chain.provider.web3.eth.get_logs(
        {"address": loan_book.address, "fromBlock": 0, "toBlock": "latest", "topics": [None, loan_id]}
    )
    return sorted(raw, key=lambda log: (log["blockNumber"], log["logIndex"]))


def test_event_chain__default_write_off_and_recovery__recompute_from_raw_logs(
    loan_book, servicer, approver, active_loan, chain
):
    """LoanDefaulted, LoanWrittenOff and the recoveries after them are in the chain field by field
    (a swapped field in any preimage would make the recomputation differ)."""
    from eth_utils import event_abi_to_log_topic

    loan_id = active_loan()
    t0 = disbursed_at(loan_book, loan_id)
    chain.pending_timestamp = t0 + 34 * DAY
    loan_book.assess_late_fee(loan_id, 1_000_00, ref("late_fee:chain"), sender=servicer)
    loan_book.record_repayment(loan_id, 3_000_00, ref("paystack:C1"), sender=servicer)
    chain.pending_timestamp = t0 + 30 * DAY + (DEFAULT_AFTER_DAYS + 7) * DAY
    defaulted = loan_book.mark_default(loan_id, sender=servicer).events[0]
    assert defaulted.days_past_due != defaulted.outstanding
    loan_book.write_off(loan_id, sender=approver)
    loan_book.record_repayment(loan_id, 4_000_00, ref("paystack:C2"), sender=servicer)
    loan_book.reverse_repayment(loan_id, ref("paystack:C2"), ref("chargeback"), sender=servicer)

    raw = _raw_logs(chain, loan_book, loan_id)
    names = {
        event_abi_to_log_topic(abi.model_dump(mode="json", by_alias=True)): abi.name
        for abi in loan_book.contract_type.events
    }
    assert [names[bytes(log["topics"][0])] for log in raw][-5:] == [
        "RepaymentRecorded",
        "LoanDefaulted",
        "LoanWrittenOff",
        "RepaymentRecorded",
        "RepaymentReversed",
    ]
    assert loan_book.event_chain(loan_id) == event_chain.recompute(
        (log["topics"], log["data"]) for log in raw
    )


def test_event_chain__cancelled_loan__recomputes_from_raw_logs(
    loan_book, originator, approver, create_loan, chain
):
    loan_id = create_loan()
    loan_book.approve_loan(loan_id, sender=approver)
    loan_book.cancel_loan(loan_id, ref("reason:withdrawn"), sender=originator)
    raw = _raw_logs(chain, loan_book, loan_id)
    assert len(raw) == 3
    assert loan_book.event_chain(loan_id) == event_chain.recompute(
        (log["topics"], log["data"]) for log in raw
    )


def test_event_chain__seed_is_zero_and_first_link_is_loan_created(loan_book, create_loan, chain):
    loan_id = create_loan()
    [created] = _raw_logs(chain, loan_book, loan_id)
    assert event_chain.GENESIS == b"\x00" * 32
    expected = keccak(b"\x00" * 32 + b"".join(bytes(t) for t in created["topics"]) + bytes(created["data"]))
    assert loan_book.event_chain(loan_id) == expected
    assert loan_book.event_chain(keccak(text="never created")) == b"\x00" * 32


def test_event_chain__topic_constants_match_emitted_topics(loan_book, servicer, active_loan, chain):
    from eth_utils import event_abi_to_log_topic

    loan_id = active_loan()
    loan_book.record_repayment(loan_id, 112_000_00, ref("paystack:T1"), sender=servicer)
    raw = chain.provider.web3.eth.get_logs(
        {
            "address": loan_book.address,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [None, loan_id],
        }
    )
    known = {
        event_abi_to_log_topic(abi.model_dump(mode="json", by_alias=True)): abi.name
        for abi in loan_book.contract_type.events
    }
    assert [known[bytes(log["topics"][0])] for log in raw] == [
        "LoanCreated",
        "LoanApproved",
        "LoanDisbursed",
        "RepaymentRecorded",
        "LoanRepaid",
    ]
