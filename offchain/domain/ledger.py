"""Double-entry postings and the chart of accounts, as pure values (no I/O).

A `Posting` is one business event (a disbursement, a repayment, a late fee): two or more legs
whose debits equal their credits in every currency, checked when the value is built, so an
unbalanced posting cannot even be handed to the persistence layer (which checks it again, in the
database, at commit). `posting_id` is chosen by the caller and makes every write idempotent:
"repayment:paystack:T123" recorded twice is recorded once.

Account codes are strings a person can read in a statement and the database can index:

    loan:<loan_id>:receivable     asset      what the borrower owes (equals LoanBook.outstanding)
    loan:<loan_id>:unearned       liability  interest and fees agreed but not yet earned
    loan:<loan_id>:held           liability  money paid for the loan that is not applied to it:
                                             early money (before ACTIVE) or awaiting review
    borrower:<ref>:credit         liability  overpayments held for the borrower
    partner:<id>:funding          liability  the lender's capital that funds payouts
    rail:<rail>:clearing          asset      money in transit at a payment provider (what it settles)
    rail:<rail>:fees              expense    the provider's fees on money it collected for us
    rail:<rail>:fees_recovered    income     the part of those fees payers paid on top of their payment
    suspense:unmatched            liability  money received that no loan claims yet
    income:fees, income:interest  income
    expense:credit_losses         expense

Every account has a normal side; balances are reported signed by it, so a loan's receivable
and a partner's funding both read as positive numbers in ordinary operation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from offchain.domain.loan_book import LoanState


class Side(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"

    @property
    def opposite(self) -> Side:
        return Side.CREDIT if self is Side.DEBIT else Side.DEBIT


class PostingStatus(StrEnum):
    """A posting's life: pending (a hold) -> posted | voided; or posted at once."""

    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"


class UnbalancedPosting(ValueError):
    """Debits and credits differ in some currency, or a leg is malformed."""


class AccountKind(StrEnum):
    LOAN_RECEIVABLE = "loan_receivable"
    LOAN_UNEARNED_INCOME = "loan_unearned_income"
    LOAN_HELD = "loan_held"
    BORROWER_CREDIT = "borrower_credit"
    PARTNER_FUNDING = "partner_funding"
    RAIL_CLEARING = "rail_clearing"
    RAIL_FEES = "rail_fees"
    RAIL_FEES_RECOVERED = "rail_fees_recovered"
    SUSPENSE = "suspense"
    FEE_INCOME = "fee_income"
    INTEREST_INCOME = "interest_income"
    CREDIT_LOSSES = "credit_losses"

    @property
    def normal_side(self) -> Side:
        return Side.DEBIT if self in _DEBIT_NORMAL else Side.CREDIT


# assets and expenses grow by debits; liabilities and income by credits
_DEBIT_NORMAL = frozenset(
    {AccountKind.LOAN_RECEIVABLE, AccountKind.RAIL_CLEARING, AccountKind.RAIL_FEES, AccountKind.CREDIT_LOSSES}
)

RAILS = frozenset({"paystack", "sme"})
SUSPENSE = "suspense:unmatched"
FEE_INCOME = "income:fees"
INTEREST_INCOME = "income:interest"
CREDIT_LOSSES = "expense:credit_losses"
_FIXED = {
    SUSPENSE: AccountKind.SUSPENSE,
    FEE_INCOME: AccountKind.FEE_INCOME,
    INTEREST_INCOME: AccountKind.INTEREST_INCOME,
    CREDIT_LOSSES: AccountKind.CREDIT_LOSSES,
}
# A subject (loan id, borrower ref, partner id) is one segment: no ':' and no whitespace, so a
# code parses back unambiguously.
_SUBJECT = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_AMOUNT = 2**63 - 1  # the database column is BIGINT


def _subject(value: object, what: str) -> str:
    text = str(value)
    if not _SUBJECT.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not a valid account segment (letters, digits, _ . -)")
    return text


def loan_receivable(loan_id: object) -> str:
    return f"loan:{_subject(loan_id, 'loan id')}:receivable"


