"""Unit tests of DisbursementCommittee: loan approval on chain and by EIP-712 signatures."""

from __future__ import annotations

import itertools

import ape
import pytest
from conftest import STATE, default_terms, role
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

DOMAIN_NAME = "CaaS Disbursement Committee"
DOMAIN_VERSION = "1"
# DESIGN §3, revised: every economic term of the loan, as LoanBook stores it.
APPROVE_TYPE = (
    "ApproveDisbursement(bytes32 loanId,bytes32 termsHash,uint16 currency,uint256 principal,"
    "uint256 totalDue,uint16 installmentCount,uint32 installmentInterval,uint32 gracePeriod,"
    "uint256 maxLateFees,bytes32 payoutRef,uint256 epoch,uint256 deadline)"
)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HOUR = 3600

ACTION = {
    "ADD_SIGNER": 1,
    "REMOVE_SIGNER": 2,
    "SET_THRESHOLD": 3,
    "SET_LARGE_LOAN_TIER": 4,
    "WRITE_OFF": 5,
    "CANCEL_LOAN": 6,
    "PAUSE": 7,
    "UNPAUSE": 8,
    "GRANT_ROLE": 9,
    "REVOKE_ROLE": 10,
}

NOT_PENDING = "committee: loan not pending"


# -- helpers (also used by test_committee_governance.py) ---------------------------


def approval_typed_data(committee, loan_book, loan_id, deadline, domain=None, message=None) -> dict:
    """The EIP-712 JSON a wallet signs for `loan_id` (what GET /approval-request serves).

    Written out by hand from the type string above (not with the backend's builder), so the
    contract is checked against the DESIGN, not against our own code."""
    terms = loan_book.approval_terms(loan_id)
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "ApproveDisbursement": [
                {"name": "loanId", "type": "bytes32"},
                {"name": "termsHash", "type": "bytes32"},
                {"name": "currency", "type": "uint16"},
                {"name": "principal", "type": "uint256"},
                {"name": "totalDue", "type": "uint256"},
                {"name": "installmentCount", "type": "uint16"},
                {"name": "installmentInterval", "type": "uint32"},
                {"name": "gracePeriod", "type": "uint32"},
                {"name": "maxLateFees", "type": "uint256"},
                {"name": "payoutRef", "type": "bytes32"},
                {"name": "epoch", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "ApproveDisbursement",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": ape.chain.chain_id,
            "verifyingContract": committee.address,
            **(domain or {}),
        },
        "message": {
            "loanId": bytes(loan_id),
            "termsHash": bytes(terms.terms_hash),
            "currency": terms.currency,
            "principal": terms.principal,
            "totalDue": terms.total_due,
            "installmentCount": terms.installment_count,
            "installmentInterval": terms.installment_interval,
            "gracePeriod": terms.grace_period,
            "maxLateFees": terms.max_late_fees,
            "payoutRef": bytes(terms.payout_ref),
            "epoch": committee.epoch(),
            "deadline": deadline,
            **(message or {}),
        },
    }


def sign(typed_data: dict, account):
    """Signs as a wallet does (eth_account, `eth_signTypedData_v4`)."""
    return Account.sign_message(encode_typed_data(full_message=typed_data), account.private_key)


def signatures(typed_data: dict, accounts) -> list[bytes]:
    """65-byte signatures of `accounts`, sorted ascending by signer address."""
    ordered = sorted(accounts, key=lambda a: int(a.address, 16))
    return [bytes(sign(typed_data, a).signature) for a in ordered]


def deadline_in(seconds: int = HOUR) -> int:
    return ape.chain.blocks.head.timestamp + seconds


def bitmap(committee, accounts) -> int:
    positions = [committee.signers().index(a.address) for a in accounts]
    return sum(1 << p for p in positions)


def logs(tx, event):
    return list(tx.decode_logs(event))


def govern(committee, signers, action: str, target=None, arg: bytes = bytes(32), value: int = 0):
    """Proposes, confirms (2-of-3) and executes one governance action; returns the execute receipt."""
    target = target if target is not None else ape.utils.ZERO_ADDRESS
    tx = committee.propose(ACTION[action], target, arg, value, deadline_in(HOUR), sender=signers[0])
    proposal_id = logs(tx, committee.Proposed)[0].proposal_id
    committee.confirm(proposal_id, sender=signers[1])
    return committee.execute(proposal_id, sender=signers[0])


