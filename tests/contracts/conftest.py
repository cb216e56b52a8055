"""Role-named fixtures for the contract tests (ape against Anvil)."""

from __future__ import annotations

import itertools

import pytest
from eth_utils import keccak

DAY = 86_400
WEEK = 7 * DAY
DEFAULT_AFTER_DAYS = 90
NGN = 566

STATE = {
    "NONE": 0,
    "PENDING": 1,
    "APPROVED": 2,
    "ACTIVE": 3,
    "REPAID": 4,
    "DEFAULTED": 5,
    "WRITTEN_OFF": 6,
    "CANCELLED": 7,
}


def role(name: str) -> bytes:
    return keccak(text=name)


def ref(text: str) -> bytes:
    """A payment/fee/rail reference as the backend derives it: keccak256(utf8 text)."""
    return keccak(text=text)


@pytest.fixture(scope="session")
def deployer(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def originator(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def servicer(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def approver(accounts):
    """An EOA holding APPROVER_ROLE (and UNPAUSER_ROLE), standing in for the committee in LoanBook
    tests that do not need it."""
    return accounts[3]


@pytest.fixture(scope="session")
def pauser(accounts):
    """An operations key: PAUSER_ROLE only (it may pause, never unpause)."""
    return accounts[4]


@pytest.fixture(scope="session")
def stranger(accounts):
    return accounts[5]


@pytest.fixture(scope="session")
def signers(accounts):
    """Three committee signers, sorted ascending by address."""
    return sorted([accounts[6], accounts[7], accounts[8]], key=lambda a: int(a.address, 16))


@pytest.fixture(scope="session")
def signer_keys(signers):
    """Private keys of the signers (ape test accounts expose them)."""
    return [s.private_key for s in signers]


@pytest.fixture(scope="module")
def loan_book(project, deployer, originator, servicer, approver, pauser):
    book = deployer.deploy(project.LoanBook, DEFAULT_AFTER_DAYS)
    book.grantRole(role("ORIGINATOR_ROLE"), originator, sender=deployer)
    book.grantRole(role("SERVICER_ROLE"), servicer, sender=deployer)
    book.grantRole(role("APPROVER_ROLE"), approver, sender=deployer)
    book.grantRole(role("PAUSER_ROLE"), pauser, sender=deployer)
    book.grantRole(role("UNPAUSER_ROLE"), approver, sender=deployer)
    return book


@pytest.fixture(scope="module")
def committee(project, loan_book, deployer, signers):
    """The committee wired as scripts/deploy.py wires it: 2-of-3, approver and admin of the book."""
    committee = deployer.deploy(project.DisbursementCommittee, loan_book, signers, 2)
    loan_book.grantRole(role("APPROVER_ROLE"), committee, sender=deployer)
    loan_book.grantRole(role("PAUSER_ROLE"), committee, sender=deployer)
    loan_book.grantRole(role("UNPAUSER_ROLE"), committee, sender=deployer)
    loan_book.grantRole(b"\x00" * 32, committee, sender=deployer)  # DEFAULT_ADMIN_ROLE
    loan_book.renounceRole(b"\x00" * 32, deployer, sender=deployer)
    return committee


_loan_ids = itertools.count(1)


def default_terms(**overrides):
    terms = {
        "borrower_ref": ref("borrower:1"),
        "partner_ref": ref("partner:1"),
        "currency": NGN,
        "principal": 100_000_00,
        "total_due": 112_000_00,
        "installment_count": 4,
        "installment_interval": 30 * DAY,
        "grace_period": 3 * DAY,
        "max_late_fees": 5_000_00,
        "payout_ref": ref("payout:bank_transfer:058:0123456789"),
        "terms_hash": ref("agreement:1"),
    }
    terms.update(overrides)
    return terms


@pytest.fixture
def create_loan(loan_book, originator):
    """Factory: create a PENDING loan with default terms (overridable); returns its id."""

    def _create(**overrides) -> bytes:
        loan_id = keccak(text=f"loan:{next(_loan_ids)}")
        loan_book.create_loan(loan_id, default_terms(**overrides), sender=originator)
        return loan_id

    return _create


@pytest.fixture
def active_loan(create_loan, loan_book, approver, servicer):
    """Factory: a loan taken through approval and disbursement; returns its id."""

    def _active(**overrides) -> bytes:
        loan_id = create_loan(**overrides)
        loan_book.approve_loan(loan_id, sender=approver)
        terms = default_terms(**overrides)
        loan_book.record_disbursement(
            loan_id,
            terms["principal"],
            terms["payout_ref"],
            ref(f"paystack:TRF_{loan_id.hex()[:8]}"),
            sender=servicer,
        )
        return loan_id

    return _active
