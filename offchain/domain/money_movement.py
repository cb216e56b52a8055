"""Money movement rules: references, matching, allocation and the ledger postings of a loan's cash.

Pure: no I/O. The services (disbursement 8003, repayment 8004) feed it facts already verified
with the provider and persist what it decides.

Chart of postings (accounts from offchain.domain.ledger):
- payout (a hold until the rail confirms): Dr loan receivable total_due, Cr partner funding principal,
  Cr loan unearned (total_due - principal). After it the receivable equals the chain's outstanding.
- repayment (a hold until the chain records it): Dr rail clearing amount, Cr loan receivable applied,
  Cr borrower credit excess (an overpayment is kept for the borrower, never recorded on chain).
- unmatched money: Dr rail clearing, Cr suspense; matched by hand later: Dr suspense, Cr receivable...
- money for a loan that is not repayable (early money before ACTIVE, or a closed loan's money
  awaiting an operator): Dr rail clearing, Cr loan held; applied once the loan is ACTIVE, as a
  repayment whose source is the held account: Dr loan held, Cr receivable (+ Cr borrower credit).
- earned interest when the chain records the scheduled part: Dr unearned, Cr interest income.
- late fee assessed on chain: Dr receivable, Cr fee income.
- write-off on chain: Dr unearned (what is left), Dr credit losses (the rest), Cr receivable.
- the rail's fee on a charge (posted at intake, whatever becomes of the money): Dr rail fees
  (the fee), Cr rail fees recovered (what the payer paid on top of the repayment), and the
  difference against the rail's clearing account, so that clearing always holds what the rail
  settles (`amount - fees`). See `paystack_charge_figures`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from eth_utils import keccak

from offchain.domain import ledger
from offchain.domain.ledger import Posting, credit, debit

PAYSTACK = "paystack"
SME = "sme"
RAILS = (PAYSTACK, SME)


# --- references ------------------------------------------------------------------------------


def payment_ref(provider: str, reference: str) -> bytes:
    """DESIGN: payment_ref = keccak256("<provider>:<provider reference>") -- what LoanBook stores."""
    if provider not in RAILS:
        raise ValueError(f"unknown payment provider {provider!r}")
    if not reference:
        raise ValueError("a payment needs its provider's reference")
    return keccak(f"{provider}:{reference}".encode())


def payout_reference(loan_id: uuid.UUID) -> str:
    """The one transfer reference of a loan's payout, derived from the loan.

    Paystack keeps a reference unique per integration, so every retry of this loan's payout
    carries the same one: a repeat of an in-flight transfer can never become a second payout.
    Lowercase letters, digits and '-' only, as Paystack requires.
    """
    return f"caas-po-{loan_id.hex}"


def rail_ref(rail: str, reference: str) -> bytes:
    """What `record_disbursement` stores for the rail's transfer: keccak256("<rail>:<reference>")."""
    return payment_ref(rail, reference)


def keccak_reason(reason: str) -> bytes:
    """A reason code for the chain (reverse_repayment, cancel_loan): keccak256 of its text."""
    return keccak(reason.encode())


def repayment_reference(loan_id: uuid.UUID, sequence: int) -> str:
    """A payment reference the backend issues to a borrower (third way to match a charge)."""
    return f"caas-rp-{loan_id.hex[:20]}-{sequence}"


# --- matching -----------------------------------------------------------------------------------


class MatchMethod(StrEnum):
    METADATA = "metadata"
    VIRTUAL_ACCOUNT = "virtual_account"
    REFERENCE = "reference"
    MANUAL = "manual"


@dataclass(frozen=True)
class IncomingPayment:
    """A payment as its provider confirmed it (after verify), with what can identify its loan.

    `amount` is the borrower's repayment: what is credited to the loan (or kept for them). The
    provider's fee on the charge and the part of it the payer paid on top are apart from it.
    """

    provider: str
    reference: str
    amount: int
    currency: str
    metadata_loan_id: str | None = None
    receiver_account: str | None = None
    provider_fee: int = 0
    payer_fee: int = 0


@dataclass(frozen=True)
class ChargeFigures:
    """The money of one Paystack charge, from its verify answer."""

    charged: int  # `amount`: what the payer was charged
    repayment: int  # the borrower's repayment: credited to the loan
    provider_fee: int  # `fees`: what Paystack keeps out of `charged`
    payer_fee: int  # charged - repayment: what the payer paid on top of the repayment

    @property
    def settled(self) -> int:
        """What Paystack settles to us for the charge."""
        return self.charged - self.provider_fee


