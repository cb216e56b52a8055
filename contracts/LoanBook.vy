# pragma version ~=0.4.3
# pragma nonreentrancy on
"""
@title LoanBook
@custom:contract-name LoanBook
@license MIT
@notice The loan book of record of the CaaS protocol. Each loan agreement,
        its committee approval, its disbursement and every repayment are
        recorded here, with the fiat rail's reference, exactly once.

        Amounts are integers in minor units (kobo for NGN) of the loan's
        ISO 4217 numeric `currency`. No personal data lives here: borrowers
        and partners appear only as keyed-hash references.

        Schedule semantics (what auditors check): installment `i` (1-based)
        is due at `disbursed_at + i * installment_interval`; each installment
        is `total_due // installment_count` and the last one also takes the
        remainder. Repayments pay outstanding late fees first, then the
        schedule. `outstanding = total_due + late_fees_assessed - repaid`.

        Reversals (chargebacks) keep that waterfall true: the reversed
        amount comes back off the scheduled part first and only then off
        late fees paid (fees are paid first, so they are unpaid last). Hence
        a loan that owes anything has an installment not fully paid: it falls
        past due in time and can be defaulted.

        Recoveries. A DEFAULTED loan takes repayments (recoveries) and goes
        REPAID when nothing is left. A WRITTEN_OFF loan takes recoveries too,
        and reversals of any of its payments; it stays WRITTEN_OFF (a
        write-off is final, its figures keep moving): its outstanding falls
        with each recovery, to 0 at most, and rises with each reversal.

        Storage holds only what the logic reads, packed into few slots; the
        rest (borrower and partner references, rail references, reasons)
        lives in events, whose completeness `event_chain` lets anyone prove.
"""


# @dev Role-based access: ORIGINATOR, SERVICER, APPROVER, PAUSER, UNPAUSER and
# the admin role, all audited snekmate code rather than a hand-rolled variant.
from snekmate.auth import access_control
initializes: access_control

# @dev Emergency stop; the pause flag and its events come from snekmate.
from snekmate.utils import pausable
initializes: pausable

# @dev grantRole/revokeRole/hasRole/... and `paused()` are part of our ABI.
exports: (access_control.__interface__, pausable.paused)


# CONSTANTS

# @dev Role identifiers (DESIGN §3): keccak256 of the role's name.
ORIGINATOR_ROLE: public(constant(bytes32)) = keccak256("ORIGINATOR_ROLE")
SERVICER_ROLE: public(constant(bytes32)) = keccak256("SERVICER_ROLE")
APPROVER_ROLE: public(constant(bytes32)) = keccak256("APPROVER_ROLE")
PAUSER_ROLE: public(constant(bytes32)) = keccak256("PAUSER_ROLE")
# @dev Held by the committee alone: an operations PAUSER may stop the book in
# an emergency, but resuming needs what the committee's own pause needed.
UNPAUSER_ROLE: public(constant(bytes32)) = keccak256("UNPAUSER_ROLE")

# @dev Loan states (DESIGN §3): 0 NONE, 1 PENDING, 2 APPROVED, 3 ACTIVE,
# 4 REPAID, 5 DEFAULTED, 6 WRITTEN_OFF, 7 CANCELLED.
PENDING: constant(uint256) = 1
APPROVED: constant(uint256) = 2
ACTIVE: constant(uint256) = 3
REPAID: constant(uint256) = 4
DEFAULTED: constant(uint256) = 5
WRITTEN_OFF: constant(uint256) = 6
CANCELLED: constant(uint256) = 7

# @dev Amount bounds that let a loan fit in three packed slots:
# principal and total_due below 2**96, late fees below 2**80.
MAX_AMOUNT: public(constant(uint256)) = 2**96 - 1
MAX_LATE_FEES: public(constant(uint256)) = 2**80 - 1

# @dev Loans get serial numbers 1, 2, ... (the collision-free tag of their
# payment records); 32 bits of them.
MAX_LOANS: public(constant(uint256)) = 2**32 - 1

SECONDS_PER_DAY: constant(uint256) = 86400

_MASK16: constant(uint256) = 2**16 - 1
_MASK32: constant(uint256) = 2**32 - 1
_MASK40: constant(uint256) = 2**40 - 1
_MASK80: constant(uint256) = 2**80 - 1
_MASK96: constant(uint256) = 2**96 - 1
_MASK104: constant(uint256) = 2**104 - 1

# @dev Status byte: the state in the low nibble; sticky flags once a late
# fee was assessed (repayments of fee-free loans skip the fee slot) and once
# defaulted.
_STATE_MASK: constant(uint256) = 15
_FEES_ASSESSED: constant(uint256) = 64
_EVER_DEFAULTED: constant(uint256) = 128

# @dev States that take repayments, one bit per state: ACTIVE, DEFAULTED and
# WRITTEN_OFF (recoveries).
_REPAYABLE: constant(uint256) = (1 << ACTIVE) | (1 << DEFAULTED) | (1 << WRITTEN_OFF)

# @dev Payment record flags.
_PAYMENT_RECORDED: constant(uint256) = 1
_PAYMENT_REVERSED: constant(uint256) = 2
# @dev Where the loan serial sits in a payment record (after flags and amount).
_RECORD_SERIAL_SHIFT: constant(uint256) = 112

