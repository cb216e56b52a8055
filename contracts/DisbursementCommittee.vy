# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title DisbursementCommittee
@custom:contract-name DisbursementCommittee
@license GNU Affero General Public License v3.0 only
@notice M-of-N approval of every loan disbursement on the LoanBook, and the
        only way to change the committee itself or to take LoanBook admin
        actions (write-off, cancel, pause, role grants).

        Approving a loan. A current signer calls `approve` on chain, or any
        relayer submits EIP-712 `ApproveDisbursement` signatures with
        `approve_with_signatures`; the two add up. The signed message binds
        every economic term of the loan as the LoanBook stores it (terms
        hash, currency, principal, total due, installment count and
        interval, grace period, late-fee cap, payout reference), the
        committee `epoch` and a deadline, so a wallet shows the terms in
        clear and no term can differ from what the signers saw. When the
        approvals reach `required_approvals(loan_id)` the committee calls
        `LoanBook.approve_loan` in the same transaction.

        Epochs. Signers are identified by their index in the current signer
        list, and every change of the signer set, threshold or large-loan
        tier starts a new epoch: on-chain approvals and proposals of an older
        epoch stop counting, and signatures over an older epoch no longer
        verify. Each `EpochBumped` event carries the full configuration of
        the new epoch, so the signer bitmaps in `LoanApprovalExecuted` and
        `Proposed`/`Confirmed` can be decoded from events alone.

        The approval tally of a loan is open only while the loan is PENDING.
        Once the threshold is reached the tally is closed and cleared from
        storage (a refund instead of a write: keeping the final bitmap would
        cost every approval ~20,000 gas); who approved is recorded in the
        `LoanApprovalExecuted` event (epoch, approvers bitmap, signed bitmap,
        count, required). `approvals` and `has_approved` answer for every
        state without reverting: the open tally of a PENDING loan, and 0 /
        false for a loan in any other state (approved, cancelled, unknown):
        read `LoanApprovalExecuted` for who approved it.

        Governance. `propose` (by a signer, counting as its confirmation),
        `confirm` by other signers, `execute` by a signer once the
        confirmations reach `threshold`, no later than `expires_at` and in
        the epoch the proposal was made in. A proposal executes at most once.
