"""An accepted offer on a real LoanBook: the Terms encode in ABI order and the chain bills the schedule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from offchain.chain.deployment import deploy
from offchain.domain.approvals import ApprovalTerms
from offchain.domain.offers import (
    ChainTerms,
    Frequency,
    Method,
    PayoutAccount,
    PricingPolicy,
    build_agreement,
    price,
    to_chain_terms,
)
from offchain.platform.devkeys import anvil_accounts

DEPLOYER, BACKEND, SIGNER = anvil_accounts()[7:10]  # accounts other tests on this Anvil leave alone


@pytest.fixture(scope="module")
def loan_book(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Web3, Any, Any]]:
    out_dir: Path = tmp_path_factory.mktemp("deployments")
    deployment = deploy(
        rpc_url=anvil_url,
        deployer_key=DEPLOYER.private_key,
        signers=[SIGNER.address],
        threshold=1,
        backend_address=BACKEND.address,
        network="offers-test",
        out_dir=out_dir,
    )
    w3 = Web3(Web3.HTTPProvider(anvil_url, request_kwargs={"timeout": 30}))
    contracts = deployment["contracts"]
    book = w3.eth.contract(address=contracts["LoanBook"]["address"], abi=contracts["LoanBook"]["abi"])
    committee = w3.eth.contract(
        address=contracts["DisbursementCommittee"]["address"], abi=contracts["DisbursementCommittee"]["abi"]
    )
    yield w3, book, committee


def _transact(w3: Web3, call: Any, sender: str) -> Any:
    receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": sender}), timeout=30)
    assert receipt["status"] == 1
    return receipt


def _loan(book: Any, loan_id: bytes) -> dict[str, Any]:
    outputs = next(item for item in book.abi if item.get("name") == "loans")["outputs"][0]
    values = book.functions.loans(loan_id).call()
    return dict(zip((component["name"] for component in outputs["components"]), values, strict=True))


def test_terms_struct__field_order_matches_the_contract_abi(loan_book: tuple[Web3, Any, Any]) -> None:
    _, book, _ = loan_book
    create = next(item for item in book.abi if item.get("name") == "create_loan")
    terms_abi = next(arg for arg in create["inputs"] if arg["name"] == "terms")
    assert tuple(component["name"] for component in terms_abi["components"]) == ChainTerms._fields


@pytest.mark.parametrize(
    ("frequency", "method", "months"),
    [(Frequency.MONTHLY, Method.DECLINING_BALANCE, 6), (Frequency.WEEKLY, Method.FLAT, 3)],
)
def test_accepted_offer__chain_stores_the_terms_and_bills_the_offered_schedule(
    loan_book: tuple[Web3, Any, Any], frequency: Frequency, method: Method, months: int
) -> None:
    w3, book, committee = loan_book
    offer = price(
        PricingPolicy(),
        rating="C",
        principal=123_456_789,
        tenor_months=months,
        frequency=frequency,
        now=datetime.now(UTC),
        method=method,
    )
    loan_uuid = uuid.uuid4()
    agreement = build_agreement(
        loan_id=loan_uuid,
        offer_id=str(uuid.uuid4()),
        offer=offer,
        borrower_id="sme-user-1",
        partner_id="partner-1",
        ref_secret=b"integration-test-ref-secret-32by",
        payout=PayoutAccount.parse("bank_transfer", "011", "0000014579"),
        created_at=datetime.now(UTC),
    )
    terms = to_chain_terms(agreement)
    loan_id = agreement.chain_loan_id

    receipt = _transact(w3, book.functions.create_loan(loan_id, terms), BACKEND.address)
    (created,) = book.events.LoanCreated().process_receipt(receipt)
    assert created["args"]["loan_id"] == loan_id
    assert {name: created["args"][name] for name in ChainTerms._fields} == terms._asdict()
    stored = _loan(book, loan_id)
    for name in set(ChainTerms._fields) - {"borrower_ref", "partner_ref"}:  # refs live in the event
        assert stored[name] == getattr(terms, name), name

    _transact(w3, committee.functions.approve(loan_id), SIGNER.address)
    # what the committee's signers approve: every economic term, as the offer made it
    _, signed = ApprovalTerms.from_chain(book.functions.approval_terms(loan_id).call())
    assert (signed.principal, signed.payout_ref, signed.terms_hash) == (
        offer.principal,
        terms.payout_ref,
        agreement.terms_hash,
    )
    for name in ("currency", "total_due", "installment_count", "installment_interval", "grace_period"):
        assert getattr(signed, name) == getattr(terms, name), name
    assert signed.max_late_fees == terms.max_late_fees
    _transact(
        w3,
        book.functions.record_disbursement(loan_id, offer.principal, terms.payout_ref, b"\x01" * 32),
        BACKEND.address,
    )
    disbursed_at = _loan(book, loan_id)["disbursed_at"]
    assert disbursed_at > 0

    due_so_far = 0
    for item in offer.schedule.installments:
        due_at = disbursed_at + item.due_offset
        assert book.functions.amount_due(loan_id, due_at - 1).call() == due_so_far
        due_so_far += item.amount
        assert book.functions.amount_due(loan_id, due_at).call() == due_so_far, item.index
    assert due_so_far == book.functions.outstanding(loan_id).call() == offer.total_due