# @dev topic0 of each event, for the `event_chain` preimage. A test checks
# them against the topics the EVM really emits.
#
# Each state change extends the chain as
#   event_chain[loan_id] = keccak256(abi_encode(previous, topic_0, topics.., data fields..))
# Every event field is one static 32-byte word, so that abi_encode is exactly
# `previous ++ topics ++ data` of the raw log: one buffer, hashed once.
_LOAN_CREATED: constant(bytes32) = keccak256(
    "LoanCreated(bytes32,bytes32,bytes32,uint16,uint256,uint256,uint16,uint32,uint32,uint256,bytes32,bytes32)"
)
_LOAN_APPROVED: constant(bytes32) = keccak256("LoanApproved(bytes32,address)")
_LOAN_DISBURSED: constant(bytes32) = keccak256("LoanDisbursed(bytes32,uint256,bytes32,bytes32,uint256)")
_REPAYMENT_RECORDED: constant(bytes32) = keccak256(
    "RepaymentRecorded(bytes32,bytes32,uint256,uint256,uint256,uint256)"
)
_REPAYMENT_REVERSED: constant(bytes32) = keccak256(
    "RepaymentReversed(bytes32,bytes32,uint256,uint256,uint256,bytes32,uint256,uint8)"
)
_LATE_FEE_ASSESSED: constant(bytes32) = keccak256("LateFeeAssessed(bytes32,bytes32,uint256,uint256,uint256)")
_LOAN_REPAID: constant(bytes32) = keccak256("LoanRepaid(bytes32,uint256)")
_LOAN_DEFAULTED: constant(bytes32) = keccak256("LoanDefaulted(bytes32,uint256,uint256)")
_LOAN_WRITTEN_OFF: constant(bytes32) = keccak256("LoanWrittenOff(bytes32,uint256)")
_LOAN_CANCELLED: constant(bytes32) = keccak256("LoanCancelled(bytes32,bytes32)")


# STRUCTS

# @dev The agreement as the originator submits it (DESIGN §3).
struct Terms:
    borrower_ref: bytes32
    partner_ref: bytes32
    currency: uint16
    principal: uint256
    total_due: uint256
    installment_count: uint16
    installment_interval: uint32
    grace_period: uint32
    max_late_fees: uint256
    payout_ref: bytes32
    terms_hash: bytes32


# @dev What `loans()` returns: the stored terms and the repayment state.
# `borrower_ref` and `partner_ref` are not stored (no logic reads them);
# they are in the indexed topics of `LoanCreated`.
struct Loan:
    state: uint8
    ever_defaulted: bool
    currency: uint16
    principal: uint256
    total_due: uint256
    installment_count: uint16
    installment_interval: uint32
    grace_period: uint32
    max_late_fees: uint256
    payout_ref: bytes32
    terms_hash: bytes32
    disbursed_at: uint256
    scheduled_repaid: uint256
    late_fees_assessed: uint256
    late_fees_paid: uint256
    repaid: uint256
    outstanding: uint256


# @dev What `approval_terms()` returns: the loan's state and every economic
# term, i.e. what the committee's EIP-712 approval binds.
struct ApprovalTerms:
    state: uint8
    currency: uint16
    principal: uint256
    total_due: uint256
    installment_count: uint16
    installment_interval: uint32
    grace_period: uint32
    max_late_fees: uint256
    payout_ref: bytes32
    terms_hash: bytes32


# @dev Unpacked views of the packed slots, for the logic in memory.
struct _Schedule:
    principal: uint256
    total_due: uint256
    currency: uint256
    installment_count: uint256
    installment_interval: uint256


struct _Status:
    state: uint256
    ever_defaulted: bool
    fees_assessed: bool
    disbursed_at: uint256
    serial: uint256
    scheduled_repaid: uint256
    late_fees_paid: uint256


struct _Fees:
    max_late_fees: uint256
    late_fees_assessed: uint256
    grace_period: uint256


# EVENTS
# Every event carries `loan_id` as its first indexed topic and only static
# fields, so its data is `abi.encode(fields)` and `event_chain` can be
# recomputed from raw logs.

# @dev A loan agreement was recorded; the only place borrower and partner
# references appear.
event LoanCreated:
    loan_id: indexed(bytes32)
    borrower_ref: indexed(bytes32)
    partner_ref: indexed(bytes32)
    currency: uint16
    principal: uint256
    total_due: uint256
    installment_count: uint16
    installment_interval: uint32
    grace_period: uint32
    max_late_fees: uint256
    payout_ref: bytes32
    terms_hash: bytes32

# @dev The committee approved the disbursement.
event LoanApproved:
    loan_id: indexed(bytes32)
    approver: address

# @dev The principal was paid out through a rail; the schedule starts.
event LoanDisbursed:
    loan_id: indexed(bytes32)
    amount: uint256
    payout_ref: bytes32
    rail_ref: bytes32
    disbursed_at: uint256

# @dev A repayment, split into the late-fee part and the scheduled part.
event RepaymentRecorded:
    loan_id: indexed(bytes32)
    payment_ref: indexed(bytes32)
    amount: uint256
    fee_part: uint256
    scheduled_part: uint256
    outstanding_after: uint256

# @dev A recorded repayment was undone (chargeback or reversal).
event RepaymentReversed:
    loan_id: indexed(bytes32)
    payment_ref: indexed(bytes32)
    amount: uint256
    fee_part: uint256
    scheduled_part: uint256
    reason: bytes32
    outstanding_after: uint256
    state_after: uint8