"""


# @dev The LoanBook surface the committee calls: `approval_state` to count an
# approval, `approval_terms` to bind a signature to every term of the loan,
# `approve_loan` and the admin actions of governance.
from interfaces import ILoanBook


# @dev Stateless signature recovery; reverts on high-s and on a recovery to
# the zero address ("ecdsa: invalid signature ..."), so no `initializes`.
from snekmate.utils import ecdsa


# @dev EIP-712 domain separator ("CaaS Disbursement Committee", "1"); it
# keeps the cached separator and name/version in immutables, hence
# `initializes`.
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator


# @dev EIP-5267 `eip712Domain()`, so wallets can discover the signing domain.
exports: eip712_domain_separator.eip712Domain


# ---------------------------------------------------------------------------
# CONSTANTS
# ---------------------------------------------------------------------------


# @dev Largest signer set; one bit per signer in a 32-bit bitmap.
MAX_SIGNERS: public(constant(uint256)) = 32

# @dev LoanBook state PENDING: the only state in which a loan can be approved.
_LOAN_PENDING: constant(uint8) = 1

# @dev EIP-712 type hash of the approval message.
APPROVAL_TYPEHASH: public(constant(bytes32)) = keccak256(
    "ApproveDisbursement(bytes32 loanId,bytes32 termsHash,uint16 currency,uint256 principal,uint256 totalDue,uint16 installmentCount,uint32 installmentInterval,uint32 gracePeriod,uint256 maxLateFees,bytes32 payoutRef,uint256 epoch,uint256 deadline)"
)

# @dev Longest time a proposal may stay open.
MAX_PROPOSAL_LIFETIME: public(constant(uint256)) = 30 * 86400

# @dev Governance actions: what `propose(action, target, arg, value, ...)`
# means for each action id. Unused fields are ignored.
#   ADD_SIGNER        target = new signer, value = threshold afterwards
#   REMOVE_SIGNER     target = signer,     value = threshold afterwards
#   SET_THRESHOLD     value = new threshold
#   SET_LARGE_TIER    value = large-loan threshold, arg = principal floor
#                     (uint256 as bytes32); floor 0 and value 0 turn it off
#   WRITE_OFF         arg = loan_id                    -> LoanBook.write_off
#   CANCEL_LOAN       arg = loan_id, value = reason    -> LoanBook.cancel_loan
#   PAUSE / UNPAUSE                                    -> LoanBook.pause/unpause
#                     (the committee alone holds UNPAUSER_ROLE: an
#                     operations pauser cannot undo a pause)
#   GRANT_ROLE        arg = role, target = account     -> LoanBook.grantRole
#   REVOKE_ROLE       arg = role, target = account     -> LoanBook.revokeRole
ACTION_ADD_SIGNER: public(constant(uint8)) = 1
ACTION_REMOVE_SIGNER: public(constant(uint8)) = 2
ACTION_SET_THRESHOLD: public(constant(uint8)) = 3
ACTION_SET_LARGE_LOAN_TIER: public(constant(uint8)) = 4
ACTION_WRITE_OFF: public(constant(uint8)) = 5
ACTION_CANCEL_LOAN: public(constant(uint8)) = 6
ACTION_PAUSE: public(constant(uint8)) = 7
ACTION_UNPAUSE: public(constant(uint8)) = 8
ACTION_GRANT_ROLE: public(constant(uint8)) = 9
ACTION_REVOKE_ROLE: public(constant(uint8)) = 10

# @dev Layout of the packed configuration slot `_config`:
#   bits   0..7    threshold
#   bits   8..15   large-loan threshold (0 while the tier is off)
#   bits  16..23   signer count
#   bits  64..127  epoch
#   bits 128..255  large-loan principal floor (0 = tier off)
_LARGE_THRESHOLD_SHIFT: constant(uint256) = 8
_SIGNER_COUNT_SHIFT: constant(uint256) = 16
_EPOCH_SHIFT: constant(uint256) = 64
_FLOOR_SHIFT: constant(uint256) = 128
_MASK_8: constant(uint256) = 255
_MASK_64: constant(uint256) = 2**64 - 1
_MAX_FLOOR: constant(uint256) = 2**128 - 1

# @dev Layout of a packed approval tally `_tallies[loan_id]`: bits 0..31
# signer bitmap (bit i = signer index i of the epoch), bits 32.. the epoch
# the bitmap belongs to.
_TALLY_EPOCH_SHIFT: constant(uint256) = 32
_MASK_BITMAP: constant(uint256) = 2**32 - 1

# @dev Layout of a packed proposal header `_proposal_headers[id]`, the one
# slot `confirm` and `execute` rewrite:
#   bits   0..7    action
#   bits   8..15   executed (0 or 1)
#   bits  16..47   confirmations: signer bitmap of the proposal's epoch
#   bits  48..111  epoch
#   bits 112..175  expires_at
_EXECUTED: constant(uint256) = 1 << 8
_CONFIRMATIONS_SHIFT: constant(uint256) = 16
_PROPOSAL_EPOCH_SHIFT: constant(uint256) = 48
_EXPIRES_SHIFT: constant(uint256) = 112


# ---------------------------------------------------------------------------
# STRUCTS
# ---------------------------------------------------------------------------


# @dev A governance proposal as `proposals()` returns it; see the ACTION_*
# constants for the fields. Stored packed (see `_proposal_headers`).
struct Proposal:
    action: uint8
    target: address
    arg: bytes32
    value: uint256
    expires_at: uint256
    epoch: uint256
    confirmations: uint256
    executed: bool


# ---------------------------------------------------------------------------
# EVENTS
# ---------------------------------------------------------------------------


# @dev A signer approved a loan on chain.
event Approved:
    loan_id: indexed(bytes32)
    signer: indexed(address)
    epoch: uint256
    approvals: uint256
    required: uint256


# @dev A signer withdrew its on-chain approval of a PENDING loan.
event Revoked:
    loan_id: indexed(bytes32)
    signer: indexed(address)
    epoch: uint256
    approvals: uint256


# @dev The approvals reached the requirement and `LoanBook.approve_loan` was
# called. `approvers` is the bitmap of every approving signer (indices of
# `epoch`, see `EpochBumped`); `signed` the subset that approved by EIP-712
# signature in this transaction (0 when executed by `approve`).
event LoanApprovalExecuted:
    loan_id: indexed(bytes32)
    epoch: uint256
    approvers: uint256
    signed: uint256
    approvals: uint256
    required: uint256


# @dev A governance proposal was made; the proposer's confirmation included.
event Proposed:
    proposal_id: indexed(uint256)
    proposer: indexed(address)
    action: uint8
    target: address
    arg: bytes32
    value: uint256
    expires_at: uint256
    epoch: uint256


# @dev A signer confirmed a proposal; `confirmations` counted after it.
event Confirmed:
    proposal_id: indexed(uint256)
    signer: indexed(address)
    confirmations: uint256


# @dev A proposal was executed.
event Executed:
    proposal_id: indexed(uint256)
    executor: indexed(address)
    action: uint8


# @dev A signer joined the signer set.
event SignerAdded:
    signer: indexed(address)


# @dev A signer left the signer set.
event SignerRemoved:
    signer: indexed(address)


# @dev The approval threshold changed.
event ThresholdChanged:
    old_threshold: uint256
    new_threshold: uint256


# @dev The large-loan tier changed (floor 0 = tier off).
event LargeLoanTierChanged:
    threshold: uint256
    principal_floor: uint256


# @dev A new epoch started; a full snapshot of its configuration. The
# position of a signer in `signers` is its bit in the bitmaps of the epoch.
event EpochBumped:
    epoch: indexed(uint256)
    signers: DynArray[address, MAX_SIGNERS]
    threshold: uint256
    large_loan_threshold: uint256
    large_loan_principal: uint256


# ---------------------------------------------------------------------------
# STORAGE
# ---------------------------------------------------------------------------


# @dev The LoanBook this committee approves for and administers.
LOAN_BOOK: public(immutable(ILoanBook))

# @dev Threshold, large threshold, signer count, epoch and large-loan
# principal floor packed in one slot (layout under CONSTANTS).
_config: uint256

# @dev The current signers; position i is bit i of the epoch's bitmaps.
_signers: DynArray[address, MAX_SIGNERS]

# @dev Current signer => its position in `_signers` plus one (0 = none).
_signer_index: HashMap[address, uint256]

# @dev Open on-chain approval tally per loan: epoch << 32 | signer bitmap.
# A stale epoch means no approvals; cleared when the approval executes.
_tallies: HashMap[bytes32, uint256]

# @dev Governance proposals by id (ids start at 1): the packed header, and
# the arguments, each written only when non-zero.
_proposal_headers: HashMap[uint256, uint256]
_proposal_targets: HashMap[uint256, address]
_proposal_args: HashMap[uint256, bytes32]
_proposal_values: HashMap[uint256, uint256]

# @dev Number of proposals made; the id of the latest one.
proposal_count: public(uint256)


# ---------------------------------------------------------------------------
# CONSTRUCTOR
# ---------------------------------------------------------------------------


@deploy
def __init__(loan_book: address, signers: DynArray[address, MAX_SIGNERS], threshold: uint256):
    """
    @notice Sets the LoanBook, the first signer set and threshold (epoch 1,
            large-loan tier off) and the EIP-712 domain.
    @param loan_book The LoanBook contract.
    @param signers Distinct, non-zero signer addresses (at most 32).
    @param threshold Approvals needed, 1 <= threshold <= len(signers).
    """
    assert loan_book != empty(address), "committee: zero address"
    eip712_domain_separator.__init__("CaaS Disbursement Committee", "1")
    LOAN_BOOK = ILoanBook(loan_book)

    for signer: address in signers:
        self._add_signer(signer)
    self._check_config(len(signers), threshold, 0, 0)
    log ThresholdChanged(old_threshold=0, new_threshold=threshold)
    self._start_epoch(1, len(signers), threshold, 0, 0)


# ---------------------------------------------------------------------------
# LOAN APPROVAL
# ---------------------------------------------------------------------------


@external
def approve(loan_id: bytes32):
    """
    @notice Approves the disbursement of a PENDING loan as the calling
            signer. Executes the approval on the LoanBook when this
            approval reaches `required_approvals(loan_id)`.
    @param loan_id The loan.
    """
    index: uint256 = self._signer_index[msg.sender]
    assert index != 0, "committee: not a signer"
    state: uint8 = 0
    principal: uint256 = 0
    state, principal = staticcall LOAN_BOOK.approval_state(loan_id)
    assert state == _LOAN_PENDING, "committee: loan not pending"

    config: uint256 = self._config
    epoch: uint256 = (config >> _EPOCH_SHIFT) & _MASK_64
    tally: uint256 = self._tallies[loan_id]
    bitmap: uint256 = self._bitmap_of(tally, epoch)
    bit: uint256 = 1 << unsafe_sub(index, 1)
    assert bitmap & bit == 0, "committee: already approved"
    bitmap |= bit
    count: uint256 = self._popcount(bitmap)
    required: uint256 = self._required(config, principal)

    log Approved(loan_id=loan_id, signer=msg.sender, epoch=epoch, approvals=count, required=required)
    if count < required:
        self._tallies[loan_id] = (epoch << _TALLY_EPOCH_SHIFT) | bitmap
        return

    if tally != 0:
        self._tallies[loan_id] = 0
    log LoanApprovalExecuted(
        loan_id=loan_id, epoch=epoch, approvers=bitmap, signed=0, approvals=count, required=required
    )
    extcall LOAN_BOOK.approve_loan(loan_id)


@external
def revoke(loan_id: bytes32):
    """
    @notice Withdraws the calling signer's on-chain approval of a loan that
            is still PENDING. It cannot withdraw an EIP-712 signature given
            off chain; the signature's deadline bounds that.
    @param loan_id The loan.
    """
    index: uint256 = self._signer_index[msg.sender]
    assert index != 0, "committee: not a signer"
    assert staticcall LOAN_BOOK.loan_state(loan_id) == _LOAN_PENDING, "committee: loan not pending"

    epoch: uint256 = self._epoch()
    bitmap: uint256 = self._bitmap_of(self._tallies[loan_id], epoch)
    bit: uint256 = 1 << unsafe_sub(index, 1)
    assert bitmap & bit != 0, "committee: not approved"
    bitmap ^= bit

    if bitmap == 0:
        self._tallies[loan_id] = 0
    else:
        self._tallies[loan_id] = (epoch << _TALLY_EPOCH_SHIFT) | bitmap
    log Revoked(loan_id=loan_id, signer=msg.sender, epoch=epoch, approvals=self._popcount(bitmap))


@external
def approve_with_signatures(loan_id: bytes32, deadline: uint256, signatures: DynArray[Bytes[65], MAX_SIGNERS]):
    """
    @notice Approves a PENDING loan with EIP-712 `ApproveDisbursement`
            signatures of current signers and executes the approval on the
            LoanBook. Callable by anyone. The signatures add to the on-chain
            approvals of the current epoch (a signer counted once); together
            they must reach `required_approvals(loan_id)`.
    @dev Signatures must be sorted strictly ascending by recovered signer
         address (which also rejects duplicates). 65-byte (r, s, v) and
         64-byte EIP-2098 signatures are accepted; high-s values and
         recoveries to the zero address revert in snekmate `ecdsa`.
    @param loan_id The loan.
    @param deadline The deadline every signature signed (unix seconds,
           inclusive).
    @param signatures The signatures, sorted by signer address.
    """
    assert deadline >= block.timestamp, "committee: signature expired"
    assert len(signatures) != 0, "committee: no signatures"
    terms: ILoanBook.ApprovalTerms = staticcall LOAN_BOOK.approval_terms(loan_id)
    assert terms.state == _LOAN_PENDING, "committee: loan not pending"

    config: uint256 = self._config
    epoch: uint256 = (config >> _EPOCH_SHIFT) & _MASK_64
    digest: bytes32 = self._digest(loan_id, terms, epoch, deadline)
    tally: uint256 = self._tallies[loan_id]
    bitmap: uint256 = self._bitmap_of(tally, epoch)
    count: uint256 = self._popcount(bitmap)

    signed: uint256 = 0
    last: uint256 = 0
    for signature: Bytes[65] in signatures:
        key: uint256 = convert(ecdsa._recover_sig(digest, signature), uint256)
        if key <= last:
            # Wrong-length signatures recover to zero without reverting.
            assert key != 0, "ecdsa: invalid signature"
            assert key != last, "committee: duplicate signer"
            raise "committee: signers not ascending"
        last = key
        index: uint256 = self._signer_index[convert(key, address)]
        assert index != 0, "committee: not a signer"
        bit: uint256 = 1 << unsafe_sub(index, 1)
        signed |= bit
        if bitmap & bit == 0:
            count = unsafe_add(count, 1)

    required: uint256 = self._required(config, terms.principal)
    assert count >= required, "committee: below threshold"

    # The tally closes: clear what `approve` stored (a refund) instead of
    # writing the final bitmap; the event below is the record.
    if tally != 0:
        self._tallies[loan_id] = 0
    log LoanApprovalExecuted(
        loan_id=loan_id, epoch=epoch, approvers=bitmap | signed, signed=signed, approvals=count, required=required
    )
    extcall LOAN_BOOK.approve_loan(loan_id)


# ---------------------------------------------------------------------------
# GOVERNANCE
# ---------------------------------------------------------------------------


@external
def propose(action: uint8, target: address, arg: bytes32, value_: uint256, expires_at: uint256) -> uint256:
    """
    @notice Proposes a governance action (see the ACTION_* constants for
            what `target`, `arg` and `value` mean). The proposal counts as
            the proposer's confirmation and is valid in the current epoch
            only.
    @param action An ACTION_* id.
    @param target Account argument of the action.
    @param arg bytes32 argument of the action.
    @param value_ uint256 argument of the action.
    @param expires_at Last timestamp at which it can execute; at most
           MAX_PROPOSAL_LIFETIME from now.
    @return uint256 The proposal id.
    """
    index: uint256 = self._signer_index[msg.sender]
    assert index != 0, "committee: not a signer"
    assert expires_at >= block.timestamp, "committee: proposal expired"
    assert expires_at <= block.timestamp + MAX_PROPOSAL_LIFETIME, "committee: expiry too far"
    self._check_action(action, target, arg, value_)

    proposal_id: uint256 = self.proposal_count + 1
    epoch: uint256 = self._epoch()
    self.proposal_count = proposal_id
    # One packed slot, plus a slot per non-zero argument: most actions use
    # one or two of the three.
    self._proposal_headers[proposal_id] = (
        convert(action, uint256)
        | ((1 << unsafe_sub(index, 1)) << _CONFIRMATIONS_SHIFT)
        | (epoch << _PROPOSAL_EPOCH_SHIFT)
        | (expires_at << _EXPIRES_SHIFT)
    )
    if target != empty(address):
        self._proposal_targets[proposal_id] = target
    if arg != empty(bytes32):
        self._proposal_args[proposal_id] = arg
    if value_ != 0:
        self._proposal_values[proposal_id] = value_
    log Proposed(
        proposal_id=proposal_id,
        proposer=msg.sender,
        action=action,
        target=target,
        arg=arg,
        value=value_,
        expires_at=expires_at,
        epoch=epoch,
    )
    return proposal_id


@external
def confirm(proposal_id: uint256):
    """
    @notice Confirms an open proposal as the calling signer.
    @param proposal_id The proposal.
    """
    index: uint256 = self._signer_index[msg.sender]
    assert index != 0, "committee: not a signer"
    header: uint256 = self._open_header(proposal_id)
    bit: uint256 = (1 << unsafe_sub(index, 1)) << _CONFIRMATIONS_SHIFT
    assert header & bit == 0, "committee: already confirmed"
    header |= bit
    self._proposal_headers[proposal_id] = header
    log Confirmed(
        proposal_id=proposal_id, signer=msg.sender, confirmations=self._popcount(self._confirmations_of(header))
    )


@external
def execute(proposal_id: uint256):
    """
    @notice Executes a proposal whose confirmations reached the threshold,
            no later than its expiry and in the epoch it was proposed in.
            Callable by a current signer; executes at most once.
    @param proposal_id The proposal.
    """
    assert self._signer_index[msg.sender] != 0, "committee: not a signer"
    header: uint256 = self._open_header(proposal_id)
    assert self._popcount(self._confirmations_of(header)) >= self._config & _MASK_8, "committee: not enough confirmations"

    self._proposal_headers[proposal_id] = header | _EXECUTED
    action: uint8 = convert(header & _MASK_8, uint8)
    log Executed(proposal_id=proposal_id, executor=msg.sender, action=action)

    # Each branch reads only the arguments its action uses.
    if action <= ACTION_SET_LARGE_LOAN_TIER:
        self._apply_config_action(
            action,
            self._proposal_targets[proposal_id],
            self._proposal_args[proposal_id],
            self._proposal_values[proposal_id],
        )
    elif action == ACTION_WRITE_OFF:
        extcall LOAN_BOOK.write_off(self._proposal_args[proposal_id])
    elif action == ACTION_CANCEL_LOAN:
        extcall LOAN_BOOK.cancel_loan(
            self._proposal_args[proposal_id], convert(self._proposal_values[proposal_id], bytes32)
        )
    elif action == ACTION_PAUSE:
        extcall LOAN_BOOK.pause()
    elif action == ACTION_UNPAUSE:
        extcall LOAN_BOOK.unpause()
    elif action == ACTION_GRANT_ROLE:
        extcall LOAN_BOOK.grantRole(self._proposal_args[proposal_id], self._proposal_targets[proposal_id])
    else:
        # ACTION_REVOKE_ROLE: `propose` admits no other action id.
        extcall LOAN_BOOK.revokeRole(self._proposal_args[proposal_id], self._proposal_targets[proposal_id])


# ---------------------------------------------------------------------------
# VIEWS
# ---------------------------------------------------------------------------


@view
@external
def signers() -> DynArray[address, MAX_SIGNERS]:
    """
    @notice The current signers; position i is bit i of the epoch's bitmaps.
    @return DynArray The signer addresses.
    """
    return self._signers


@view
@external
def is_signer(account: address) -> bool:
    """
    @notice Whether `account` is a current signer.
    @param account The account.
    @return bool True for a current signer.
    """
    return self._signer_index[account] != 0


@view
@external
def threshold() -> uint256:
    """
    @notice Approvals needed for a loan outside the large-loan tier, and
            confirmations needed for a proposal.
    @return uint256 The threshold.
    """
    return self._config & _MASK_8


@view
@external
def epoch() -> uint256:
    """
    @notice The current epoch; bumped by every change of the signer set,
            threshold or large-loan tier.
    @return uint256 The epoch.
    """
    return self._epoch()


@view
@external
def large_loan_threshold() -> uint256:
    """
    @notice Approvals needed for a loan whose principal exceeds
            `large_loan_principal()` (0 while the tier is off).
    @return uint256 The large-loan threshold.
    """
    return (self._config >> _LARGE_THRESHOLD_SHIFT) & _MASK_8


@view
@external
def large_loan_principal() -> uint256:
    """
    @notice Principal above which the large-loan threshold applies
            (0 = tier off).
    @return uint256 The principal floor in minor units.
    """
    return self._config >> _FLOOR_SHIFT


@view
@external
def required_approvals(loan_id: bytes32) -> uint256:
    """
    @notice Approvals that execute the approval of `loan_id`: the large-loan
            threshold when the tier is on and the principal exceeds its
            floor, the threshold otherwise.
    @param loan_id The loan.
    @return uint256 The number of approvals required.
    """
    state: uint8 = 0
    principal: uint256 = 0
    state, principal = staticcall LOAN_BOOK.approval_state(loan_id)
    return self._required(self._config, principal)


@view
@external
def approvals(loan_id: bytes32) -> uint256:
    """
    @notice Current-epoch on-chain approvals in the open tally of a PENDING
            loan; 0 for a loan in any other state (never reverts).
    @dev Once a loan is approved its tally is closed and cleared: who
         approved is in the `LoanApprovalExecuted` event (epoch, approvers
         bitmap, count). Signatures collected off chain are not counted
         until submitted.
    @param loan_id The loan.
    @return uint256 The number of approvals.
    """
    return self._popcount(self._open_bitmap(loan_id))


@view
@external
def has_approved(loan_id: bytes32, signer: address) -> bool:
    """
    @notice Whether `signer` is a current signer with an on-chain approval
            of the PENDING loan in the current epoch; false for a loan in
            any other state (never reverts; see `approvals`).
    @param loan_id The loan.
    @param signer The account.
    @return bool True if it approved.
    """
    bitmap: uint256 = self._open_bitmap(loan_id)
    index: uint256 = self._signer_index[signer]
    if index == 0:
        return False
    return bitmap & (1 << unsafe_sub(index, 1)) != 0


@view
@external
def approval_digest(loan_id: bytes32, deadline: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a signer signs to approve `loan_id` with
            `deadline`, over the loan's current terms and the current epoch.
    @param loan_id The loan.
    @param deadline The signature deadline (unix seconds).
    @return bytes32 The digest.
    """
    terms: ILoanBook.ApprovalTerms = staticcall LOAN_BOOK.approval_terms(loan_id)
    return self._digest(loan_id, terms, self._epoch(), deadline)


