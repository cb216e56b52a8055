"""DisbursementCommittee governance: propose / confirm / execute, the committee's own
configuration (signers, threshold, large-loan tier, epochs) and LoanBook admin actions."""

from __future__ import annotations

import ape
import pytest
from conftest import DAY, STATE, default_terms, role
from eth_utils import keccak
from test_committee import (
    ACTION,
    HOUR,
    approval_typed_data,
    approve_by_signatures,
    deadline_in,
    govern,
    logs,
    signatures,
)

ZERO = ape.utils.ZERO_ADDRESS
NO_ARG = bytes(32)
MISSING_ROLE = "access_control: account is missing role"


def propose(
    committee, proposer, action: str, target=ZERO, arg: bytes = NO_ARG, value: int = 0, expires_at=None
):
    expires_at = expires_at if expires_at is not None else deadline_in(HOUR)
    tx = committee.propose(ACTION[action], target, arg, value, expires_at, sender=proposer)
    return logs(tx, committee.Proposed)[0].proposal_id


def as_bytes32(number: int) -> bytes:
    return number.to_bytes(32, "big")


@pytest.fixture
def new_signer(accounts):
    return accounts[9]


# -- propose -----------------------------------------------------------------------------


def test_propose__records_proposal_with_proposers_confirmation(committee, signers, new_signer):
    expires_at = deadline_in(HOUR)
    tx = committee.propose(ACTION["ADD_SIGNER"], new_signer, NO_ARG, 3, expires_at, sender=signers[1])
    [event] = logs(tx, committee.Proposed)
    assert event.proposal_id == 1 == committee.proposal_count()
    assert event.proposer == signers[1].address
    assert (event.action, event.target, event.value) == (ACTION["ADD_SIGNER"], new_signer.address, 3)
    assert event.arg == NO_ARG
    assert (event.expires_at, event.epoch) == (expires_at, 1)
    proposal = committee.proposals(1)
    assert proposal.action == ACTION["ADD_SIGNER"]
    assert proposal.target == new_signer.address
    assert (proposal.value, proposal.expires_at, proposal.epoch) == (3, expires_at, 1)
    assert proposal.confirmations == 0b010
    assert not proposal.executed
    assert committee.confirmations(1) == 1
    assert committee.has_confirmed(1, signers[1])
    assert not committee.has_confirmed(1, signers[0])


def test_propose__ids_increase(committee, signers):
    assert propose(committee, signers[0], "PAUSE") == 1
    assert propose(committee, signers[0], "PAUSE") == 2


def test_propose__non_signer__reverts(committee, stranger):
    with ape.reverts("committee: not a signer"):
        committee.propose(ACTION["PAUSE"], ZERO, NO_ARG, 0, deadline_in(), sender=stranger)


def test_propose__expiry_in_past__reverts(committee, signers):
    with ape.reverts("committee: proposal expired"):
        propose(committee, signers[0], "PAUSE", expires_at=ape.chain.blocks.head.timestamp - 1)


def test_propose__expiry_too_far__reverts(committee, signers):
    too_far = ape.chain.blocks.head.timestamp + committee.MAX_PROPOSAL_LIFETIME() + HOUR
    with ape.reverts("committee: expiry too far"):
        propose(committee, signers[0], "PAUSE", expires_at=too_far)


@pytest.mark.parametrize("action", [0, 11, 255])
def test_propose__unknown_action__reverts(committee, signers, action):
    with ape.reverts("committee: unknown action"):
        committee.propose(action, ZERO, NO_ARG, 0, deadline_in(), sender=signers[0])


@pytest.mark.parametrize(
    ("action", "target", "value", "message"),
    [
        ("ADD_SIGNER", ZERO, 2, "committee: zero address"),
        ("ADD_SIGNER", "signer", 2, "committee: already a signer"),
        ("ADD_SIGNER", "new", 0, "committee: invalid threshold"),
        ("ADD_SIGNER", "new", 5, "committee: invalid threshold"),
        ("REMOVE_SIGNER", "new", 2, "committee: unknown signer"),
        ("REMOVE_SIGNER", "signer", 3, "committee: invalid threshold"),
        ("REMOVE_SIGNER", "signer", 0, "committee: invalid threshold"),
        ("SET_THRESHOLD", ZERO, 0, "committee: invalid threshold"),
        ("SET_THRESHOLD", ZERO, 4, "committee: invalid threshold"),
        ("GRANT_ROLE", ZERO, 0, "committee: zero address"),
        ("REVOKE_ROLE", ZERO, 0, "committee: zero address"),
    ],
)
def test_propose__invalid_arguments__revert(committee, signers, new_signer, action, target, value, message):
    target = {"signer": signers[2], "new": new_signer}.get(target, target)
    with ape.reverts(message):
        propose(committee, signers[0], action, target=target, value=value)