def approve_by_signatures(committee, loan_book, loan_id, accounts, sender, deadline=None):
    deadline = deadline if deadline is not None else deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    return committee.approve_with_signatures(loan_id, deadline, signatures(data, accounts), sender=sender)


# -- construction ------------------------------------------------------------------------


def test_constructor__sets_signers_threshold_and_epoch(committee, loan_book, signers, stranger):
    assert committee.signers() == [s.address for s in signers]
    assert committee.threshold() == 2
    assert committee.epoch() == 1
    assert committee.large_loan_threshold() == 0
    assert committee.large_loan_principal() == 0
    assert committee.LOAN_BOOK() == loan_book.address
    assert all(committee.is_signer(s) for s in signers)
    assert not committee.is_signer(stranger)
    assert committee.proposal_count() == 0


def test_constructor__emits_signers_threshold_and_epoch_snapshot(project, loan_book, deployer, signers):
    committee = deployer.deploy(project.DisbursementCommittee, loan_book, signers, 2)
    receipt = committee.creation_metadata.receipt
    assert [log.signer for log in logs(receipt, committee.SignerAdded)] == [s.address for s in signers]
    [changed] = logs(receipt, committee.ThresholdChanged)
    assert (changed.old_threshold, changed.new_threshold) == (0, 2)
    [bumped] = logs(receipt, committee.EpochBumped)
    assert bumped.epoch == 1
    assert bumped.signers == [s.address for s in signers]
    assert (bumped.threshold, bumped.large_loan_threshold, bumped.large_loan_principal) == (2, 0, 0)


def test_constructor__zero_loan_book__reverts(project, deployer, signers):
    with ape.reverts("committee: zero address"):
        deployer.deploy(project.DisbursementCommittee, ape.utils.ZERO_ADDRESS, signers, 2)


def test_constructor__zero_signer__reverts(project, loan_book, deployer, signers):
    with ape.reverts("committee: zero address"):
        deployer.deploy(project.DisbursementCommittee, loan_book, [signers[0], ape.utils.ZERO_ADDRESS], 1)


def test_constructor__duplicate_signer__reverts(project, loan_book, deployer, signers):
    with ape.reverts("committee: duplicate signer"):
        deployer.deploy(project.DisbursementCommittee, loan_book, [signers[0], signers[1], signers[0]], 2)


@pytest.mark.parametrize("threshold", [0, 4])
def test_constructor__threshold_out_of_range__reverts(project, loan_book, deployer, signers, threshold):
    with ape.reverts("committee: invalid threshold"):
        deployer.deploy(project.DisbursementCommittee, loan_book, signers, threshold)


def test_constructor__no_signers__reverts(project, loan_book, deployer):
    with ape.reverts("committee: invalid threshold"):
        deployer.deploy(project.DisbursementCommittee, loan_book, [], 1)


def test_constructor__32_signers__accepted(project, loan_book, deployer, accounts):
    many = [accounts.generate_test_account() for _ in range(32)]
    committee = deployer.deploy(project.DisbursementCommittee, loan_book, many, 32)
    assert len(committee.signers()) == 32
    assert committee.threshold() == 32


def test_constants(committee):
    assert committee.APPROVAL_TYPEHASH() == keccak(text=APPROVE_TYPE)
    assert committee.MAX_SIGNERS() == 32
    assert committee.MAX_PROPOSAL_LIFETIME() == 30 * 86400
    for name, action_id in ACTION.items():
        assert getattr(committee, f"ACTION_{name}")() == action_id


def test_eip712_domain__discoverable_per_eip5267(committee):
    fields, name, version, chain_id, verifying_contract, salt, extensions = committee.eip712Domain()
    assert fields == b"\x0f"
    assert (name, version) == (DOMAIN_NAME, DOMAIN_VERSION)
    assert chain_id == ape.chain.chain_id
    assert verifying_contract == committee.address
    assert salt == b"\x00" * 32
    assert extensions == []


# -- approve / revoke ---------------------------------------------------------------------


def test_approve__first_approval__recorded_loan_stays_pending(committee, loan_book, create_loan, signers):
    loan_id = create_loan()
    tx = committee.approve(loan_id, sender=signers[0])
    assert committee.approvals(loan_id) == 1
    assert committee.has_approved(loan_id, signers[0])
    assert not committee.has_approved(loan_id, signers[1])
    assert loan_book.loan_state(loan_id) == STATE["PENDING"]
    [event] = logs(tx, committee.Approved)
    assert event.loan_id == loan_id
    assert event.signer == signers[0].address
    assert (event.epoch, event.approvals, event.required) == (1, 1, 2)
    assert logs(tx, committee.LoanApprovalExecuted) == []