@view
@external
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator on the current chain.
    @return bytes32 The domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@view
@external
def proposals(proposal_id: uint256) -> Proposal:
    """
    @notice A proposal, unpacked (all zero for an unknown id).
    @param proposal_id The proposal.
    @return Proposal Its action, arguments, expiry, epoch, confirmations
            (signer bitmap of its epoch) and whether it was executed.
    """
    header: uint256 = self._proposal_headers[proposal_id]
    return Proposal(
        action=convert(header & _MASK_8, uint8),
        target=self._proposal_targets[proposal_id],
        arg=self._proposal_args[proposal_id],
        value=self._proposal_values[proposal_id],
        expires_at=header >> _EXPIRES_SHIFT,
        epoch=(header >> _PROPOSAL_EPOCH_SHIFT) & _MASK_64,
        confirmations=self._confirmations_of(header),
        executed=header & _EXECUTED != 0,
    )


@view
@external
def confirmations(proposal_id: uint256) -> uint256:
    """
    @notice Confirmations of a proposal (0 once its epoch is over).
    @param proposal_id The proposal.
    @return uint256 The number of confirmations.
    """
    header: uint256 = self._proposal_headers[proposal_id]
    if (header >> _PROPOSAL_EPOCH_SHIFT) & _MASK_64 != self._epoch():
        return 0
    return self._popcount(self._confirmations_of(header))