@pytest.mark.parametrize(
    ("large_threshold", "floor", "message"),
    [
        (1, 1_000, "committee: invalid large threshold"),  # below the threshold
        (4, 1_000, "committee: invalid large threshold"),  # above the signer count
        (3, 0, "committee: invalid large threshold"),  # tier off takes no threshold
        (3, 2**128, "committee: principal floor too large"),
    ],
)
def test_propose__invalid_large_tier__reverts(committee, signers, large_threshold, floor, message):
    with ape.reverts(message):
        propose(committee, signers[0], "SET_LARGE_LOAN_TIER", arg=as_bytes32(floor), value=large_threshold)


# -- confirm ------------------------------------------------------------------------------


def test_confirm__adds_confirmation(committee, signers):
    proposal_id = propose(committee, signers[0], "PAUSE")
    tx = committee.confirm(proposal_id, sender=signers[2])
    [event] = logs(tx, committee.Confirmed)
    assert (event.proposal_id, event.signer, event.confirmations) == (proposal_id, signers[2].address, 2)
    assert committee.confirmations(proposal_id) == 2
    assert committee.has_confirmed(proposal_id, signers[2])
    assert committee.proposals(proposal_id).confirmations == 0b101


def test_confirm__proposer_again__reverts(committee, signers):
    proposal_id = propose(committee, signers[0], "PAUSE")
    with ape.reverts("committee: already confirmed"):
        committee.confirm(proposal_id, sender=signers[0])


def test_confirm__non_signer__reverts(committee, signers, stranger):
    proposal_id = propose(committee, signers[0], "PAUSE")
    with ape.reverts("committee: not a signer"):
        committee.confirm(proposal_id, sender=stranger)


@pytest.mark.parametrize("proposal_id", [0, 1, 99])
def test_confirm__unknown_proposal__reverts(committee, signers, proposal_id):
    with ape.reverts("committee: unknown proposal"):
        committee.confirm(proposal_id, sender=signers[0])


def test_confirm__expired__reverts(committee, signers):
    expires_at = deadline_in(HOUR)
    proposal_id = propose(committee, signers[0], "PAUSE", expires_at=expires_at)
    ape.chain.pending_timestamp = expires_at + 1
    with ape.reverts("committee: proposal expired"):
        committee.confirm(proposal_id, sender=signers[1])


def test_confirm__executed__reverts(committee, signers):
    proposal_id = propose(committee, signers[0], "PAUSE")
    committee.confirm(proposal_id, sender=signers[1])
    committee.execute(proposal_id, sender=signers[1])
    with ape.reverts("committee: already executed"):
        committee.confirm(proposal_id, sender=signers[2])


def test_confirm__stale_epoch__reverts(committee, signers):
    pending = propose(committee, signers[0], "PAUSE")
    govern(committee, signers, "SET_THRESHOLD", value=2)  # same threshold, still a new epoch
    with ape.reverts("committee: proposal stale"):
        committee.confirm(pending, sender=signers[1])


# -- execute ------------------------------------------------------------------------------


def test_execute__emits_executed_and_marks_proposal(committee, loan_book, signers):
    proposal_id = propose(committee, signers[0], "PAUSE")
    committee.confirm(proposal_id, sender=signers[1])
    tx = committee.execute(proposal_id, sender=signers[2])
    [event] = logs(tx, committee.Executed)
    assert (event.proposal_id, event.executor, event.action) == (
        proposal_id,
        signers[2].address,
        ACTION["PAUSE"],
    )
    assert committee.proposals(proposal_id).executed
    assert loan_book.paused()


def test_execute__below_threshold__reverts(committee, signers):
    proposal_id = propose(committee, signers[0], "PAUSE")
    with ape.reverts("committee: not enough confirmations"):
        committee.execute(proposal_id, sender=signers[0])


