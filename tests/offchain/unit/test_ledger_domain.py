"""Postings balance by construction; account codes parse back; reconciliation expectations."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.domain import ledger
from offchain.domain.ledger import (
    AccountKind,
    Leg,
    Posting,
    Side,
    UnbalancedPosting,
    credit,
    debit,
    expected_receivable,
    imbalance,
    parse_account,
    reversal_of,
)
from offchain.domain.loan_book import LoanState

ACCOUNTS = [
    ledger.loan_receivable("0x" + "ab" * 32),
    ledger.loan_unearned_income("5f0c2a3e-1b7d-4c55-9a8e-0d8f3e2b1a77"),
    ledger.borrower_credit("0x" + "cd" * 32),
    ledger.partner_funding("5f0c2a3e-1b7d-4c55-9a8e-0d8f3e2b1a77"),
    ledger.rail_clearing("paystack"),
    ledger.rail_clearing("sme"),
    ledger.SUSPENSE,
    ledger.FEE_INCOME,
    ledger.INTEREST_INCOME,
    ledger.CREDIT_LOSSES,
]
CURRENCIES = ["NGN", "USD"]
amounts = st.integers(min_value=1, max_value=10**12)


@st.composite
def balanced_legs(draw: st.DrawFn) -> list[Leg]:
    """Per currency, some debits and some credits split from the same total, shuffled."""
    legs: list[Leg] = []
    for currency in draw(st.lists(st.sampled_from(CURRENCIES), min_size=1, max_size=2, unique=True)):
        total = draw(st.integers(min_value=2, max_value=10**12))
        for side in Side:
            parts = draw(st.integers(min_value=1, max_value=min(4, total)))
            cuts = sorted(
                draw(st.lists(st.integers(1, total - 1), min_size=parts - 1, max_size=parts - 1, unique=True))
            )
            bounds = [0, *cuts, total]
            legs += [
                Leg(draw(st.sampled_from(ACCOUNTS)), side, hi - lo, currency)
                for lo, hi in itertools.pairwise(bounds)
            ]
    return draw(st.permutations(legs))


@given(balanced_legs())
def test_balanced_legs_are_accepted(legs: list[Leg]) -> None:
    posting = Posting("p", tuple(legs), "test")
    assert imbalance(posting.legs) == {}
    assert posting.same_legs(reversed(legs))


@given(balanced_legs(), st.data())
def test_any_amount_change_is_refused(legs: list[Leg], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(legs) - 1))
    delta = data.draw(st.integers(-legs[i].amount + 1, 10**6).filter(lambda d: d != 0))
    changed = [*legs]
    changed[i] = Leg(legs[i].account, legs[i].side, legs[i].amount + delta, legs[i].currency)
    with pytest.raises(UnbalancedPosting):
        Posting("p", tuple(changed), "test")


@given(balanced_legs(), st.data())
def test_flipping_one_side_or_currency_or_dropping_a_leg_is_refused(
    legs: list[Leg], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(legs) - 1))
    leg = legs[i]
    flipped = [*legs]
    flipped[i] = leg.reversed()
    other = "USD" if leg.currency == "NGN" else "NGN"
    moved = [*legs]
    moved[i] = Leg(leg.account, leg.side, leg.amount, other)
    dropped = legs[:i] + legs[i + 1 :]
    for bad in (flipped, moved, dropped):
        with pytest.raises(UnbalancedPosting):
            Posting("p", tuple(bad), "test")


@given(balanced_legs())
def test_reversal_swaps_every_side_and_still_balances(legs: list[Leg]) -> None:
    original = Posting("p", tuple(legs), "test", {"loan_id": "L1"})
    reversal = reversal_of(original, posting_id="p:reversal", description="chargeback")
    assert [leg.side for leg in reversal.legs] == [leg.side.opposite for leg in original.legs]
    assert [(leg.account, leg.amount) for leg in reversal.legs] == [(leg.account, leg.amount) for leg in legs]
    assert reversal.metadata == {"loan_id": "L1", "reverses": "p"}


@pytest.mark.parametrize(
    "legs",
    [
        (),
        (debit(ledger.SUSPENSE, 5, "NGN"),),
    ],
)
def test_fewer_than_two_legs_are_refused(legs: tuple[Leg, ...]) -> None:
    with pytest.raises(UnbalancedPosting, match="at least two legs"):
        Posting("p", legs, "test")


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, 2**63])
def test_leg_amounts_are_positive_ints(amount: object) -> None:
    with pytest.raises(UnbalancedPosting):
        debit(ledger.SUSPENSE, amount, "NGN")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "code", ["loan:x:payable", "loan::receivable", "rail:bank:clearing", "cash", "loan:a:b:c"]
)
def test_codes_outside_the_chart_are_refused(code: str) -> None:
    with pytest.raises(ValueError):
        parse_account(code)
    with pytest.raises(ValueError):
        credit(code, 1, "NGN")


def test_account_must_be_a_code() -> None:
    with pytest.raises(UnbalancedPosting):
        debit(None, 1, "NGN")  # type: ignore[arg-type]
    with pytest.raises(UnbalancedPosting):
        debit(ledger.SUSPENSE, 1, "ngn")


def test_codes_parse_back_with_their_normal_side() -> None:
    kinds = [parse_account(code).kind for code in ACCOUNTS]
    assert kinds == [
        AccountKind.LOAN_RECEIVABLE,
        AccountKind.LOAN_UNEARNED_INCOME,
        AccountKind.BORROWER_CREDIT,
        AccountKind.PARTNER_FUNDING,
        AccountKind.RAIL_CLEARING,
        AccountKind.RAIL_CLEARING,
        AccountKind.SUSPENSE,
        AccountKind.FEE_INCOME,
        AccountKind.INTEREST_INCOME,
        AccountKind.CREDIT_LOSSES,
    ]
    debit_normal = {code for code in ACCOUNTS if ledger.normal_side(code) is Side.DEBIT}
    assert debit_normal == {ACCOUNTS[0], ACCOUNTS[4], ACCOUNTS[5], ledger.CREDIT_LOSSES}
    assert parse_account(ACCOUNTS[0]).loan_id == "0x" + "ab" * 32
    assert parse_account(ACCOUNTS[3]).partner_id == "5f0c2a3e-1b7d-4c55-9a8e-0d8f3e2b1a77"


def test_subjects_cannot_smuggle_separators() -> None:
    with pytest.raises(ValueError):
        ledger.loan_receivable("a:b")
    with pytest.raises(ValueError):
        ledger.rail_clearing("bank")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (LoanState.PENDING, 0),
        (LoanState.APPROVED, 0),
        (LoanState.CANCELLED, 0),
        (LoanState.ACTIVE, 700),
        (LoanState.REPAID, 700),
        (LoanState.DEFAULTED, 700),
        (LoanState.WRITTEN_OFF, 0),
    ],
)
def test_expected_receivable_follows_the_chain_only_once_disbursed(state: LoanState, expected: int) -> None:
    assert expected_receivable(state, 700) == expected