@view
@external
def has_confirmed(proposal_id: uint256, signer: address) -> bool:
    """
    @notice Whether `signer` confirmed the proposal in the current epoch.
    @param proposal_id The proposal.
    @param signer The account.
    @return bool True if it confirmed.
    """
    header: uint256 = self._proposal_headers[proposal_id]
    index: uint256 = self._signer_index[signer]
    if index == 0 or (header >> _PROPOSAL_EPOCH_SHIFT) & _MASK_64 != self._epoch():
        return False
    return self._confirmations_of(header) & (1 << unsafe_sub(index, 1)) != 0


# ---------------------------------------------------------------------------
# INTERNAL
# ---------------------------------------------------------------------------


@view
@internal
def _epoch() -> uint256:
    return (self._config >> _EPOCH_SHIFT) & _MASK_64


@pure
@internal
def _bitmap_of(tally: uint256, epoch: uint256) -> uint256:
    # An approval tally counts only in the epoch it was made in.
    if tally >> _TALLY_EPOCH_SHIFT != epoch:
        return 0
    return tally & _MASK_BITMAP


@pure
@internal
def _popcount(bitmap: uint256) -> uint256:
    count: uint256 = 0
    remaining: uint256 = bitmap
    for _: uint256 in range(MAX_SIGNERS):
        if remaining == 0:
            break
        remaining &= unsafe_sub(remaining, 1)
        count = unsafe_add(count, 1)
    return count