def paystack_charge_figures(amount: int, requested_amount: int | None, fees: int | None) -> ChargeFigures:
    """Which of a Paystack charge's figures is the borrower's repayment.

    Paystack's verify answer carries `amount` (what the payer was charged), `requested_amount`
    (what the integration asked for) and `fees` (Paystack's fee, kept out of the settlement).
    When the payer bears the fees, `amount` is the request plus the fees -- Paystack's own sample
    (paystack.com/docs/payments/verify-payments): amount 40333 = requested_amount 30050 + fees
    10283 -- and the borrower repaid 30050: crediting 40333 would credit the loan with
    Paystack's fee. When the merchant bears them, `amount == requested_amount`: the borrower
    repaid all of it and the fee is our cost. So the repayment is `requested_amount`, bounded
    by `amount` (a partial debit charges less than requested: the repayment is what was
    charged); without a usable `requested_amount` it is `amount`. A missing or unreadable fee
    is 0 (some events carry `"fees": null`).
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError("a charge amount must be a positive integer of minor units")
    requested = requested_amount if _minor(requested_amount) and requested_amount else None
    repayment = min(requested, amount) if requested else amount
    fee = fees if _minor(fees) and fees is not None else 0
    return ChargeFigures(charged=amount, repayment=repayment, provider_fee=fee, payer_fee=amount - repayment)


def _minor(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Match:
    loan_id: uuid.UUID
    method: MatchMethod


def parse_loan_id(value: str | None, chain_ids: dict[str, uuid.UUID] | None = None) -> uuid.UUID | None:
    """A loan id as a partner or a borrower may write it: the loan's UUID or its 0x chain id."""
    if not value:
        return None
    text = value.strip()
    if text.lower().startswith("0x") and chain_ids is not None:
        return chain_ids.get(text.lower())
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def match(
    payment: IncomingPayment,
    *,
    metadata_loan: uuid.UUID | None,
    account_loan: uuid.UUID | None,
    reference_loan: uuid.UUID | None,
) -> Match | None:
    """DESIGN order: data.metadata.loan_id, then the virtual account paid into, then an issued reference.

    The caller resolves each key to a known loan (or None); the first that resolves wins.
    """
    if metadata_loan is not None:
        return Match(metadata_loan, MatchMethod.METADATA)
    if account_loan is not None:
        return Match(account_loan, MatchMethod.VIRTUAL_ACCOUNT)
    if reference_loan is not None:
        return Match(reference_loan, MatchMethod.REFERENCE)
    return None


# --- where money goes by the loan's state ----------------------------------------------------------


class Disposition(StrEnum):
    APPLY = "apply"  # repayable: recorded on chain now
    HOLD = "hold"  # not repayable yet: held, applied when the loan becomes ACTIVE
    REVIEW = "review"  # never repayable again (repaid, cancelled): an operator decides


# LoanBook states (DESIGN §3): 0 NONE (not created on chain yet), 1 PENDING, 2 APPROVED,
# 3 ACTIVE, 4 REPAID, 5 DEFAULTED, 6 WRITTEN_OFF, 7 CANCELLED
# WRITTEN_OFF takes recoveries (LoanBook records them; the loan stays WRITTEN_OFF)
_REPAYABLE = frozenset({3, 5, 6})
_NOT_YET_REPAYABLE = frozenset({0, 1, 2})


def disposition(chain_state: int) -> Disposition:
    """What money paid for a loan in `chain_state` does (record_repayment accepts ACTIVE,
    DEFAULTED and, as a recovery, WRITTEN_OFF). A loan that may still become ACTIVE keeps the
    money for it; one that never will take money again (REPAID, CANCELLED) hands it to an
    operator: refund or another loan."""
    if chain_state in _REPAYABLE:
        return Disposition.APPLY
    if chain_state in _NOT_YET_REPAYABLE:
        return Disposition.HOLD
    return Disposition.REVIEW


def held_posting(
    *, posting_id: str, loan_id: uuid.UUID, amount: int, currency: str, reference: str, source: str
) -> Posting:
    """Money kept for the loan, not applied to it: Dr `source` (rail clearing, or suspense when
    matched by hand), Cr the loan's held account."""
    return Posting(
        posting_id=posting_id,
        legs=(debit(source, amount, currency), credit(ledger.loan_held(str(loan_id)), amount, currency)),
        description=f"payment {reference} held for loan {loan_id}",
        metadata={"loan_id": str(loan_id), "reference": reference, "kind": "held"},
    )


# --- allocation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    applied: int  # recorded on chain against the loan
    excess: int  # kept as the borrower's credit

    def __post_init__(self) -> None:
        if self.applied < 0 or self.excess < 0:
            raise ValueError("allocation parts cannot be negative")


def allocate(amount: int, outstanding: int) -> Allocation:
    """Apply at most what the loan still owes; the rest is the borrower's credit.

    `outstanding` must already net out repayments still on their way to the chain, so two
    payments in flight can never both be applied to the same naira.
    """
    if amount <= 0:
        raise ValueError("a payment amount must be positive")
    applied = max(0, min(amount, outstanding))
    return Allocation(applied=applied, excess=amount - applied)