# @dev A late fee was charged, within the loan's cap.
event LateFeeAssessed:
    loan_id: indexed(bytes32)
    fee_ref: indexed(bytes32)
    amount: uint256
    late_fees_assessed: uint256
    outstanding_after: uint256

# @dev Nothing is outstanding any more.
event LoanRepaid:
    loan_id: indexed(bytes32)
    repaid_at: uint256

# @dev Past due beyond `default_after_days`.
event LoanDefaulted:
    loan_id: indexed(bytes32)
    days_past_due: uint256
    outstanding: uint256

# @dev The committee wrote the defaulted balance off.
event LoanWrittenOff:
    loan_id: indexed(bytes32)
    outstanding: uint256

# @dev A loan was cancelled before disbursement.
event LoanCancelled:
    loan_id: indexed(bytes32)
    reason: bytes32


# STORAGE

# @dev Days past due at which `mark_default` becomes possible.
default_after_days: public(immutable(uint256))

# @dev The serial number the next loan gets (1 for the first). Starts at 1 in
# the constructor, so no loan pays for a fresh slot.
_next_serial: uint256

# @dev principal (96) | total_due (96) | currency (16) | installment_count (16)
# | installment_interval (32). Written once.
_schedule: HashMap[bytes32, uint256]

# @dev status byte (8: state nibble, fees-assessed and ever-defaulted bits)
# | disbursed_at (40) | serial (32) | scheduled_repaid (96)
# | late_fees_paid (80). The slot a repayment rewrites, alone.
_status: HashMap[bytes32, uint256]

# @dev max_late_fees (80) | late_fees_assessed (80) | grace_period (32):
# what only late-fee and past-due logic reads.
_fees: HashMap[bytes32, uint256]

# @dev The payout destination the committee approves; checked at disbursement.
_payout_ref: HashMap[bytes32, bytes32]

# @dev keccak256 of the canonical agreement document; signed by the committee.
_terms_hash: HashMap[bytes32, bytes32]

# @dev payment_ref => flags (8) | amount (104) | loan serial (32: unique per
# loan by construction, so a reversal naming another loan is refused whatever
# its id). One slot per payment: the idempotency record.
_payments: HashMap[bytes32, uint256]

# @dev Late-fee references already used, so a re-run charges nothing twice.
_fee_refs: HashMap[bytes32, bool]

# @dev Running hash over each loan's events:
#   chain_0 = 0x00..00 (32 zero bytes: the seed, the same for every loan)
#   chain_n = keccak256(chain_{n-1} ++ topic_0 ++ topic_1 ++ ... ++ data)
# where topic_0 is the event signature hash, topic_1 the loan id, further
# topics the other indexed fields, and data the log's data bytes, i.e.
# exactly the raw log's topics and data in emission order. It covers every
# log this contract emits with the loan id as topic_1 (the ten loan events)
# and nothing else: not the committee's events, not access-control or pause
# events.
event_chain: public(HashMap[bytes32, bytes32])


# CONSTRUCTOR

@deploy
def __init__(default_after_days_: uint256):
    """
    @dev The deployer holds DEFAULT_ADMIN_ROLE until `scripts/deploy.py`
         has granted the roles to the committee and the backend and
         renounced it.
    @param default_after_days_ Days past due from which a loan may be
           marked defaulted.
    """
    assert default_after_days_ > 0, "loan_book: default_after_days is zero"
    access_control.__init__()
    pausable.__init__()
    default_after_days = default_after_days_
    self._next_serial = 1


# ORIGINATION

@external
def create_loan(loan_id: bytes32, terms: Terms):
    """
    @notice Records a loan agreement as PENDING, awaiting the committee.
    @param loan_id Chosen off chain (keccak of the loan's UUID).
    @param terms The agreement; see `Terms`.
    """
    access_control._check_role(ORIGINATOR_ROLE, msg.sender)
    pausable._require_not_paused()
    assert loan_id != empty(bytes32), "loan_book: empty loan id"
    assert self._status[loan_id] == 0, "loan_book: loan exists"
    assert terms.currency != 0, "loan_book: currency missing"
    assert terms.principal != 0, "loan_book: principal is zero"
    assert terms.total_due >= terms.principal, "loan_book: total_due below principal"
    assert terms.total_due <= MAX_AMOUNT, "loan_book: amount too large"
    assert terms.max_late_fees <= MAX_LATE_FEES, "loan_book: late fee cap too large"
    assert terms.installment_count != 0, "loan_book: no installments"
    assert terms.installment_interval != 0, "loan_book: interval is zero"
    assert terms.total_due >= convert(terms.installment_count, uint256), "loan_book: installment below one unit"
    assert terms.payout_ref != empty(bytes32), "loan_book: payout_ref missing"
    assert terms.terms_hash != empty(bytes32), "loan_book: terms_hash missing"
    serial: uint256 = self._next_serial
    assert serial <= MAX_LOANS, "loan_book: too many loans"

    self._next_serial = serial + 1
    self._schedule[loan_id] = (
        terms.principal
        | (terms.total_due << 96)
        | (convert(terms.currency, uint256) << 192)
        | (convert(terms.installment_count, uint256) << 208)
        | (convert(terms.installment_interval, uint256) << 224)
    )
    self._status[loan_id] = self._pack_status(
        _Status(
            state=PENDING,
            ever_defaulted=False,
            fees_assessed=False,
            disbursed_at=0,
            serial=serial,
            scheduled_repaid=0,
            late_fees_paid=0,
        )
    )
    fees: uint256 = terms.max_late_fees | (convert(terms.grace_period, uint256) << 160)
    if fees != 0:
        self._fees[loan_id] = fees
    self._payout_ref[loan_id] = terms.payout_ref
    self._terms_hash[loan_id] = terms.terms_hash

    log LoanCreated(
        loan_id=loan_id,
        borrower_ref=terms.borrower_ref,
        partner_ref=terms.partner_ref,
        currency=terms.currency,
        principal=terms.principal,
        total_due=terms.total_due,
        installment_count=terms.installment_count,
        installment_interval=terms.installment_interval,
        grace_period=terms.grace_period,
        max_late_fees=terms.max_late_fees,
        payout_ref=terms.payout_ref,
        terms_hash=terms.terms_hash,
    )
    self.event_chain[loan_id] = keccak256(
        abi_encode(
            empty(bytes32),
            _LOAN_CREATED,
            loan_id,
            terms.borrower_ref,
            terms.partner_ref,
            terms.currency,
            terms.principal,
            terms.total_due,
            terms.installment_count,
            terms.installment_interval,
            terms.grace_period,
            terms.max_late_fees,
            terms.payout_ref,
            terms.terms_hash,
        )
    )