@pure
@internal
def _required(config: uint256, principal: uint256) -> uint256:
    principal_floor: uint256 = config >> _FLOOR_SHIFT
    if principal_floor != 0 and principal > principal_floor:
        return (config >> _LARGE_THRESHOLD_SHIFT) & _MASK_8
    return config & _MASK_8


@view
@internal
def _digest(loan_id: bytes32, terms: ILoanBook.ApprovalTerms, epoch: uint256, deadline: uint256) -> bytes32:
    # EIP-712 encodes uint16/uint32 as 32-byte words, as abi_encode does.
    struct_hash: bytes32 = keccak256(
        abi_encode(
            APPROVAL_TYPEHASH,
            loan_id,
            terms.terms_hash,
            terms.currency,
            terms.principal,
            terms.total_due,
            terms.installment_count,
            terms.installment_interval,
            terms.grace_period,
            terms.max_late_fees,
            terms.payout_ref,
            epoch,
            deadline,
        )
    )
    return eip712_domain_separator._hash_typed_data_v4(struct_hash)


@view
@internal
def _open_bitmap(loan_id: bytes32) -> uint256:
    # A closed tally reads as empty: after approval the slot is cleared, and
    # for a loan that never reached the threshold it no longer counts.
    if staticcall LOAN_BOOK.loan_state(loan_id) != _LOAN_PENDING:
        return 0
    return self._bitmap_of(self._tallies[loan_id], self._epoch())