def earned_interest(
    *, scheduled_part: int, principal: int, total_due: int, unearned_left: int, closes: bool
) -> int:
    """Interest earned by a repayment's scheduled part: pro rata to the loan's finance charge.

    Rounded down, and the last repayment earns whatever is left, so a repaid loan's unearned
    account ends at exactly zero.
    """
    if closes:
        return unearned_left
    if total_due <= 0:
        return 0
    return min(unearned_left, scheduled_part * (total_due - principal) // total_due)


# --- postings -----------------------------------------------------------------------------------


def payout_posting(
    *,
    posting_id: str,
    loan_id: uuid.UUID,
    partner_id: uuid.UUID,
    principal: int,
    total_due: int,
    currency: str,
) -> Posting:
    legs = [
        debit(ledger.loan_receivable(str(loan_id)), total_due, currency),
        credit(ledger.partner_funding(str(partner_id)), principal, currency),
    ]
    if total_due > principal:
        legs.append(credit(ledger.loan_unearned_income(str(loan_id)), total_due - principal, currency))
    return Posting(
        posting_id=posting_id,
        legs=tuple(legs),
        description=f"payout of loan {loan_id}",
        metadata={"loan_id": str(loan_id), "partner_id": str(partner_id), "kind": "payout"},
    )


def repayment_posting(
    *,
    posting_id: str,
    rail: str,
    loan_id: uuid.UUID | None,
    borrower: str | None,
    amount: int,
    allocation: Allocation | None,
    currency: str,
    reference: str,
    source: str | None = None,
) -> Posting:
    """Money in: to the loan (and the borrower's credit), or to suspense when `allocation` is None.

    `source` is the account the money comes from: the rail's clearing account by default, the
    suspense account when an operator matches suspended money by hand.
    """
    source_account = source or ledger.rail_clearing(rail)
    legs = [debit(source_account, amount, currency)]
    if allocation is None:
        legs.append(credit(ledger.SUSPENSE, amount, currency))
    else:
        if allocation.applied + allocation.excess != amount:
            raise ValueError("allocation does not add up to the amount")
        if allocation.applied:
            if loan_id is None:
                raise ValueError("an applied repayment needs its loan")
            legs.append(credit(ledger.loan_receivable(str(loan_id)), allocation.applied, currency))
        if allocation.excess:
            if borrower is None:
                raise ValueError("an overpayment needs its borrower")
            legs.append(credit(ledger.borrower_credit(borrower), allocation.excess, currency))
    return Posting(
        posting_id=posting_id,
        legs=tuple(legs),
        description=f"{rail} payment {reference}",
        metadata={"loan_id": str(loan_id) if loan_id else None, "reference": reference, "kind": "repayment"},
    )


def interest_posting(*, posting_id: str, loan_id: uuid.UUID, amount: int, currency: str) -> Posting:
    return Posting(
        posting_id=posting_id,
        legs=(
            debit(ledger.loan_unearned_income(str(loan_id)), amount, currency),
            credit(ledger.INTEREST_INCOME, amount, currency),
        ),
        description=f"interest earned on loan {loan_id}",
        metadata={"loan_id": str(loan_id), "kind": "interest"},
    )


def late_fee_posting(*, posting_id: str, loan_id: uuid.UUID, amount: int, currency: str) -> Posting:
    return Posting(
        posting_id=posting_id,
        legs=(
            debit(ledger.loan_receivable(str(loan_id)), amount, currency),
            credit(ledger.FEE_INCOME, amount, currency),
        ),
        description=f"late fee on loan {loan_id}",
        metadata={"loan_id": str(loan_id), "kind": "late_fee"},
    )


def write_off_posting(
    *, posting_id: str, loan_id: uuid.UUID, receivable: int, unearned: int, currency: str
) -> Posting | None:
    """Clear the receivable: the unearned part was never income, the rest is a credit loss."""
    if receivable <= 0:
        return None
    unearned = min(unearned, receivable)
    legs = [credit(ledger.loan_receivable(str(loan_id)), receivable, currency)]
    if unearned:
        legs.append(debit(ledger.loan_unearned_income(str(loan_id)), unearned, currency))
    if receivable - unearned:
        legs.append(debit(ledger.CREDIT_LOSSES, receivable - unearned, currency))
    return Posting(
        posting_id=posting_id,
        legs=tuple(legs),
        description=f"write-off of loan {loan_id}",
        metadata={"loan_id": str(loan_id), "kind": "write_off"},
    )


def rail_fee_posting(
    *, posting_id: str, rail: str, provider_fee: int, payer_fee: int, currency: str, reference: str
) -> Posting | None:
    """The rail's fee on a charge: Dr fees, Cr fees recovered (the payer's part), and the
    difference against clearing -- clearing then holds exactly what the rail settles. None when
    there is neither a fee nor a payer's part."""
    legs = []
    if provider_fee:
        legs.append(debit(ledger.rail_fees(rail), provider_fee, currency))
    if payer_fee:
        legs.append(credit(ledger.rail_fees_recovered(rail), payer_fee, currency))
    if provider_fee > payer_fee:
        # the rail keeps more than the payer added: it comes out of what the rail settles
        legs.append(credit(ledger.rail_clearing(rail), provider_fee - payer_fee, currency))
    elif payer_fee > provider_fee:
        legs.append(debit(ledger.rail_clearing(rail), payer_fee - provider_fee, currency))
    if not legs:
        return None
    return Posting(
        posting_id=posting_id,
        legs=tuple(legs),
        description=f"{rail} fee on payment {reference}",
        metadata={"reference": reference, "kind": "rail_fee"},
    )