def loan_unearned_income(loan_id: object) -> str:
    return f"loan:{_subject(loan_id, 'loan id')}:unearned"


def loan_held(loan_id: object) -> str:
    return f"loan:{_subject(loan_id, 'loan id')}:held"


def borrower_credit(borrower_ref: object) -> str:
    return f"borrower:{_subject(borrower_ref, 'borrower ref')}:credit"


def partner_funding(partner_id: object) -> str:
    return f"partner:{_subject(partner_id, 'partner id')}:funding"


def rail_clearing(rail: str) -> str:
    if rail not in RAILS:
        raise ValueError(f"unknown rail {rail!r}; known: {', '.join(sorted(RAILS))}")
    return f"rail:{rail}:clearing"


def rail_fees(rail: str) -> str:
    rail_clearing(rail)  # the same check of the rail
    return f"rail:{rail}:fees"


def rail_fees_recovered(rail: str) -> str:
    rail_clearing(rail)
    return f"rail:{rail}:fees_recovered"


@dataclass(frozen=True, slots=True)
class AccountRef:
    """An account code parsed back: what it is and whose it is."""

    code: str
    kind: AccountKind
    subject: str | None = None  # loan id, borrower ref, partner id or rail

    @property
    def normal_side(self) -> Side:
        return self.kind.normal_side

    @property
    def loan_id(self) -> str | None:
        return (
            self.subject
            if self.kind
            in (AccountKind.LOAN_RECEIVABLE, AccountKind.LOAN_UNEARNED_INCOME, AccountKind.LOAN_HELD)
            else None
        )

    @property
    def partner_id(self) -> str | None:
        return self.subject if self.kind is AccountKind.PARTNER_FUNDING else None


_PATTERNS: dict[tuple[str, str], AccountKind] = {
    ("loan", "receivable"): AccountKind.LOAN_RECEIVABLE,
    ("loan", "unearned"): AccountKind.LOAN_UNEARNED_INCOME,
    ("loan", "held"): AccountKind.LOAN_HELD,
    ("borrower", "credit"): AccountKind.BORROWER_CREDIT,
    ("partner", "funding"): AccountKind.PARTNER_FUNDING,
    ("rail", "clearing"): AccountKind.RAIL_CLEARING,
    ("rail", "fees"): AccountKind.RAIL_FEES,
    ("rail", "fees_recovered"): AccountKind.RAIL_FEES_RECOVERED,
}


@lru_cache(maxsize=65_536)  # hot accounts recur in every posting; AccountRef is immutable
def parse_account(code: str) -> AccountRef:
    """The code's kind and subject; ValueError for anything outside the chart of accounts."""
    if code in _FIXED:
        return AccountRef(code, _FIXED[code])
    parts = code.split(":")
    kind = _PATTERNS.get((parts[0], parts[2])) if len(parts) == 3 else None
    if kind is None or not _SUBJECT.fullmatch(parts[1]):
        raise ValueError(f"{code!r} is not an account of the chart of accounts")
    rail_kinds = (AccountKind.RAIL_CLEARING, AccountKind.RAIL_FEES, AccountKind.RAIL_FEES_RECOVERED)
    if kind in rail_kinds and parts[1] not in RAILS:
        raise ValueError(f"unknown rail in {code!r}")
    return AccountRef(code, kind, parts[1])


def account_kind(code: str) -> AccountKind:
    return parse_account(code).kind


def normal_side(code: str) -> Side:
    return account_kind(code).normal_side