@view
@internal
def _open_header(proposal_id: uint256) -> uint256:
    header: uint256 = self._proposal_headers[proposal_id]
    epoch: uint256 = (header >> _PROPOSAL_EPOCH_SHIFT) & _MASK_64
    # Epochs start at 1, so a stored proposal never has epoch 0.
    assert epoch != 0, "committee: unknown proposal"
    assert header & _EXECUTED == 0, "committee: already executed"
    assert epoch == self._epoch(), "committee: proposal stale"
    assert block.timestamp <= header >> _EXPIRES_SHIFT, "committee: proposal expired"
    return header


@pure
@internal
def _confirmations_of(header: uint256) -> uint256:
    return (header >> _CONFIRMATIONS_SHIFT) & _MASK_BITMAP


@pure
@internal
def _check_config(signer_count: uint256, threshold: uint256, large_threshold: uint256, principal_floor: uint256):
    assert signer_count <= MAX_SIGNERS, "committee: too many signers"
    assert threshold != 0 and threshold <= signer_count, "committee: invalid threshold"
    assert principal_floor <= _MAX_FLOOR, "committee: principal floor too large"
    if principal_floor == 0:
        assert large_threshold == 0, "committee: invalid large threshold"
    else:
        assert large_threshold >= threshold and large_threshold <= signer_count, "committee: invalid large threshold"


