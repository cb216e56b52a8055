"""LoanBook + DisbursementCommittee against the plain-Python model, as a Hypothesis state machine.

Every rule performs the action on chain and in `offchain.domain.loan_book` (the model); where the
model refuses, the chain must revert with the same reason. Invariants, named for what they guard:

- `state_transitions_legal`: every observed state change is in LEGAL_TRANSITIONS;
- `books_match_model`: outstanding == total_due + fees - repaid, never negative, every field equal;
- `payment_refs_recorded_once`: a reference is recorded at most once, reversed at most once;
- `nothing_approved_below_threshold`: a loan leaves PENDING only with >= threshold approvals;
- `schedule_views_match_model`: amount_due, days_past_due and next_due equal the model at several
  `at`, the boundaries of the last installment's remainder window included;
- `owing_loan_falls_past_due`: after any repayments and reversals, a loan that owes anything has
  an installment not fully paid, so it falls past due and can be defaulted in time (issue 15);
- `reversal_guard_names_the_loan`: a recorded payment cannot be reversed against any other loan
  id, created ones sharing every bit but the top one included (the guard compares serials);
- `only_the_right_role_changes_anything`: a stranger's call reverts and changes nothing.

The runs must also reach the last-installment remainder window (all but the remainder of the
schedule paid) and reverse payments while both fees and schedule are paid (where the reversal order
decides what is owed); the test asserts both happened.

Profiles: HYPOTHESIS_PROFILE=ci (default: 100 examples x 30 steps), nightly (1,000 x 50).
"""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3.exceptions import ContractLogicError

from offchain.chain.contracts import sign_approval, sort_signatures
from offchain.domain.approvals import ApprovalTerms, approval_typed_data
from offchain.domain.loan_book import LEGAL_TRANSITIONS, Loan, LoanRuleViolation, LoanState

DAY = 86_400
DEFAULT_AFTER_DAYS = 90
THRESHOLD = 2
MAX_LOANS = 4
MISSING_ROLE = "access_control: account is missing role"
WRITE_OFF = 5  # DisbursementCommittee.ACTION_WRITE_OFF
ZERO_ADDRESS = "0x" + "00" * 20