def test_execute__non_signer__reverts(committee, signers, stranger):
    proposal_id = propose(committee, signers[0], "PAUSE")
    committee.confirm(proposal_id, sender=signers[1])
    with ape.reverts("committee: not a signer"):
        committee.execute(proposal_id, sender=stranger)


def test_execute__replay__reverts(committee, signers):
    proposal_id = propose(committee, signers[0], "PAUSE")
    committee.confirm(proposal_id, sender=signers[1])
    committee.execute(proposal_id, sender=signers[0])
    with ape.reverts("committee: already executed"):
        committee.execute(proposal_id, sender=signers[0])


def test_execute__unknown_proposal__reverts(committee, signers):
    with ape.reverts("committee: unknown proposal"):
        committee.execute(7, sender=signers[0])


def test_execute__at_expiry__succeeds(committee, loan_book, signers):
    expires_at = deadline_in(HOUR)
    proposal_id = propose(committee, signers[0], "PAUSE", expires_at=expires_at)
    committee.confirm(proposal_id, sender=signers[1])
    ape.chain.pending_timestamp = expires_at
    committee.execute(proposal_id, sender=signers[0])
    assert loan_book.paused()


def test_execute__after_expiry__reverts(committee, signers):
    expires_at = deadline_in(HOUR)
    proposal_id = propose(committee, signers[0], "PAUSE", expires_at=expires_at)
    committee.confirm(proposal_id, sender=signers[1])
    ape.chain.pending_timestamp = expires_at + 1
    with ape.reverts("committee: proposal expired"):
        committee.execute(proposal_id, sender=signers[0])


def test_execute__stale_epoch__reverts(committee, signers):
    """Two confirmed configuration proposals: executing one voids the other."""
    first = propose(committee, signers[0], "SET_THRESHOLD", value=3)
    second = propose(committee, signers[0], "SET_THRESHOLD", value=1)
    committee.confirm(first, sender=signers[1])
    committee.confirm(second, sender=signers[1])
    committee.execute(first, sender=signers[0])
    assert committee.confirmations(second) == 0
    assert not committee.has_confirmed(second, signers[0])
    with ape.reverts("committee: proposal stale"):
        committee.execute(second, sender=signers[0])


def test_execute__loan_book_revert__leaves_proposal_open(committee, loan_book, create_loan, signers):
    loan_id = create_loan()
    proposal_id = propose(committee, signers[0], "WRITE_OFF", arg=loan_id)
    committee.confirm(proposal_id, sender=signers[1])
    with ape.reverts("loan_book: not defaulted"):
        committee.execute(proposal_id, sender=signers[0])
    assert not committee.proposals(proposal_id).executed


def test_execute__threshold_one__proposer_alone(project, loan_book, deployer, signers):
    solo = deployer.deploy(project.DisbursementCommittee, loan_book, signers, 1)
    proposal_id = propose(solo, signers[2], "SET_THRESHOLD", value=2)
    solo.execute(proposal_id, sender=signers[2])
    assert solo.threshold() == 2


# -- signer set, threshold, large-loan tier ---------------------------------------------------


def test_add_signer__joins_with_new_threshold_and_epoch(committee, signers, new_signer):
    tx = govern(committee, signers, "ADD_SIGNER", target=new_signer, value=3)
    assert committee.signers() == [s.address for s in signers] + [new_signer.address]
    assert committee.is_signer(new_signer)
    assert committee.threshold() == 3
    assert committee.epoch() == 2
    assert [log.signer for log in logs(tx, committee.SignerAdded)] == [new_signer.address]
    [changed] = logs(tx, committee.ThresholdChanged)
    assert (changed.old_threshold, changed.new_threshold) == (2, 3)
    [bumped] = logs(tx, committee.EpochBumped)
    assert bumped.epoch == 2
    assert bumped.signers == committee.signers()
    assert (bumped.threshold, bumped.large_loan_threshold, bumped.large_loan_principal) == (3, 0, 0)


def test_add_signer__same_threshold__no_threshold_event(committee, signers, new_signer):
    tx = govern(committee, signers, "ADD_SIGNER", target=new_signer, value=2)
    assert logs(tx, committee.ThresholdChanged) == []
    assert committee.threshold() == 2