@external
def cancel_loan(loan_id: bytes32, reason: bytes32):
    """
    @notice Cancels a loan that has not been paid out.
    @dev The originator may cancel while unpaused; the committee
         (APPROVER_ROLE) may cancel at any time, paused or not, because
         unwinding must not wait for an unpause.
    @param loan_id The loan.
    @param reason A reason code, kept in the event.
    """
    if not access_control.hasRole[APPROVER_ROLE][msg.sender]:
        access_control._check_role(ORIGINATOR_ROLE, msg.sender)
        pausable._require_not_paused()
    status: _Status = self._load_status(loan_id)
    assert status.state == PENDING or status.state == APPROVED, "loan_book: not cancellable"

    status.state = CANCELLED
    self._status[loan_id] = self._pack_status(status)

    log LoanCancelled(loan_id=loan_id, reason=reason)
    self.event_chain[loan_id] = keccak256(
        abi_encode(self.event_chain[loan_id], _LOAN_CANCELLED, loan_id, reason)
    )


@external
def approve_loan(loan_id: bytes32):
    """
    @notice The committee's approval of the disbursement: PENDING -> APPROVED.
    @param loan_id The loan.
    """
    access_control._check_role(APPROVER_ROLE, msg.sender)
    pausable._require_not_paused()
    status: _Status = self._load_status(loan_id)
    assert status.state == PENDING, "loan_book: not pending"

    status.state = APPROVED
    self._status[loan_id] = self._pack_status(status)

    log LoanApproved(loan_id=loan_id, approver=msg.sender)
    self.event_chain[loan_id] = keccak256(
        abi_encode(self.event_chain[loan_id], _LOAN_APPROVED, loan_id, msg.sender)
    )


# SERVICING

@external
def record_disbursement(loan_id: bytes32, amount: uint256, payout_ref: bytes32, rail_ref: bytes32):
    """
    @notice Records the payout of the whole principal: APPROVED -> ACTIVE.
            The schedule runs from this block's timestamp.
    @param loan_id The loan.
    @param amount Must equal the principal.
    @param payout_ref Must equal the destination the committee approved.
    @param rail_ref The rail's transfer reference (keccak of it).
    """
    access_control._check_role(SERVICER_ROLE, msg.sender)
    pausable._require_not_paused()
    status: _Status = self._load_status(loan_id)
    assert status.state == APPROVED, "loan_book: not approved"
    assert amount == self._schedule[loan_id] & _MASK96, "loan_book: amount is not the principal"
    assert payout_ref == self._payout_ref[loan_id], "loan_book: payout_ref mismatch"
    assert rail_ref != empty(bytes32), "loan_book: rail_ref missing"

    status.state = ACTIVE
    status.disbursed_at = block.timestamp
    self._status[loan_id] = self._pack_status(status)

    log LoanDisbursed(
        loan_id=loan_id,
        amount=amount,
        payout_ref=payout_ref,
        rail_ref=rail_ref,
        disbursed_at=block.timestamp,
    )
    self.event_chain[loan_id] = keccak256(
        abi_encode(
            self.event_chain[loan_id], _LOAN_DISBURSED, loan_id, amount, payout_ref, rail_ref, block.timestamp
        )
    )