@view
@internal
def _check_action(action: uint8, target: address, arg: bytes32, value_: uint256):
    """
    @dev Validates a proposal against the current configuration. A config
         action executes in the same epoch (or not at all), so what passes
         here still holds at execution; `_apply_config_action` checks again.
    """
    config: uint256 = self._config
    count: uint256 = (config >> _SIGNER_COUNT_SHIFT) & _MASK_8
    threshold: uint256 = config & _MASK_8
    large_threshold: uint256 = (config >> _LARGE_THRESHOLD_SHIFT) & _MASK_8
    principal_floor: uint256 = config >> _FLOOR_SHIFT

    if action == ACTION_ADD_SIGNER:
        assert target != empty(address), "committee: zero address"
        assert self._signer_index[target] == 0, "committee: already a signer"
        self._check_config(count + 1, value_, large_threshold, principal_floor)
    elif action == ACTION_REMOVE_SIGNER:
        assert self._signer_index[target] != 0, "committee: unknown signer"
        self._check_config(count - 1, value_, large_threshold, principal_floor)
    elif action == ACTION_SET_THRESHOLD:
        self._check_config(count, value_, large_threshold, principal_floor)
    elif action == ACTION_SET_LARGE_LOAN_TIER:
        self._check_config(count, threshold, value_, convert(arg, uint256))
    elif action == ACTION_GRANT_ROLE or action == ACTION_REVOKE_ROLE:
        assert target != empty(address), "committee: zero address"
    else:
        assert action >= ACTION_WRITE_OFF and action <= ACTION_UNPAUSE, "committee: unknown action"