@dataclass(frozen=True, slots=True)
class Leg:
    account: str
    side: Side
    amount: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass: True kobo is a bug, not an amount
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise UnbalancedPosting(f"leg amount must be an int of minor units, got {self.amount!r}")
        if not 0 < self.amount <= MAX_AMOUNT:
            raise UnbalancedPosting(f"leg amount must be > 0 (and fit 64 bits), got {self.amount}")
        if not isinstance(self.currency, str) or not _CURRENCY.fullmatch(self.currency):
            raise UnbalancedPosting(f"currency must be an ISO 4217 alpha code, got {self.currency!r}")
        object.__setattr__(self, "side", Side(self.side))
        if not isinstance(self.account, str):
            raise UnbalancedPosting(f"account must be an account code, got {self.account!r}")
        parse_account(self.account)  # refuse codes outside the chart before they reach a table

    def reversed(self) -> Leg:
        return Leg(self.account, self.side.opposite, self.amount, self.currency)


def debit(account: str, amount: int, currency: str) -> Leg:
    return Leg(account, Side.DEBIT, amount, currency)


def credit(account: str, amount: int, currency: str) -> Leg:
    return Leg(account, Side.CREDIT, amount, currency)


def imbalance(legs: Iterable[Leg]) -> dict[str, int]:
    """Debits minus credits per currency, only where they differ."""
    net: dict[str, int] = defaultdict(int)
    for leg in legs:
        net[leg.currency] += leg.amount if leg.side is Side.DEBIT else -leg.amount
    return {currency: value for currency, value in net.items() if value}


@dataclass(frozen=True)
class Posting:
    posting_id: str
    legs: tuple[Leg, ...]
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.posting_id, str) or not 0 < len(self.posting_id) <= 200:
            raise ValueError("posting_id must be a non-empty string of at most 200 characters")
        legs = tuple(self.legs)
        object.__setattr__(self, "legs", legs)
        if len(legs) < 2:
            raise UnbalancedPosting(f"posting {self.posting_id} needs at least two legs, got {len(legs)}")
        if not all(isinstance(leg, Leg) for leg in legs):
            raise UnbalancedPosting("every leg must be a Leg")
        off = imbalance(legs)
        if off:
            raise UnbalancedPosting(f"posting {self.posting_id} does not balance: debits - credits = {off}")
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @property
    def currencies(self) -> frozenset[str]:
        return frozenset(leg.currency for leg in self.legs)

    def same_legs(self, legs: Iterable[Leg]) -> bool:
        """Same legs in any order: what makes a replay of this posting a replay."""
        return sorted(_leg_key(leg) for leg in self.legs) == sorted(_leg_key(leg) for leg in legs)


def _leg_key(leg: Leg) -> tuple[str, str, str, int]:
    return (leg.account, leg.currency, leg.side.value, leg.amount)


def reversal_of(posting: Posting, *, posting_id: str, description: str) -> Posting:
    """The correcting posting: every leg on the other side (entries are never edited)."""
    return Posting(
        posting_id=posting_id,
        legs=tuple(leg.reversed() for leg in posting.legs),
        description=description,
        metadata={**posting.metadata, "reverses": posting.posting_id},
    )


def signed(side: Side, debits: int, credits: int) -> int:
    """A balance from its debit and credit totals, positive when on the account's normal side."""
    return debits - credits if side is Side.DEBIT else credits - debits


# --- reconciliation rules (what the ledger must say about a loan the chain knows) ----------

# Before disbursement nothing is owed off chain, though LoanBook.outstanding already reads
# total_due; after a write-off the loss is booked and the receivable cleared, while the chain
# keeps the unpaid figure.
_RECEIVABLE_FOLLOWS_CHAIN = frozenset({LoanState.ACTIVE, LoanState.REPAID, LoanState.DEFAULTED})


def expected_receivable(state: int, chain_outstanding: int) -> int:
    """What `loan_receivable(loan).posted` must equal for a loan in `state` on chain."""
    return chain_outstanding if LoanState(state) in _RECEIVABLE_FOLLOWS_CHAIN else 0


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement found by reconciliation; other checks (rails) append their own kinds."""

    kind: str  # e.g. "ledger_vs_chain", "projection_vs_chain"
    subject: str  # what disagrees, e.g. the chain loan id
    expected: int | str | None  # the figure of the book of record
    actual: int | str | None  # the figure that disagrees with it
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "expected": self.expected,
            "actual": self.actual,
            "detail": self.detail,
        }