@external
@reentrant
def record_repayment(loan_id: bytes32, amount: uint256, payment_ref: bytes32):
    """
    @notice Records money received from the borrower, once per reference.
            Late fees are paid first, then the schedule. Payments after
            default, and after a write-off, count as recoveries.
            Outstanding 0 -> REPAID, except that a WRITTEN_OFF loan stays
            WRITTEN_OFF.
    @dev The hottest path: it works on the packed status word directly and
         reads the fee slot only once a late fee was ever assessed. Marked
         `@reentrant` (no lock, ~330 gas saved on every repayment) because
         nothing can re-enter it: it makes no external call, and LoanBook
         calls out nowhere (access_control and pausable are internal
         modules), so no code runs between its checks and its effects.
    @param loan_id The loan (ACTIVE, DEFAULTED or WRITTEN_OFF).
    @param amount Minor units; at most the outstanding amount.
    @param payment_ref keccak256(utf8 "<provider>:<provider reference>").
    """
    access_control._check_role(SERVICER_ROLE, msg.sender)
    pausable._require_not_paused()
    assert payment_ref != empty(bytes32), "loan_book: payment_ref missing"
    assert self._payments[payment_ref] == 0, "loan_book: payment already recorded"
    assert amount != 0, "loan_book: amount is zero"
    word: uint256 = self._status[loan_id]
    assert word != 0, "loan_book: unknown loan"
    state: uint256 = word & _STATE_MASK
    assert (1 << state) & _REPAYABLE != 0, "loan_book: not repayable"

    # scheduled_repaid <= total_due and late_fees_paid <= late_fees_assessed
    # always hold (every write keeps them), so these cannot wrap.
    scheduled_owed: uint256 = unsafe_sub((self._schedule[loan_id] >> 96) & _MASK96, (word >> 80) & _MASK96)
    fees_owed: uint256 = 0
    if word & _FEES_ASSESSED != 0:
        fees_owed = unsafe_sub((self._fees[loan_id] >> 80) & _MASK80, word >> 176)
    outstanding_before: uint256 = unsafe_add(scheduled_owed, fees_owed)
    assert amount <= outstanding_before, "loan_book: amount exceeds outstanding"

    fee_part: uint256 = min(amount, fees_owed)
    scheduled_part: uint256 = unsafe_sub(amount, fee_part)
    outstanding_after: uint256 = unsafe_sub(outstanding_before, amount)
    # Both parts fit their fields (bounded by what is owed), so adding them
    # in place cannot carry into the next field.
    word = unsafe_add(word, unsafe_add(scheduled_part << 80, fee_part << 176))
    closes: bool = outstanding_after == 0 and state != WRITTEN_OFF
    if closes:
        word = (word ^ state) | REPAID
    self._status[loan_id] = word
    self._payments[payment_ref] = (
        _PAYMENT_RECORDED | (amount << 8) | (((word >> 48) & _MASK32) << _RECORD_SERIAL_SHIFT)
    )

    log RepaymentRecorded(
        loan_id=loan_id,
        payment_ref=payment_ref,
        amount=amount,
        fee_part=fee_part,
        scheduled_part=scheduled_part,
        outstanding_after=outstanding_after,
    )
    head: bytes32 = keccak256(
        abi_encode(
            self.event_chain[loan_id],
            _REPAYMENT_RECORDED,
            loan_id,
            payment_ref,
            amount,
            fee_part,
            scheduled_part,
            outstanding_after,
        )
    )
    if closes:
        log LoanRepaid(loan_id=loan_id, repaid_at=block.timestamp)
        head = keccak256(abi_encode(head, _LOAN_REPAID, loan_id, block.timestamp))
    self.event_chain[loan_id] = head


@external
def reverse_repayment(loan_id: bytes32, payment_ref: bytes32, reason: bytes32):
    """
    @notice Undoes one recorded repayment (chargeback, reversal): its amount
            is owed again, and a loan it had closed reopens in the state it
            had before (DEFAULTED if it ever defaulted, otherwise ACTIVE; a
            WRITTEN_OFF loan stays so). The reference stays used.

            The amount comes back off the scheduled part first, and only the
            rest off late fees paid: repayments pay late fees first, so fees
            are the last to become unpaid. (Undoing the payment's own split
            instead could leave late fees unpaid on a fully paid schedule,
            owed but never past due.) So after any repayments and reversals,
            unpaid late fees imply an unpaid installment: a loan that owes
            anything falls past due in time and can be defaulted. The event
            carries what the reversal took from each part.
    @param loan_id The loan the payment was recorded against.
    @param payment_ref The payment's reference.
    @param reason A reason code, kept in the event.
    """
    access_control._check_role(SERVICER_ROLE, msg.sender)
    pausable._require_not_paused()
    record: uint256 = self._payments[payment_ref]
    assert record & _PAYMENT_RECORDED != 0, "loan_book: unknown payment"
    status: _Status = self._unpack_status(self._status[loan_id])
    # Serials are unique and never 0, so this refuses every other loan id,
    # known or not.
    assert (record >> _RECORD_SERIAL_SHIFT) & _MASK32 == status.serial, "loan_book: payment of another loan"
    assert record & _PAYMENT_REVERSED == 0, "loan_book: payment already reversed"

    amount: uint256 = (record >> 8) & _MASK104
    scheduled_part: uint256 = min(amount, status.scheduled_repaid)
    # Never underflows: what was paid and not reversed covers this payment.
    fee_part: uint256 = amount - scheduled_part
    status.scheduled_repaid -= scheduled_part
    status.late_fees_paid -= fee_part
    if status.state == REPAID:
        if status.ever_defaulted:
            status.state = DEFAULTED
        else:
            status.state = ACTIVE
    self._status[loan_id] = self._pack_status(status)
    self._payments[payment_ref] = record | _PAYMENT_REVERSED

    total_due: uint256 = (self._schedule[loan_id] >> 96) & _MASK96
    late_fees_assessed: uint256 = (self._fees[loan_id] >> 80) & _MASK80
    outstanding_after: uint256 = self._outstanding(total_due, late_fees_assessed, status)
    state_after: uint8 = convert(status.state, uint8)
    log RepaymentReversed(
        loan_id=loan_id,
        payment_ref=payment_ref,
        amount=amount,
        fee_part=fee_part,
        scheduled_part=scheduled_part,
        reason=reason,
        outstanding_after=outstanding_after,
        state_after=state_after,
    )
    self.event_chain[loan_id] = keccak256(
        abi_encode(
            self.event_chain[loan_id],
            _REPAYMENT_REVERSED,
            loan_id,
            payment_ref,
            amount,
            fee_part,
            scheduled_part,
            reason,
            outstanding_after,
            state_after,
        )
    )