@internal
def _apply_config_action(action: uint8, target: address, arg: bytes32, value_: uint256):
    self._check_action(action, target, arg, value_)
    config: uint256 = self._config
    count: uint256 = (config >> _SIGNER_COUNT_SHIFT) & _MASK_8
    threshold: uint256 = config & _MASK_8
    large_threshold: uint256 = (config >> _LARGE_THRESHOLD_SHIFT) & _MASK_8
    principal_floor: uint256 = config >> _FLOOR_SHIFT
    epoch: uint256 = (config >> _EPOCH_SHIFT) & _MASK_64

    new_threshold: uint256 = threshold
    if action == ACTION_ADD_SIGNER:
        self._add_signer(target)
        count += 1
        new_threshold = value_
    elif action == ACTION_REMOVE_SIGNER:
        self._remove_signer(target)
        count -= 1
        new_threshold = value_
    elif action == ACTION_SET_THRESHOLD:
        new_threshold = value_
    else:
        large_threshold = value_
        principal_floor = convert(arg, uint256)
        log LargeLoanTierChanged(threshold=large_threshold, principal_floor=principal_floor)

    if new_threshold != threshold:
        log ThresholdChanged(old_threshold=threshold, new_threshold=new_threshold)
    self._start_epoch(epoch + 1, count, new_threshold, large_threshold, principal_floor)


@internal
def _add_signer(signer: address):
    assert signer != empty(address), "committee: zero address"
    assert self._signer_index[signer] == 0, "committee: duplicate signer"
    self._signers.append(signer)
    self._signer_index[signer] = len(self._signers)
    log SignerAdded(signer=signer)


@internal
def _remove_signer(signer: address):
    # Swap-and-pop: positions move, which is why every change starts an epoch.
    position: uint256 = self._signer_index[signer] - 1
    last: address = self._signers.pop()
    if last != signer:
        self._signers[position] = last
        self._signer_index[last] = position + 1
    self._signer_index[signer] = 0
    log SignerRemoved(signer=signer)


@internal
def _start_epoch(epoch: uint256, count: uint256, threshold: uint256, large_threshold: uint256, principal_floor: uint256):
    self._config = (
        threshold
        | (large_threshold << _LARGE_THRESHOLD_SHIFT)
        | (count << _SIGNER_COUNT_SHIFT)
        | (epoch << _EPOCH_SHIFT)
        | (principal_floor << _FLOOR_SHIFT)
    )
    log EpochBumped(
        epoch=epoch,
        signers=self._signers,
        threshold=threshold,
        large_loan_threshold=large_threshold,
        large_loan_principal=principal_floor,
    )