def test_approve__reaching_threshold__approves_loan_on_loan_book(committee, loan_book, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    tx = committee.approve(loan_id, sender=signers[2])
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]
    [executed] = logs(tx, committee.LoanApprovalExecuted)
    assert executed.loan_id == loan_id
    assert executed.epoch == 1
    assert executed.approvers == 0b101
    assert executed.signed == 0
    assert (executed.approvals, executed.required) == (2, 2)
    [approved] = logs(tx, loan_book.LoanApproved)
    assert approved.approver == committee.address


def test_approve__threshold_one__single_approval_executes(
    project, loan_book, committee, deployer, signers, create_loan
):
    solo = deployer.deploy(project.DisbursementCommittee, loan_book, signers, 1)
    govern(committee, signers, "GRANT_ROLE", target=solo, arg=role("APPROVER_ROLE"))
    loan_id = create_loan()
    solo.approve(loan_id, sender=signers[1])
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


def test_approve__non_signer__reverts(committee, create_loan, stranger):
    loan_id = create_loan()
    with ape.reverts("committee: not a signer"):
        committee.approve(loan_id, sender=stranger)


def test_approve__twice__reverts(committee, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    with ape.reverts("committee: already approved"):
        committee.approve(loan_id, sender=signers[0])


def test_approve__unknown_loan__reverts(committee, signers):
    with ape.reverts(NOT_PENDING):
        committee.approve(keccak(text="no such loan"), sender=signers[0])


def test_approve__approved_loan__reverts(committee, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    committee.approve(loan_id, sender=signers[1])
    with ape.reverts(NOT_PENDING):
        committee.approve(loan_id, sender=signers[2])


def test_approve__cancelled_loan__reverts(committee, loan_book, create_loan, originator, signers):
    loan_id = create_loan()
    loan_book.cancel_loan(loan_id, keccak(text="borrower withdrew"), sender=originator)
    with ape.reverts(NOT_PENDING):
        committee.approve(loan_id, sender=signers[0])


def test_approve__loan_book_paused__final_approval_reverts(
    committee, loan_book, create_loan, signers, pauser
):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    loan_book.pause(sender=pauser)
    with ape.reverts("pausable: contract is paused"):
        committee.approve(loan_id, sender=signers[1])


def test_revoke__withdraws_on_chain_approval(committee, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[1])
    tx = committee.revoke(loan_id, sender=signers[1])
    assert committee.approvals(loan_id) == 0
    assert not committee.has_approved(loan_id, signers[1])
    [event] = logs(tx, committee.Revoked)
    assert event.loan_id == loan_id
    assert event.signer == signers[1].address
    assert (event.epoch, event.approvals) == (1, 0)
    # The signer may approve again afterwards.
    committee.approve(loan_id, sender=signers[1])
    assert committee.approvals(loan_id) == 1


def test_revoke__keeps_other_approvals(committee, create_loan, signers, large_tier):
    large_tier(threshold=3, principal_floor=1)
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    committee.approve(loan_id, sender=signers[2])
    tx = committee.revoke(loan_id, sender=signers[0])
    assert committee.approvals(loan_id) == 1
    assert committee.has_approved(loan_id, signers[2])
    assert logs(tx, committee.Revoked)[0].approvals == 1


def test_revoke__not_approved__reverts(committee, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    with ape.reverts("committee: not approved"):
        committee.revoke(loan_id, sender=signers[1])


def test_revoke__non_signer__reverts(committee, create_loan, stranger):
    loan_id = create_loan()
    with ape.reverts("committee: not a signer"):
        committee.revoke(loan_id, sender=stranger)


def test_revoke__approved_loan__reverts(committee, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    committee.approve(loan_id, sender=signers[1])
    with ape.reverts(NOT_PENDING):
        committee.revoke(loan_id, sender=signers[0])


# -- views --------------------------------------------------------------------------------


def test_approvals_and_has_approved__approved_loan__answer_closed_tally(committee, create_loan, signers):
    """An auditor's call after approval answers (0 / false: the tally closed) instead of reverting."""
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    committee.approve(loan_id, sender=signers[1])
    assert committee.approvals(loan_id) == 0
    assert not committee.has_approved(loan_id, signers[0])
    assert committee.required_approvals(loan_id) == 2


def test_approvals_and_has_approved__cancelled_and_unknown__answer(
    committee, loan_book, create_loan, originator, signers
):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    loan_book.cancel_loan(loan_id, keccak(text="withdrawn"), sender=originator)
    unknown = keccak(text="never created")
    for loan in (loan_id, unknown):
        assert committee.approvals(loan) == 0
        assert not committee.has_approved(loan, signers[0])


def test_approvals__web3_call_after_approval__does_not_throw(chain, committee, create_loan, signers):
    """What an auditor's ethers/web3 script does: a plain eth_call through the ABI."""
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    committee.approve(loan_id, sender=signers[1])
    w3 = chain.provider.web3
    abi = [item.model_dump(mode="json", by_alias=True) for item in committee.contract_type.abi]
    bound = w3.eth.contract(address=committee.address, abi=abi)
    assert bound.functions.approvals(loan_id).call() == 0
    assert bound.functions.has_approved(loan_id, signers[0].address).call() is False


def test_has_approved__non_signer__false(committee, create_loan, stranger):
    assert not committee.has_approved(create_loan(), stranger)


def test_required_approvals__threshold_without_tier(committee, create_loan):
    assert committee.required_approvals(create_loan()) == 2


def test_domain_separator__matches_eip712(committee):
    domain_type = keccak(
        text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    expected = keccak(
        domain_type
        + keccak(text=DOMAIN_NAME)
        + keccak(text=DOMAIN_VERSION)
        + ape.chain.chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(committee.address[2:])
    )
    assert committee.DOMAIN_SEPARATOR() == expected


# -- approve_with_signatures -----------------------------------------------------------------


def test_approval_digest__equals_eth_account_digest(committee, loan_book, create_loan, signers):
    loan_id = create_loan()
    deadline = deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    assert committee.approval_digest(loan_id, deadline) == sign(data, signers[0]).message_hash


@pytest.mark.parametrize(
    "domain",
    [
        {"chainId": 1},
        {"verifyingContract": "0x000000000000000000000000000000000000dEaD"},
        {"version": "2"},
    ],
    ids=["chain_id", "verifying_contract", "version"],
)
def test_approval_digest__binds_domain(committee, loan_book, create_loan, signers, domain):
    loan_id = create_loan()
    deadline = deadline_in()
    other = approval_typed_data(committee, loan_book, loan_id, deadline, domain=domain)
    assert committee.approval_digest(loan_id, deadline) != sign(other, signers[0]).message_hash
    # A signature for another chain or contract recovers to a stranger.
    with ape.reverts("committee: not a signer"):
        committee.approve_with_signatures(
            loan_id, deadline, signatures(other, signers[:1]), sender=signers[0]
        )


@pytest.mark.parametrize(
    "message",
    [
        {"termsHash": keccak(text="other agreement")},
        {"currency": 840},
        {"principal": 1},
        {"totalDue": 200_000_00},
        {"installmentCount": 12},
        {"installmentInterval": 7 * 86_400},
        {"gracePeriod": 0},
        {"maxLateFees": 10**12},
        {"payoutRef": keccak(text="other")},
    ],
    ids=[
        "terms_hash",
        "currency",
        "principal",
        "total_due",
        "installment_count",
        "installment_interval",
        "grace_period",
        "max_late_fees",
        "payout_ref",
    ],
)
def test_approve_with_signatures__signature_over_other_terms__reverts(
    committee, loan_book, create_loan, signers, message
):
    loan_id = create_loan()
    deadline = deadline_in()
    other = approval_typed_data(committee, loan_book, loan_id, deadline, message=message)
    with ape.reverts("committee: not a signer"):
        committee.approve_with_signatures(
            loan_id, deadline, signatures(other, signers[:1]), sender=signers[0]
        )


def test_approve_with_signatures__wallet_signatures__approve_loan(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    tx = approve_by_signatures(committee, loan_book, loan_id, [signers[2], signers[0]], sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]
    [executed] = logs(tx, committee.LoanApprovalExecuted)
    assert executed.loan_id == loan_id
    assert executed.epoch == 1
    assert executed.approvers == executed.signed == 0b101
    assert (executed.approvals, executed.required) == (2, 2)
    assert logs(tx, committee.Approved) == []  # one event per call, not per signature
    [approved] = logs(tx, loan_book.LoanApproved)
    assert approved.approver == committee.address


def test_approve_with_signatures__all_signers(committee, loan_book, create_loan, signers, stranger):
    loan_id = create_loan()
    tx = approve_by_signatures(committee, loan_book, loan_id, signers, sender=stranger)
    [executed] = logs(tx, committee.LoanApprovalExecuted)
    assert (executed.approvers, executed.approvals) == (0b111, 3)


def test_approve_with_signatures__eip2098_compact_signatures__accepted(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    deadline = deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    compact = []
    for account in signers[:2]:
        signed = sign(data, account)
        vs = ((signed.v - 27) << 255) | signed.s
        compact.append(signed.r.to_bytes(32, "big") + vs.to_bytes(32, "big"))
    committee.approve_with_signatures(loan_id, deadline, compact, sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


def test_approve_with_signatures__on_chain_approval_plus_one_signature__reaches_threshold(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[1])
    tx = approve_by_signatures(committee, loan_book, loan_id, [signers[0]], sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]
    [executed] = logs(tx, committee.LoanApprovalExecuted)
    assert executed.approvers == 0b011
    assert executed.signed == 0b001
    assert executed.approvals == 2


def test_approve_with_signatures__on_chain_approver_also_signs__counted_once(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[1])
    tx = approve_by_signatures(committee, loan_book, loan_id, [signers[1], signers[2]], sender=stranger)
    [executed] = logs(tx, committee.LoanApprovalExecuted)
    assert (executed.approvers, executed.signed, executed.approvals) == (0b110, 0b110, 2)


def test_approve_with_signatures__on_chain_approver_alone_signs__below_threshold(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[1])
    with ape.reverts("committee: below threshold"):
        approve_by_signatures(committee, loan_book, loan_id, [signers[1]], sender=stranger)


def test_approve_with_signatures__revoked_on_chain_approval__not_counted(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[1])
    committee.revoke(loan_id, sender=signers[1])
    with ape.reverts("committee: below threshold"):
        approve_by_signatures(committee, loan_book, loan_id, [signers[0]], sender=stranger)


def test_approve_with_signatures__one_signature__below_threshold(
    committee, loan_book, create_loan, signers, stranger
):
    with ape.reverts("committee: below threshold"):
        approve_by_signatures(committee, loan_book, create_loan(), [signers[0]], sender=stranger)


def test_approve_with_signatures__no_signatures__reverts(committee, create_loan, stranger):
    with ape.reverts("committee: no signatures"):
        committee.approve_with_signatures(create_loan(), deadline_in(), [], sender=stranger)


def test_approve_with_signatures__expired_deadline__reverts(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    deadline = ape.chain.blocks.head.timestamp - 1
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    with ape.reverts("committee: signature expired"):
        committee.approve_with_signatures(loan_id, deadline, signatures(data, signers[:2]), sender=stranger)


def test_approve_with_signatures__at_deadline__accepted(committee, loan_book, create_loan, signers, stranger):
    loan_id = create_loan()
    deadline = deadline_in(HOUR)
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    sigs = signatures(data, signers[:2])
    ape.chain.pending_timestamp = deadline
    committee.approve_with_signatures(loan_id, deadline, sigs, sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


def test_approve_with_signatures__deadline_passes_after_signing__reverts(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    deadline = deadline_in(HOUR)
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    sigs = signatures(data, signers[:2])
    ape.chain.pending_timestamp = deadline + 1
    with ape.reverts("committee: signature expired"):
        committee.approve_with_signatures(loan_id, deadline, sigs, sender=stranger)


def test_approve_with_signatures__other_deadline_than_signed__reverts(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    deadline = deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    with ape.reverts("committee: not a signer"):
        committee.approve_with_signatures(
            loan_id, deadline + 1, signatures(data, signers[:1]), sender=stranger
        )


def test_approve_with_signatures__unsorted__reverts(committee, loan_book, create_loan, signers, stranger):
    loan_id = create_loan()
    deadline = deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    descending = list(reversed(signatures(data, signers[:2])))
    with ape.reverts("committee: signers not ascending"):
        committee.approve_with_signatures(loan_id, deadline, descending, sender=stranger)


def test_approve_with_signatures__duplicate__reverts(committee, loan_book, create_loan, signers, stranger):
    loan_id = create_loan()
    deadline = deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    [sig] = signatures(data, signers[:1])
    with ape.reverts("committee: duplicate signer"):
        committee.approve_with_signatures(loan_id, deadline, [sig, sig], sender=stranger)


def test_approve_with_signatures__duplicate_in_other_form__reverts(
    committee, loan_book, create_loan, signers, stranger
):
    """The same signer as a 65-byte and an EIP-2098 signature is still one signer."""
    loan_id = create_loan()
    deadline = deadline_in()
    signed = sign(approval_typed_data(committee, loan_book, loan_id, deadline), signers[0])
    compact = signed.r.to_bytes(32, "big") + (((signed.v - 27) << 255) | signed.s).to_bytes(32, "big")
    with ape.reverts("committee: duplicate signer"):
        committee.approve_with_signatures(
            loan_id, deadline, [bytes(signed.signature), compact], sender=stranger
        )


def test_approve_with_signatures__non_signer__reverts(committee, loan_book, create_loan, signers, stranger):
    loan_id = create_loan()
    deadline = deadline_in()
    data = approval_typed_data(committee, loan_book, loan_id, deadline)
    with ape.reverts("committee: not a signer"):
        committee.approve_with_signatures(
            loan_id, deadline, signatures(data, [signers[0], stranger]), sender=signers[0]
        )


def test_approve_with_signatures__high_s__reverts(committee, loan_book, create_loan, signers, stranger):
    loan_id = create_loan()
    deadline = deadline_in()
    signed = sign(approval_typed_data(committee, loan_book, loan_id, deadline), signers[0])
    # (r, n - s, flipped v) is the other valid signature of the same message and signer.
    high_s = (
        signed.r.to_bytes(32, "big") + (SECP256K1_N - signed.s).to_bytes(32, "big") + bytes([55 - signed.v])
    )
    assert Account._recover_hash(signed.message_hash, signature=high_s) == signers[0].address
    with ape.reverts("ecdsa: invalid signature `s` value"):
        committee.approve_with_signatures(loan_id, deadline, [high_s], sender=stranger)


@pytest.mark.parametrize(
    "garbage",
    [bytes(64) + b"\x1b", (1).to_bytes(32, "big") * 2 + b"\x1d"],
    ids=["zero_r_s", "bad_v"],
)
def test_approve_with_signatures__recovers_to_zero__reverts(committee, create_loan, stranger, garbage):
    with ape.reverts("ecdsa: invalid signature"):
        committee.approve_with_signatures(create_loan(), deadline_in(), [garbage], sender=stranger)


@pytest.mark.parametrize("v_offset", [-27, 8], ids=["y_parity_0_1", "eip155_35_36"])
def test_approve_with_signatures__v_other_than_27_28__reverts(
    committee, loan_book, create_loan, signers, stranger, v_offset
):
    """Why the gateway normalizes v before it keeps a signature: the contract takes only 27/28."""
    loan_id = create_loan()
    deadline = deadline_in()
    signed = sign(approval_typed_data(committee, loan_book, loan_id, deadline), signers[0])
    other_v = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v + v_offset])
    with ape.reverts("ecdsa: invalid signature"):
        committee.approve_with_signatures(loan_id, deadline, [other_v], sender=stranger)


def test_approve_with_signatures__wrong_length__reverts(committee, create_loan, stranger):
    with ape.reverts("ecdsa: invalid signature"):
        committee.approve_with_signatures(create_loan(), deadline_in(), [b"\x01" * 63], sender=stranger)


def test_approve_with_signatures__loan_not_pending__reverts(
    committee, loan_book, create_loan, signers, stranger
):
    loan_id = create_loan()
    deadline = deadline_in()
    sigs = signatures(approval_typed_data(committee, loan_book, loan_id, deadline), signers[:2])
    committee.approve_with_signatures(loan_id, deadline, sigs, sender=stranger)
    with ape.reverts(NOT_PENDING):
        committee.approve_with_signatures(loan_id, deadline, sigs, sender=stranger)


def test_approve_with_signatures__unknown_loan__reverts(committee, stranger):
    with ape.reverts(NOT_PENDING):
        committee.approve_with_signatures(
            keccak(text="no such loan"), deadline_in(), [bytes(65)], sender=stranger
        )


def test_approve_with_signatures__loan_book_paused__reverts(
    committee, loan_book, create_loan, signers, stranger, pauser
):
    loan_id = create_loan()
    loan_book.pause(sender=pauser)
    with ape.reverts("pausable: contract is paused"):
        approve_by_signatures(committee, loan_book, loan_id, signers[:2], sender=stranger)


# -- large-loan tier -----------------------------------------------------------------------


@pytest.fixture
def large_tier(committee, signers):
    """Sets the large-loan tier through governance (2-of-3)."""

    def _set(threshold: int, principal_floor: int):
        govern(
            committee,
            signers,
            "SET_LARGE_LOAN_TIER",
            arg=principal_floor.to_bytes(32, "big"),
            value=threshold,
        )

    return _set


def test_large_tier__large_loan_requires_large_threshold(
    committee, loan_book, create_loan, signers, stranger, large_tier
):
    large_tier(threshold=3, principal_floor=50_000_00)
    large = create_loan(principal=100_000_00)
    assert committee.required_approvals(large) == 3
    with ape.reverts("committee: below threshold"):
        approve_by_signatures(committee, loan_book, large, signers[:2], sender=stranger)
    tx = approve_by_signatures(committee, loan_book, large, signers, sender=stranger)
    [executed] = logs(tx, committee.LoanApprovalExecuted)
    assert (executed.approvals, executed.required) == (3, 3)
    assert loan_book.loan_state(large) == STATE["APPROVED"]


def test_large_tier__loan_at_floor__uses_threshold(
    committee, loan_book, create_loan, signers, stranger, large_tier
):
    large_tier(threshold=3, principal_floor=50_000_00)
    at_floor = create_loan(principal=50_000_00, total_due=60_000_00)
    assert committee.required_approvals(at_floor) == 2
    approve_by_signatures(committee, loan_book, at_floor, signers[:2], sender=stranger)
    assert loan_book.loan_state(at_floor) == STATE["APPROVED"]


def test_large_tier__on_chain_approvals_need_large_threshold(
    committee, loan_book, create_loan, signers, large_tier
):
    large_tier(threshold=3, principal_floor=1)
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    tx = committee.approve(loan_id, sender=signers[1])
    assert loan_book.loan_state(loan_id) == STATE["PENDING"]
    assert logs(tx, committee.Approved)[0].required == 3
    committee.approve(loan_id, sender=signers[2])
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


# -- gas --------------------------------------------------------------------------------------


def test_gas__approve_with_signatures(committee, loan_book, create_loan, signers, stranger, capsys):
    """Published figures (docs/BENCHMARKS.md): 2-of-3 <= 100k incl. LoanBook.approve_loan, +<= 8k per signature."""
    used = {}
    for count in (2, 3):
        tx = approve_by_signatures(committee, loan_book, create_loan(), signers[:count], sender=stranger)
        used[count] = tx.gas_used
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    used["approve+1sig"] = approve_by_signatures(
        committee, loan_book, loan_id, [signers[1]], sender=stranger
    ).gas_used
    loan_id = create_loan()
    used["approve (first)"] = committee.approve(loan_id, sender=signers[0]).gas_used
    used["approve (executing)"] = committee.approve(loan_id, sender=signers[1]).gas_used
    with capsys.disabled():
        print(f"\n[gas] DisbursementCommittee: {used}")
    assert used[2] <= 100_000
    assert used[3] - used[2] <= 8_000


def test_gas__per_signature_scaling(project, deployer, originator, stranger, accounts, capsys):
    """2..8 signatures on an 8-signer committee with threshold 2 (own LoanBook, wired like deploy.py)."""
    book = deployer.deploy(project.LoanBook, 90)
    book.grantRole(role("ORIGINATOR_ROLE"), originator, sender=deployer)
    many = [accounts.generate_test_account() for _ in range(8)]
    committee = deployer.deploy(project.DisbursementCommittee, book, many, 2)
    book.grantRole(role("APPROVER_ROLE"), committee, sender=deployer)
    used = []
    for count in range(2, 9):
        loan_id = keccak(text=f"gas-scaling:{count}")
        book.create_loan(loan_id, default_terms(), sender=originator)
        used.append(approve_by_signatures(committee, book, loan_id, many[:count], sender=stranger).gas_used)
    steps = [b - a for a, b in itertools.pairwise(used)]
    with capsys.disabled():
        print(f"\n[gas] approve_with_signatures 2..8 sigs: {used}; per extra signature: {steps}")
    assert max(steps) <= 8_000