@external
def assess_late_fee(loan_id: bytes32, amount: uint256, fee_ref: bytes32):
    """
    @notice Charges a late fee on an ACTIVE loan that is past due (beyond
            its grace period), never above the loan's `max_late_fees` in total.
    @param loan_id The loan.
    @param amount The fee, minor units.
    @param fee_ref Idempotency reference (e.g. keccak of "late_fee:<loan>:<date>").
    """
    access_control._check_role(SERVICER_ROLE, msg.sender)
    pausable._require_not_paused()
    assert fee_ref != empty(bytes32), "loan_book: fee_ref missing"
    assert not self._fee_refs[fee_ref], "loan_book: fee already assessed"
    assert amount != 0, "loan_book: amount is zero"
    status: _Status = self._load_status(loan_id)
    assert status.state == ACTIVE, "loan_book: not active"
    schedule: _Schedule = self._load_schedule(loan_id)
    fees: _Fees = self._load_fees(loan_id)
    assert self._is_past_due(schedule, status, fees.grace_period, block.timestamp), "loan_book: not past due"
    assert fees.late_fees_assessed + amount <= fees.max_late_fees, "loan_book: late fee cap exceeded"

    fees.late_fees_assessed += amount
    self._fees[loan_id] = self._pack_fees(fees)
    if not status.fees_assessed:
        status.fees_assessed = True
        self._status[loan_id] = self._pack_status(status)
    self._fee_refs[fee_ref] = True

    outstanding_after: uint256 = self._outstanding(schedule.total_due, fees.late_fees_assessed, status)
    log LateFeeAssessed(
        loan_id=loan_id,
        fee_ref=fee_ref,
        amount=amount,
        late_fees_assessed=fees.late_fees_assessed,
        outstanding_after=outstanding_after,
    )
    self.event_chain[loan_id] = keccak256(
        abi_encode(
            self.event_chain[loan_id],
            _LATE_FEE_ASSESSED,
            loan_id,
            fee_ref,
            amount,
            fees.late_fees_assessed,
            outstanding_after,
        )
    )


@external
def mark_default(loan_id: bytes32):
    """
    @notice ACTIVE -> DEFAULTED once `days_past_due >= default_after_days`.
    @param loan_id The loan.
    """
    access_control._check_role(SERVICER_ROLE, msg.sender)
    pausable._require_not_paused()
    status: _Status = self._load_status(loan_id)
    assert status.state == ACTIVE, "loan_book: not active"
    schedule: _Schedule = self._load_schedule(loan_id)
    fees: _Fees = self._load_fees(loan_id)
    dpd: uint256 = self._days_past_due(schedule, status, fees.grace_period, block.timestamp)
    assert dpd >= default_after_days, "loan_book: not in default yet"

    status.state = DEFAULTED
    status.ever_defaulted = True
    self._status[loan_id] = self._pack_status(status)

    outstanding: uint256 = self._outstanding(schedule.total_due, fees.late_fees_assessed, status)
    log LoanDefaulted(loan_id=loan_id, days_past_due=dpd, outstanding=outstanding)
    self.event_chain[loan_id] = keccak256(
        abi_encode(self.event_chain[loan_id], _LOAN_DEFAULTED, loan_id, dpd, outstanding)
    )


@external
def write_off(loan_id: bytes32):
    """
    @notice The committee writes a defaulted loan off: DEFAULTED -> WRITTEN_OFF.
            Allowed while paused (an unwind action). The loan keeps taking
            recoveries and reversals (see `record_repayment`).
    @param loan_id The loan.
    """
    access_control._check_role(APPROVER_ROLE, msg.sender)
    status: _Status = self._load_status(loan_id)
    assert status.state == DEFAULTED, "loan_book: not defaulted"

    status.state = WRITTEN_OFF
    self._status[loan_id] = self._pack_status(status)

    total_due: uint256 = (self._schedule[loan_id] >> 96) & _MASK96
    outstanding: uint256 = self._outstanding(total_due, (self._fees[loan_id] >> 80) & _MASK80, status)
    log LoanWrittenOff(loan_id=loan_id, outstanding=outstanding)
    self.event_chain[loan_id] = keccak256(
        abi_encode(self.event_chain[loan_id], _LOAN_WRITTEN_OFF, loan_id, outstanding)
    )


# EMERGENCY STOP

@external
def pause():
    """
    @notice Stops every state change except the committee's unwind actions
            (`write_off`, `cancel_loan`). PAUSER_ROLE: the committee, and
            optionally an operations key for emergencies.
    """
    access_control._check_role(PAUSER_ROLE, msg.sender)
    pausable._pause()