settings.register_profile(
    "ci",
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=1_000,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _ref(text: str) -> bytes:
    return keccak(text=text)


def _twin(loan_id: bytes) -> bytes:
    """The id sharing every bit with `loan_id` but the top one."""
    return bytes([loan_id[0] ^ 0x80]) + loan_id[1:]


def _in_remainder_window(loan: Loan) -> bool:
    """All installments but the last one's remainder are paid: n * base <= repaid < total_due."""
    n, base = loan.installment_count, loan.installment_base
    return (
        loan.state in (LoanState.ACTIVE, LoanState.DEFAULTED)
        and n * base <= loan.scheduled_repaid < loan.total_due
    )


def _abi(contract) -> list[dict]:
    return [item.model_dump(mode="json", by_alias=True) for item in contract.contract_type.abi]


@pytest.mark.stateful
def test_loan_book_state_machine(
    chain, loan_book, committee, originator, servicer, stranger, signers, signer_keys
):
    # Transactions go straight through web3 to ape's Anvil (its accounts are unlocked there):
    # ape's per-transaction tracing would make 3,000 steps take many minutes.
    w3 = chain.provider.web3
    book = w3.eth.contract(address=loan_book.address, abi=_abi(loan_book))
    board = w3.eth.contract(address=committee.address, abi=_abi(committee))
    rpc = w3.provider.make_request

    def send(fn, sender):
        tx_hash = fn.transact({"from": sender.address, "gas": 2_000_000})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, f"{fn.fn_name} reverted unexpectedly"
        return receipt

    def expect_revert(fn, sender, reason: str):
        """The call must revert with `reason` at the current block time, and is not mined."""
        rpc("evm_mine", [])
        try:
            fn.call({"from": sender.address})
        except ContractLogicError as error:
            assert reason in str(error), f"expected {reason!r}, got {error}"
        else:
            raise AssertionError(f"{fn.fn_name} did not revert (expected {reason!r})")

    reached = {"remainder_window": 0, "reversal_with_fees_paid": 0}

    class Machine(RuleBasedStateMachine):
        loans = Bundle("loans")
        payments = Bundle("payments")

        def __init__(self) -> None:
            super().__init__()
            self.snapshot = rpc("evm_snapshot", [])["result"]
            self.now = w3.eth.get_block("latest")["timestamp"] + 1
            self.model: dict[bytes, Loan] = {}
            self.approvals: dict[bytes, set[int]] = {}
            self.payments_made: dict[bytes, tuple[bytes, int]] = {}
            self.reversed: set[bytes] = set()
            self.guard_checked: set[bytes] = set()
            self.seen_states: dict[bytes, LoanState] = {}
            self.counter = 0
            self.touched: bytes | None = None

        def teardown(self) -> None:
            rpc("evm_revert", [self.snapshot])

        # -- helpers --------------------------------------------------------------------

        def _tick(self, seconds: int = 1) -> int:
            """The next block's timestamp, fixed so the model sees the same clock."""
            self.now += seconds
            rpc("evm_setNextBlockTimestamp", [self.now])
            return self.now

        def _next(self, prefix: str) -> bytes:
            self.counter += 1
            return _ref(f"{prefix}:{self.counter}:{self.snapshot}")

        def _expect(self, model_action, fn, sender) -> bool:
            """Run the model action at the next block time; the chain must agree, reason included."""
            self._tick()
            try:
                model_action()
            except LoanRuleViolation as violation:
                expect_revert(fn, sender, str(violation))
                return False
            send(fn, sender)
            return True

        # -- rules ----------------------------------------------------------------------

        @initialize()
        def start(self) -> None:
            pass

        @precondition(lambda self: len(self.model) < MAX_LOANS)
        @rule(
            target=loans,
            principal=st.integers(min_value=1, max_value=10**12),
            markup_bps=st.integers(min_value=0, max_value=5_000),
            count=st.integers(min_value=1, max_value=12),
            interval_days=st.sampled_from([7, 14, 30]),
            grace_days=st.integers(min_value=0, max_value=5),
            max_fees=st.integers(min_value=0, max_value=10**9),
            twin=st.booleans(),
        )
        def create(self, principal, markup_bps, count, interval_days, grace_days, max_fees, twin):
            total_due = max(principal + principal * markup_bps // 10_000, count)
            loan_id = self._next("loan")
            if twin and self.model and _twin(list(self.model)[-1]) not in self.model:
                loan_id = _twin(list(self.model)[-1])  # shares all but one bit with a loan
            terms = (
                _ref("borrower"),
                _ref("partner"),
                566,
                principal,
                total_due,
                count,
                interval_days * DAY,
                grace_days * DAY,
                max_fees,
                _ref(f"payout:{loan_id.hex()}"),
                _ref(f"terms:{loan_id.hex()}"),
            )
            self._tick()
            send(book.functions.create_loan(loan_id, terms), originator)
            self.model[loan_id] = Loan(
                currency=566,
                principal=principal,
                total_due=total_due,
                installment_count=count,
                installment_interval=interval_days * DAY,
                grace_period=grace_days * DAY,
                max_late_fees=max_fees,
            )
            self.approvals[loan_id] = set()
            self.touched = loan_id
            return loan_id

        @precondition(lambda self: len(self.model) < MAX_LOANS)
        @rule(
            target=loans,
            principal=st.integers(min_value=1, max_value=10**12),
            markup_bps=st.integers(min_value=1, max_value=5_000),
            count=st.integers(min_value=2, max_value=12),
            max_fees=st.integers(min_value=0, max_value=10**9),
        )
        def create_active(self, principal, markup_bps, count, max_fees):
            """create + two on-chain approvals + disbursement in one step, so that runs spend their
            steps on repayment, reversal and default (where the schedule's edges are)."""
            loan_id = self.create(principal, markup_bps, count, 30, 3, max_fees, False)
            for step in (
                lambda: self.approve_on_chain(loan_id, 0),
                lambda: self.approve_on_chain(loan_id, 1),
                lambda: self.disburse(loan_id),
            ):
                self.state_transitions_legal()  # sees every intermediate state
                step()
            assert self.model[loan_id].state == LoanState.ACTIVE
            return loan_id

        def _approve_model(self, loan_id: bytes, signer_index: int):
            loan = self.model[loan_id]

            def act():
                if loan.state != LoanState.PENDING:
                    raise LoanRuleViolation("committee: loan not pending")
                if signer_index in self.approvals[loan_id]:
                    raise LoanRuleViolation("committee: already approved")
                self.approvals[loan_id].add(signer_index)
                if len(self.approvals[loan_id]) >= THRESHOLD:
                    loan.approve()

            return act

        @rule(loan_id=loans, signer_index=st.integers(min_value=0, max_value=2))
        def approve_on_chain(self, loan_id, signer_index):
            self.touched = loan_id
            self._expect(
                self._approve_model(loan_id, signer_index),
                board.functions.approve(loan_id),
                signers[signer_index],
            )

        @rule(loan_id=loans, signer_index=st.integers(min_value=0, max_value=2))
        def approve_by_signature(self, loan_id, signer_index):
            self.touched = loan_id
            loan = self.model[loan_id]
            if loan.state != LoanState.PENDING or signer_index in self.approvals[loan_id]:
                return  # covered by approve_on_chain; a signature adds nothing new here
            deadline = self.now + 3_600
            # the terms from the model, not read back from the chain: a term the contract stored
            # differently would make the signature recover to a stranger
            terms = ApprovalTerms(
                terms_hash=_ref(f"terms:{loan_id.hex()}"),
                currency=loan.currency,
                principal=loan.principal,
                total_due=loan.total_due,
                installment_count=loan.installment_count,
                installment_interval=loan.installment_interval,
                grace_period=loan.grace_period,
                max_late_fees=loan.max_late_fees,
                payout_ref=_ref(f"payout:{loan_id.hex()}"),
            )
            typed = approval_typed_data(
                chain_id=w3.eth.chain_id,
                committee=committee.address,
                loan_id=loan_id,
                terms=terms,
                epoch=board.functions.epoch().call(),
                deadline=deadline,
            )
            signature = sort_signatures([sign_approval(typed, signer_keys[signer_index])])

            def act():
                # signatures either complete the approval in this call or change nothing
                if len(self.approvals[loan_id]) + 1 < THRESHOLD:
                    raise LoanRuleViolation("committee: below threshold")
                self._approve_model(loan_id, signer_index)()

            self._expect(act, board.functions.approve_with_signatures(loan_id, deadline, signature), stranger)

        @rule(loan_id=loans)
        def cancel(self, loan_id):
            self.touched = loan_id
            self._expect(
                self.model[loan_id].cancel, book.functions.cancel_loan(loan_id, _ref("reason")), originator
            )

        @rule(loan_id=loans)
        def disburse(self, loan_id):
            self.touched = loan_id
            loan = self.model[loan_id]
            self._expect(
                lambda: loan.disburse(self.now),
                book.functions.record_disbursement(
                    loan_id, loan.principal, _ref(f"payout:{loan_id.hex()}"), _ref("rail")
                ),
                servicer,
            )

        @rule(
            target=payments,
            loan_id=loans,
            how=st.sampled_from(
                ["part", "part", "all", "over", "zero", "installment", "to_remainder", "to_remainder"]
            ),
            fraction=st.floats(min_value=0.01, max_value=1.0),
        )
        def repay(self, loan_id, how, fraction):
            self.touched = loan_id
            loan = self.model[loan_id]
            outstanding = loan.outstanding
            # "installment": the fees and the next installment exactly; "to_remainder": the fees
            # and everything but the last installment's remainder (the window where the cap on
            # the installment index matters)
            next_boundary = (loan.scheduled_repaid // loan.installment_base + 1) * loan.installment_base
            remainder_start = loan.installment_count * loan.installment_base
            amount = {
                "part": max(1, int(outstanding * fraction)),
                "all": outstanding,
                "over": outstanding + 1,
                "zero": 0,
                "installment": loan.unpaid_late_fees
                + max(1, min(next_boundary, loan.total_due) - loan.scheduled_repaid),
                "to_remainder": loan.unpaid_late_fees + max(1, remainder_start - loan.scheduled_repaid),
            }[how]
            payment_ref = self._next("paystack")
            recorded = self._expect(
                lambda: loan.repay(amount),
                book.functions.record_repayment(loan_id, amount, payment_ref),
                servicer,
            )
            if not recorded:
                return multiple()  # only recorded payments go to the bundle the reversal rules draw from
            self.payments_made[payment_ref] = (loan_id, amount)
            return payment_ref

        @rule(payment_ref=payments)
        def repay_with_used_ref(self, payment_ref):
            if payment_ref not in self.payments_made:
                return
            loan_id, _ = self.payments_made[payment_ref]
            self.touched = loan_id
            self._tick()
            expect_revert(
                book.functions.record_repayment(loan_id, 1, payment_ref),
                servicer,
                "loan_book: payment already recorded",
            )

        @rule(payment_ref=payments)
        def reverse(self, payment_ref):
            if payment_ref not in self.payments_made:
                return
            loan_id, amount = self.payments_made[payment_ref]
            self.touched = loan_id
            loan = self.model[loan_id]

            def act():
                if payment_ref in self.reversed:
                    raise LoanRuleViolation("loan_book: payment already reversed")
                if loan.scheduled_repaid and loan.late_fees_paid:
                    reached["reversal_with_fees_paid"] += 1  # where the reversal order matters
                loan.reverse(amount)
                self.reversed.add(payment_ref)

            self._expect(
                act, book.functions.reverse_repayment(loan_id, payment_ref, _ref("chargeback")), servicer
            )

        @rule(days=st.integers(min_value=0, max_value=60), seconds=st.integers(min_value=0, max_value=DAY))
        def advance_time(self, days, seconds):
            self.now += days * DAY + seconds

        @rule(loan_id=loans, amount=st.integers(min_value=0, max_value=10**9))
        def assess_late_fee(self, loan_id, amount):
            self.touched = loan_id
            fee_ref = self._next("late_fee")
            self._expect(
                lambda: self.model[loan_id].assess_late_fee(amount, self.now),
                book.functions.assess_late_fee(loan_id, amount, fee_ref),
                servicer,
            )

        @rule(loan_id=loans, days_late=st.integers(min_value=1, max_value=20), share=st.floats(0.01, 1.0))
        def fall_behind(self, loan_id, days_late, share):
            """Time runs past the oldest unpaid due date and grace, and a late fee within the cap is
            assessed: the fee-paying repayments and their reversals need loans in this state."""
            loan = self.model[loan_id]
            due = loan.oldest_unpaid_due_at() if loan.state == LoanState.ACTIVE else None
            room = loan.max_late_fees - loan.late_fees_assessed
            if due is None or room <= 0:
                return
            self.now = max(self.now, due + loan.grace_period + days_late * DAY)
            self.assess_late_fee(loan_id, max(1, int(room * share)))

        @rule(
            loan_id=loans,
            share=st.floats(0.01, 1.0),
            how=st.sampled_from(["installment", "to_remainder", "all"]),
        )
        def fees_then_chargeback(self, loan_id, share, how):
            """Issue 15's sequence, compounded so runs reach it: the loan falls behind and is
            charged a fee, a repayment pays it (fees first), then the loan's earliest payment still
            standing is charged back: the case where the reversal order decides what is owed."""
            self.fall_behind(loan_id, 3, share)
            self.repay(loan_id, how, share)
            standing = [
                ref
                for ref, (owner, _) in self.payments_made.items()
                if owner == loan_id and ref not in self.reversed
            ]
            if standing:
                self.reverse(standing[0])

        @rule(loan_id=loans)
        def mark_default(self, loan_id):
            self.touched = loan_id
            self._expect(
                lambda: self.model[loan_id].mark_default(self.now, DEFAULT_AFTER_DAYS),
                book.functions.mark_default(loan_id),
                servicer,
            )

        @rule(loan_id=loans)
        def write_off_by_committee(self, loan_id):
            self.touched = loan_id
            loan = self.model[loan_id]
            self._tick()
            send(
                board.functions.propose(WRITE_OFF, ZERO_ADDRESS, loan_id, 0, self.now + 7 * DAY),
                signers[0],
            )
            proposal_id = board.functions.proposal_count().call()
            self._tick()
            send(board.functions.confirm(proposal_id), signers[1])
            self._expect(loan.write_off, board.functions.execute(proposal_id), signers[2])

        @rule(
            loan_id=loans,
            action=st.sampled_from(
                ["create", "approve", "disburse", "repay", "fee", "default", "write_off", "pause"]
            ),
        )
        def stranger_is_refused(self, loan_id, action):
            """only_the_right_role_changes_anything: a stranger reverts, and nothing moves."""
            self.touched = loan_id
            before = book.functions.loans(loan_id).call()
            calls = {
                "create": lambda: book.functions.create_loan(
                    self._next("loan"), (_ref("b"), _ref("p"), 566, 1, 1, 1, 1, 0, 0, _ref("x"), _ref("y"))
                ),
                "approve": lambda: book.functions.approve_loan(loan_id),
                "disburse": lambda: book.functions.record_disbursement(loan_id, 1, _ref("x"), _ref("y")),
                "repay": lambda: book.functions.record_repayment(loan_id, 1, self._next("paystack")),
                "fee": lambda: book.functions.assess_late_fee(loan_id, 1, self._next("fee")),
                "default": lambda: book.functions.mark_default(loan_id),
                "write_off": lambda: book.functions.write_off(loan_id),
                "pause": lambda: book.functions.pause(),
            }
            self._tick()
            expect_revert(calls[action](), stranger, MISSING_ROLE)
            assert book.functions.loans(loan_id).call() == before

        # -- invariants -----------------------------------------------------------------

        @invariant()
        def state_transitions_legal(self):
            for loan_id, loan in self.model.items():
                previous = self.seen_states.get(loan_id, LoanState.NONE)
                if loan.state != previous:
                    assert (previous, loan.state) in LEGAL_TRANSITIONS, (previous, loan.state)
                    self.seen_states[loan_id] = loan.state

        @invariant()
        def books_match_model(self):
            loan_id = self.touched
            if loan_id is None:
                return
            loan = self.model[loan_id]
            onchain = book.functions.loans(loan_id).call()
            (
                state,
                ever_defaulted,
                _cur,
                principal,
                total_due,
                _n,
                _i,
                _g,
                _max,
                _p,
                _t,
                disbursed_at,
                scheduled_repaid,
                fees_assessed,
                fees_paid,
                repaid,
                outstanding,
            ) = onchain
            assert outstanding >= 0
            assert outstanding == total_due + fees_assessed - repaid
            assert (state, ever_defaulted, principal, total_due) == (
                loan.state,
                loan.ever_defaulted,
                loan.principal,
                loan.total_due,
            )
            assert (disbursed_at, scheduled_repaid, fees_assessed, fees_paid, outstanding) == (
                loan.disbursed_at,
                loan.scheduled_repaid,
                loan.late_fees_assessed,
                loan.late_fees_paid,
                loan.outstanding,
            )

        @invariant()
        def payment_refs_recorded_once(self):
            for payment_ref in list(self.payments_made)[-3:]:
                assert book.functions.is_payment_recorded(payment_ref).call()
                assert book.functions.is_payment_reversed(payment_ref).call() == (
                    payment_ref in self.reversed
                )

        @invariant()
        def nothing_approved_below_threshold(self):
            loan_id = self.touched
            if loan_id is None:
                return
            if self.model[loan_id].state == LoanState.PENDING:
                assert len(self.approvals[loan_id]) < THRESHOLD
                assert board.functions.approvals(loan_id).call() == len(self.approvals[loan_id])

        @invariant()
        def schedule_views_match_model(self):
            loan_id = self.touched
            if loan_id is None:
                return
            loan = self.model[loan_id]
            ats = [self.now, self.now + 3 * DAY + 17, self.now + 95 * DAY]
            due = (
                loan.oldest_unpaid_due_at() if loan.state in (LoanState.ACTIVE, LoanState.DEFAULTED) else None
            )
            if due is not None:
                # the boundaries where an off-by-one would hide: due date, end of grace, a day later
                grace_end = due + loan.grace_period
                ats += [due - 1, due, grace_end, grace_end + 1, grace_end + DAY, due + DAY - 1, due + DAY]
            # one JSON-RPC batch for all the views: this invariant runs after every step
            with w3.batch_requests() as batch:
                for at in ats:
                    batch.add(book.functions.amount_due(loan_id, at))
                    batch.add(book.functions.days_past_due(loan_id, at))
                batch.add(book.functions.next_due(loan_id))
                answers = batch.execute()
            for i, at in enumerate(ats):
                assert answers[2 * i] == loan.amount_due(at), ("amount_due", at)
                assert answers[2 * i + 1] == loan.days_past_due(at), ("days_past_due", at)
            next_due = list(answers[-1])
            if due is not None:
                assert next_due == [due, loan.scheduled_due_by(due) - loan.scheduled_repaid]
            if _in_remainder_window(loan):
                reached["remainder_window"] += 1
                last_due = loan.due_at(loan.installment_count)
                assert due == last_due
                assert next_due == [last_due, loan.total_due - loan.scheduled_repaid]

        @invariant()
        def owing_loan_falls_past_due(self):
            """A loan that owes anything has an unpaid installment: past due in time, defaultable."""
            loan_id = self.touched
            if loan_id is None:
                return
            loan = self.model[loan_id]
            if loan.unpaid_late_fees:
                assert loan.scheduled_repaid < loan.total_due, "unpaid fees on a fully paid schedule"
            if loan.state != LoanState.ACTIVE or loan.outstanding == 0:
                return
            last_due = loan.due_at(loan.installment_count)
            later = last_due + loan.grace_period + (DEFAULT_AFTER_DAYS + 1) * DAY
            assert loan.days_past_due(later) >= DEFAULT_AFTER_DAYS
            assert book.functions.days_past_due(loan_id, later).call() >= DEFAULT_AFTER_DAYS

        @invariant()
        def reversal_guard_names_the_loan(self):
            if not self.payments_made:
                return
            payment_ref, (loan_id, _) = next(reversed(self.payments_made.items()))
            if payment_ref in self.guard_checked:
                return  # each payment once: the guard reads only the record and the loans
            self.guard_checked.add(payment_ref)
            others = [*[other for other in self.model if other != loan_id][:2], _twin(loan_id)]
            for other in others:
                # a call, not a transaction: nothing is mined, the machine's clock stays put
                try:
                    book.functions.reverse_repayment(other, payment_ref, _ref("wrong loan")).call(
                        {"from": servicer.address}
                    )
                except ContractLogicError as error:
                    assert "loan_book: payment of another loan" in str(error), error
                else:
                    raise AssertionError("a payment was reversible against another loan")

    run_state_machine_as_test(Machine, settings=PROFILE)
    # the runs must have exercised the last installment's remainder window (the cap's case)
    assert reached["remainder_window"] > 0, "no run reached the last-installment remainder window"
    assert reached["reversal_with_fees_paid"] > 0, (
        "no run reversed a payment with fees and schedule both paid"
    )
    print(
        f"\n[stateful] last-installment remainder window reached in {reached['remainder_window']} checks; "
        f"{reached['reversal_with_fees_paid']} reversals with fees and schedule both paid"
    )