def test_add_signer__new_signer_approves(committee, loan_book, create_loan, signers, new_signer, stranger):
    govern(committee, signers, "ADD_SIGNER", target=new_signer, value=2)
    loan_id = create_loan()
    approve_by_signatures(committee, loan_book, loan_id, [new_signer, signers[1]], sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


def test_add_signer__beyond_32__reverts(project, loan_book, deployer, accounts):
    many = [accounts.generate_test_account() for _ in range(32)]
    full = deployer.deploy(project.DisbursementCommittee, loan_book, many, 1)
    deployer.transfer(many[0], 10**18)
    with ape.reverts("committee: too many signers"):
        propose(full, many[0], "ADD_SIGNER", target=accounts.generate_test_account(), value=1)


def test_add_signer__threshold_above_large_threshold__reverts(committee, signers, new_signer):
    govern(committee, signers, "SET_LARGE_LOAN_TIER", arg=as_bytes32(1_000), value=2)
    with ape.reverts("committee: invalid large threshold"):
        propose(committee, signers[0], "ADD_SIGNER", target=new_signer, value=3)


def test_remove_signer__swaps_last_into_place(committee, loan_book, create_loan, signers, stranger):
    tx = govern(committee, signers, "REMOVE_SIGNER", target=signers[0], value=2)
    assert committee.signers() == [signers[2].address, signers[1].address]
    assert not committee.is_signer(signers[0])
    assert committee.epoch() == 2
    assert [log.signer for log in logs(tx, committee.SignerRemoved)] == [signers[0].address]
    assert logs(tx, committee.EpochBumped)[0].signers == [signers[2].address, signers[1].address]
    # The moved signer still counts, with its new bit; the removed one no longer does.
    loan_id = create_loan()
    with ape.reverts("committee: not a signer"):
        committee.approve(loan_id, sender=signers[0])
    with ape.reverts("committee: not a signer"):
        approve_by_signatures(committee, loan_book, loan_id, [signers[0], signers[1]], sender=stranger)
    tx = approve_by_signatures(committee, loan_book, loan_id, [signers[1], signers[2]], sender=stranger)
    assert logs(tx, committee.LoanApprovalExecuted)[0].approvers == 0b11


def test_remove_signer__last_in_list(committee, signers):
    govern(committee, signers, "REMOVE_SIGNER", target=signers[2], value=1)
    assert committee.signers() == [signers[0].address, signers[1].address]
    assert committee.threshold() == 1


def test_remove_signer__would_break_large_tier__reverts(committee, signers):
    govern(committee, signers, "SET_LARGE_LOAN_TIER", arg=as_bytes32(1_000), value=3)
    with ape.reverts("committee: invalid large threshold"):
        propose(committee, signers[0], "REMOVE_SIGNER", target=signers[2], value=2)


def test_remove_signer__only_signer__reverts(project, loan_book, deployer, signers):
    solo = deployer.deploy(project.DisbursementCommittee, loan_book, signers[:1], 1)
    with ape.reverts("committee: invalid threshold"):
        propose(solo, signers[0], "REMOVE_SIGNER", target=signers[0], value=1)


def test_set_threshold__changes_requirement(committee, loan_book, create_loan, signers, stranger):
    tx = govern(committee, signers, "SET_THRESHOLD", value=3)
    assert committee.threshold() == 3
    [changed] = logs(tx, committee.ThresholdChanged)
    assert (changed.old_threshold, changed.new_threshold) == (2, 3)
    loan_id = create_loan()
    assert committee.required_approvals(loan_id) == 3
    with ape.reverts("committee: below threshold"):
        approve_by_signatures(committee, loan_book, loan_id, signers[:2], sender=stranger)
    approve_by_signatures(committee, loan_book, loan_id, signers, sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


def test_set_threshold__governance_needs_new_threshold(committee, signers):
    govern(committee, signers, "SET_THRESHOLD", value=3)
    proposal_id = propose(committee, signers[0], "PAUSE")
    committee.confirm(proposal_id, sender=signers[1])
    with ape.reverts("committee: not enough confirmations"):
        committee.execute(proposal_id, sender=signers[0])
    committee.confirm(proposal_id, sender=signers[2])
    committee.execute(proposal_id, sender=signers[0])


def test_set_large_loan_tier__on_and_off(committee, signers):
    tx = govern(committee, signers, "SET_LARGE_LOAN_TIER", arg=as_bytes32(50_000_00), value=3)
    assert (committee.large_loan_threshold(), committee.large_loan_principal()) == (3, 50_000_00)
    [changed] = logs(tx, committee.LargeLoanTierChanged)
    assert (changed.threshold, changed.principal_floor) == (3, 50_000_00)
    assert logs(tx, committee.EpochBumped)[0].large_loan_principal == 50_000_00
    assert committee.epoch() == 2
    govern(committee, signers, "SET_LARGE_LOAN_TIER", arg=NO_ARG, value=0)
    assert (committee.large_loan_threshold(), committee.large_loan_principal()) == (0, 0)
    assert committee.epoch() == 3


def test_set_large_loan_tier__largest_floor(committee, signers):
    govern(committee, signers, "SET_LARGE_LOAN_TIER", arg=as_bytes32(2**128 - 1), value=2)
    assert committee.large_loan_principal() == 2**128 - 1
    assert committee.threshold() == 2


# -- epochs ---------------------------------------------------------------------------------------


def test_epoch_bump__voids_pending_on_chain_approvals(committee, create_loan, signers):
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    govern(committee, signers, "SET_THRESHOLD", value=2)
    assert committee.approvals(loan_id) == 0
    assert not committee.has_approved(loan_id, signers[0])
    committee.approve(loan_id, sender=signers[0])  # not "already approved": a new tally
    assert committee.approvals(loan_id) == 1


def test_epoch_bump__old_epoch_signatures_rejected(
    committee, loan_book, create_loan, signers, new_signer, stranger
):
    loan_id = create_loan()
    deadline = deadline_in(HOUR)
    old = approval_typed_data(committee, loan_book, loan_id, deadline)
    assert old["message"]["epoch"] == 1
    govern(committee, signers, "ADD_SIGNER", target=new_signer, value=2)
    for signature in signatures(old, signers[:2]):
        with ape.reverts("committee: not a signer"):
            committee.approve_with_signatures(loan_id, deadline, [signature], sender=stranger)
    # Signatures over the new epoch work.
    fresh = approval_typed_data(committee, loan_book, loan_id, deadline)
    assert fresh["message"]["epoch"] == 2
    committee.approve_with_signatures(loan_id, deadline, signatures(fresh, signers[:2]), sender=stranger)
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]


# -- LoanBook administration ----------------------------------------------------------------------


def test_pause_and_unpause__through_governance(committee, loan_book, create_loan, signers):
    govern(committee, signers, "PAUSE")
    assert loan_book.paused()
    with ape.reverts("pausable: contract is paused"):
        create_loan()
    govern(committee, signers, "UNPAUSE")
    assert not loan_book.paused()
    create_loan()


def test_operations_pause__only_the_committee_resumes(committee, loan_book, create_loan, signers, pauser):
    """An ops PAUSER may stop the book in an emergency, but neither it nor anyone short of the
    committee's M-of-N can undo a pause (issue 20: pause and unpause no longer share a role)."""
    assert not loan_book.hasRole(role("UNPAUSER_ROLE"), pauser)
    loan_book.pause(sender=pauser)
    with ape.reverts(MISSING_ROLE):
        loan_book.unpause(sender=pauser)
    for signer in signers:
        with ape.reverts(MISSING_ROLE):
            loan_book.unpause(sender=signer)
    govern(committee, signers, "UNPAUSE")
    assert not loan_book.paused()
    # and a committee pause is not undone by the ops key either
    govern(committee, signers, "PAUSE")
    with ape.reverts(MISSING_ROLE):
        loan_book.unpause(sender=pauser)
    govern(committee, signers, "UNPAUSE")
    create_loan()


def test_proposals__every_argument_kept_and_executed_flag(committee, loan_book, signers, stranger):
    """Packed storage: each field of `proposals()` round-trips, zero arguments included."""
    grant = role("ORIGINATOR_ROLE")
    expires_at = deadline_in(HOUR)
    tx = committee.propose(ACTION["GRANT_ROLE"], stranger, grant, 7, expires_at, sender=signers[2])
    proposal_id = logs(tx, committee.Proposed)[0].proposal_id
    proposal = committee.proposals(proposal_id)
    assert (proposal.action, proposal.target, proposal.arg, proposal.value) == (
        ACTION["GRANT_ROLE"],
        stranger.address,
        grant,
        7,
    )
    assert (proposal.expires_at, proposal.epoch, proposal.confirmations) == (expires_at, 1, 0b100)
    assert not proposal.executed
    committee.confirm(proposal_id, sender=signers[0])
    assert committee.proposals(proposal_id).confirmations == 0b101
    committee.execute(proposal_id, sender=signers[1])
    assert committee.proposals(proposal_id).executed
    assert loan_book.hasRole(grant, stranger)
    empty = committee.proposals(proposal_id + 100)
    assert (empty.action, empty.target, empty.arg, empty.value, empty.epoch, empty.executed) == (
        0,
        ZERO,
        NO_ARG,
        0,
        0,
        False,
    )


def test_cancel_loan__through_governance_while_paused(committee, loan_book, create_loan, signers):
    loan_id = create_loan()
    govern(committee, signers, "PAUSE")
    reason = keccak(text="fraud suspected")
    tx = govern(committee, signers, "CANCEL_LOAN", arg=loan_id, value=int.from_bytes(reason, "big"))
    assert loan_book.loan_state(loan_id) == STATE["CANCELLED"]
    [cancelled] = logs(tx, loan_book.LoanCancelled)
    assert (cancelled.loan_id, cancelled.reason) == (loan_id, reason)


def test_write_off__through_governance(committee, loan_book, active_loan, signers, servicer):
    loan_id = active_loan()
    ape.chain.pending_timestamp += 130 * DAY
    loan_book.mark_default(loan_id, sender=servicer)
    assert loan_book.loan_state(loan_id) == STATE["DEFAULTED"]
    tx = govern(committee, signers, "WRITE_OFF", arg=loan_id)
    assert loan_book.loan_state(loan_id) == STATE["WRITTEN_OFF"]
    [written_off] = logs(tx, loan_book.LoanWrittenOff)
    assert written_off.loan_id == loan_id
    assert written_off.outstanding == loan_book.loans(loan_id).total_due


def test_grant_and_revoke_role__through_governance(committee, loan_book, create_loan, signers, stranger):
    originator_role = role("ORIGINATOR_ROLE")
    govern(committee, signers, "GRANT_ROLE", target=stranger, arg=originator_role)
    assert loan_book.hasRole(originator_role, stranger)
    loan_book.create_loan(keccak(text="by new originator"), default_terms(), sender=stranger)
    govern(committee, signers, "REVOKE_ROLE", target=stranger, arg=originator_role)
    assert not loan_book.hasRole(originator_role, stranger)
    with ape.reverts(MISSING_ROLE):
        loan_book.create_loan(keccak(text="after revocation"), default_terms(), sender=stranger)


def test_loan_book_admin__only_through_committee(loan_book, deployer, stranger):
    """The deployer renounced its admin role: role changes go through the committee or nowhere."""
    with ape.reverts(MISSING_ROLE):
        loan_book.grantRole(role("ORIGINATOR_ROLE"), stranger, sender=deployer)


def test_migrate__admin_to_new_committee(project, committee, loan_book, deployer, signers, create_loan):
    """The committee can hand the book over to a successor (grant, then revoke itself)."""
    successor = deployer.deploy(project.DisbursementCommittee, loan_book, signers, 2)
    for name in ("APPROVER_ROLE", "PAUSER_ROLE", "UNPAUSER_ROLE"):
        govern(committee, signers, "GRANT_ROLE", target=successor, arg=role(name))
    govern(committee, signers, "GRANT_ROLE", target=successor, arg=NO_ARG)
    govern(committee, signers, "REVOKE_ROLE", target=committee, arg=role("APPROVER_ROLE"))
    loan_id = create_loan()
    committee.approve(loan_id, sender=signers[0])
    with ape.reverts(MISSING_ROLE):
        committee.approve(loan_id, sender=signers[1])
    successor.approve(loan_id, sender=signers[0])
    successor.approve(loan_id, sender=signers[1])
    assert loan_book.loan_state(loan_id) == STATE["APPROVED"]