@external
def unpause():
    """
    @notice Resumes normal operation. UNPAUSER_ROLE, which only the committee
            holds (M-of-N), so an operations key that can pause cannot undo
            a committee's pause.
    """
    access_control._check_role(UNPAUSER_ROLE, msg.sender)
    pausable._unpause()


# VIEWS

@external
@view
def loans(loan_id: bytes32) -> Loan:
    """
    @notice Everything stored about a loan, plus derived totals.
    @param loan_id The loan.
    @return Loan The loan (all zero for an unknown id).
    """
    schedule: _Schedule = self._load_schedule(loan_id)
    status: _Status = self._unpack_status(self._status[loan_id])
    fees: _Fees = self._load_fees(loan_id)
    return Loan(
        state=convert(status.state, uint8),
        ever_defaulted=status.ever_defaulted,
        currency=convert(schedule.currency, uint16),
        principal=schedule.principal,
        total_due=schedule.total_due,
        installment_count=convert(schedule.installment_count, uint16),
        installment_interval=convert(schedule.installment_interval, uint32),
        grace_period=convert(fees.grace_period, uint32),
        max_late_fees=fees.max_late_fees,
        payout_ref=self._payout_ref[loan_id],
        terms_hash=self._terms_hash[loan_id],
        disbursed_at=status.disbursed_at,
        scheduled_repaid=status.scheduled_repaid,
        late_fees_assessed=fees.late_fees_assessed,
        late_fees_paid=status.late_fees_paid,
        repaid=status.scheduled_repaid + status.late_fees_paid,
        outstanding=self._outstanding(schedule.total_due, fees.late_fees_assessed, status),
    )


@external
@view
def loan_state(loan_id: bytes32) -> uint8:
    """
    @notice The loan's state (0 NONE .. 7 CANCELLED).
    """
    return convert(self._status[loan_id] & _STATE_MASK, uint8)


@external
@view
def loan_count() -> uint256:
    """
    @notice Number of loans created: the serial number of the latest one.
    """
    return self._next_serial - 1


@external
@view
def loan_serial(loan_id: bytes32) -> uint256:
    """
    @notice The loan's serial number: 1 for the first loan created, 2 for
            the next, ... (0 for an unknown id). Payment records carry it.
    """
    return (self._status[loan_id] >> 48) & _MASK32


@external
@view
def outstanding(loan_id: bytes32) -> uint256:
    """
    @notice total_due + late_fees_assessed - repaid (0 for an unknown loan).
    """
    status: _Status = self._unpack_status(self._status[loan_id])
    total_due: uint256 = (self._schedule[loan_id] >> 96) & _MASK96
    return self._outstanding(total_due, (self._fees[loan_id] >> 80) & _MASK80, status)


@external
@view
def amount_due(loan_id: bytes32, at: uint256) -> uint256:
    """
    @notice Unpaid late fees plus the scheduled amount due by `at` that is
            not yet paid. Zero unless the loan is ACTIVE or DEFAULTED.
    @param at A unix timestamp.
    """
    status: _Status = self._unpack_status(self._status[loan_id])
    if not self._in_repayment(status):
        return 0
    schedule: _Schedule = self._load_schedule(loan_id)
    fees: _Fees = self._load_fees(loan_id)
    scheduled: uint256 = self._scheduled_due_by(schedule, status.disbursed_at, at)
    behind: uint256 = 0
    if scheduled > status.scheduled_repaid:
        behind = scheduled - status.scheduled_repaid
    return fees.late_fees_assessed - status.late_fees_paid + behind


@external
@view
def days_past_due(loan_id: bytes32, at: uint256) -> uint256:
    """
    @notice Whole days since the due date of the oldest installment not
            fully paid, once `at` is past that due date plus the grace
            period; otherwise 0. Zero unless ACTIVE or DEFAULTED.
    @param at A unix timestamp.
    """
    status: _Status = self._unpack_status(self._status[loan_id])
    if not self._in_repayment(status):
        return 0
    grace: uint256 = self._load_fees(loan_id).grace_period
    return self._days_past_due(self._load_schedule(loan_id), status, grace, at)


@external
@view
def next_due(loan_id: bytes32) -> (uint256, uint256):
    """
    @notice The due date of the oldest installment not fully paid and the
            scheduled amount still owed up to and including it; (0, 0) when
            nothing is scheduled (not in repayment, or fully paid).
    """
    status: _Status = self._unpack_status(self._status[loan_id])
    if not self._in_repayment(status):
        return (0, 0)
    schedule: _Schedule = self._load_schedule(loan_id)
    due_at: uint256 = self._oldest_unpaid_due_at(schedule, status)
    if due_at == 0:
        return (0, 0)
    return (due_at, self._scheduled_due_by(schedule, status.disbursed_at, due_at) - status.scheduled_repaid)


@external
@view
def is_payment_recorded(payment_ref: bytes32) -> bool:
    """
    @notice Whether a repayment with this reference was ever recorded
            (a reversed one still counts: its reference stays used).
    """
    return self._payments[payment_ref] & _PAYMENT_RECORDED != 0


@external
@view
def is_payment_reversed(payment_ref: bytes32) -> bool:
    """
    @notice Whether a recorded repayment was reversed.
    """
    return self._payments[payment_ref] & _PAYMENT_REVERSED != 0


@external
@view
def is_fee_assessed(fee_ref: bytes32) -> bool:
    """
    @notice Whether a late fee with this reference was assessed.
    """
    return self._fee_refs[fee_ref]


@external
@view
def approval_state(loan_id: bytes32) -> (uint8, uint256):
    """
    @notice (state, principal): what the committee needs to count an
            on-chain approval (two slots, where `approval_terms` reads five).
    """
    return (convert(self._status[loan_id] & _STATE_MASK, uint8), self._schedule[loan_id] & _MASK96)


@external
@view
def approval_terms(loan_id: bytes32) -> ApprovalTerms:
    """
    @notice The state and every economic term of a loan in one call: what
            the committee's EIP-712 `ApproveDisbursement` binds (all zero
            for an unknown id).
    """
    schedule: _Schedule = self._load_schedule(loan_id)
    fees: _Fees = self._load_fees(loan_id)
    return ApprovalTerms(
        state=convert(self._status[loan_id] & _STATE_MASK, uint8),
        currency=convert(schedule.currency, uint16),
        principal=schedule.principal,
        total_due=schedule.total_due,
        installment_count=convert(schedule.installment_count, uint16),
        installment_interval=convert(schedule.installment_interval, uint32),
        grace_period=convert(fees.grace_period, uint32),
        max_late_fees=fees.max_late_fees,
        payout_ref=self._payout_ref[loan_id],
        terms_hash=self._terms_hash[loan_id],
    )


# INTERNAL

@internal
@view
def _load_status(loan_id: bytes32) -> _Status:
    word: uint256 = self._status[loan_id]
    assert word != 0, "loan_book: unknown loan"
    return self._unpack_status(word)


@internal
@pure
def _unpack_status(word: uint256) -> _Status:
    return _Status(
        state=word & _STATE_MASK,
        ever_defaulted=word & _EVER_DEFAULTED != 0,
        fees_assessed=word & _FEES_ASSESSED != 0,
        disbursed_at=(word >> 8) & _MASK40,
        serial=(word >> 48) & _MASK32,
        scheduled_repaid=(word >> 80) & _MASK96,
        late_fees_paid=word >> 176,
    )


@internal
@pure
def _pack_status(status: _Status) -> uint256:
    flags: uint256 = status.state
    if status.ever_defaulted:
        flags |= _EVER_DEFAULTED
    if status.fees_assessed:
        flags |= _FEES_ASSESSED
    return (
        flags
        | (status.disbursed_at << 8)
        | (status.serial << 48)
        | (status.scheduled_repaid << 80)
        | (status.late_fees_paid << 176)
    )


@internal
@view
def _load_schedule(loan_id: bytes32) -> _Schedule:
    word: uint256 = self._schedule[loan_id]
    return _Schedule(
        principal=word & _MASK96,
        total_due=(word >> 96) & _MASK96,
        currency=(word >> 192) & _MASK16,
        installment_count=(word >> 208) & _MASK16,
        installment_interval=word >> 224,
    )


@internal
@view
def _load_fees(loan_id: bytes32) -> _Fees:
    word: uint256 = self._fees[loan_id]
    return _Fees(
        max_late_fees=word & _MASK80,
        late_fees_assessed=(word >> 80) & _MASK80,
        grace_period=word >> 160,
    )


@internal
@pure
def _pack_fees(fees: _Fees) -> uint256:
    return fees.max_late_fees | (fees.late_fees_assessed << 80) | (fees.grace_period << 160)


@internal
@pure
def _outstanding(total_due: uint256, late_fees_assessed: uint256, status: _Status) -> uint256:
    return total_due + late_fees_assessed - status.scheduled_repaid - status.late_fees_paid


@internal
@pure
def _in_repayment(status: _Status) -> bool:
    return status.state == ACTIVE or status.state == DEFAULTED


@internal
@pure
def _scheduled_due_by(schedule: _Schedule, disbursed_at: uint256, at: uint256) -> uint256:
    """
    @dev Sum of the installments whose due date is at or before `at`.
    """
    if at < disbursed_at + schedule.installment_interval:
        return 0
    installments_due: uint256 = (at - disbursed_at) // schedule.installment_interval
    if installments_due >= schedule.installment_count:
        return schedule.total_due
    return installments_due * (schedule.total_due // schedule.installment_count)


@internal
@pure
def _oldest_unpaid_due_at(schedule: _Schedule, status: _Status) -> uint256:
    """
    @dev Due date of the oldest installment not fully paid; 0 when all are.
         Installment j < n is fully paid once scheduled_repaid >= j * base.
    """
    if status.scheduled_repaid >= schedule.total_due:
        return 0
    base: uint256 = schedule.total_due // schedule.installment_count
    index: uint256 = min(status.scheduled_repaid // base + 1, schedule.installment_count)
    return status.disbursed_at + index * schedule.installment_interval


@internal
@pure
def _is_past_due(schedule: _Schedule, status: _Status, grace_period: uint256, at: uint256) -> bool:
    due_at: uint256 = self._oldest_unpaid_due_at(schedule, status)
    return due_at != 0 and at > due_at + grace_period


@internal
@pure
def _days_past_due(schedule: _Schedule, status: _Status, grace_period: uint256, at: uint256) -> uint256:
    due_at: uint256 = self._oldest_unpaid_due_at(schedule, status)
    if due_at == 0 or at <= due_at + grace_period:
        return 0
    return (at - due_at) // SECONDS_PER_DAY
