"""The agreement document: canonical bytes, terms_hash, references, NUBANs, LoanBook Terms."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.domain.money import Money
from offchain.domain.offers import (
    Agreement,
    AgreementError,
    Collateral,
    Frequency,
    OfferTerms,
    PayoutAccount,
    PayoutMethod,
    PricingPolicy,
    RatePlan,
    borrower_ref,
    build_agreement,
    canonical_json,
    chain_loan_id,
    is_valid_nuban,
    nuban_check_digit,
    partner_ref,
    price,
    terms_hash_of,
    to_chain_terms,
)

SECRET = b"test-ref-secret-0123456789abcdef"
LOAN_ID = uuid.UUID("0b1e6f5c-3f7a-4d2e-9c1b-6a8e2f4d7c90")
OFFER_ID = "7f0c2a9e-0d4b-4b7e-8a51-2e3c9d1f6b42"
CREATED_AT = datetime(2025, 3, 1, 9, 45, 12, tzinfo=UTC)
# Pinned here, not taken from the defaults, so the golden hash below depends on the format only.
POLICY = PricingPolicy(
    version="test-1",
    plans={"B": RatePlan(3_000, 150, 100_000, 25_000_000, 5_000_000, 2_000_000_000, 18)},
    late_fee_cap_bps=1_000,
    late_fee_cap_max=50_000_000,
    grace_days=3,
)


def make_offer(principal: int = 100_000_000, months: int = 6) -> OfferTerms:
    return price(
        POLICY,
        rating="B",
        principal=principal,
        tenor_months=months,
        frequency=Frequency.MONTHLY,
        now=datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
    )


def make_agreement(**overrides: Any) -> Agreement:
    args: dict[str, Any] = {
        "loan_id": LOAN_ID,
        "offer_id": OFFER_ID,
        "offer": make_offer(),
        "borrower_id": "sme-user-42",
        "partner_id": "partner-acme",
        "ref_secret": SECRET,
        "payout": PayoutAccount.parse("bank_transfer", "011", "0000014579"),
        "created_at": CREATED_AT,
    } | overrides
    return build_agreement(**args)


def reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(item) for item in value]
    return value


# -- canonical JSON -----------------------------------------------------------------------------------


def test_canonical_json__sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "x\n", "₦"], "c": {"z": 0, "y": -5}}) == (
        '{"a":[true,null,"x\\n","₦"],"b":1,"c":{"y":-5,"z":0}}'.encode()
    )


def test_canonical_json__keys_sorted_by_utf16_code_units_as_rfc8785() -> None:
    # RFC 8785 §3.2.3's sorting example: by code point "\ufb33" would precede the emoji
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    encoded = canonical_json(dict.fromkeys(keys, 0)).decode()
    assert [key for key in json.loads(encoded)] == [
        "\r",
        "1",
        "\u0080",
        "\u00f6",
        "\u20ac",
        "\U0001f600",
        "\ufb33",
    ]


def test_canonical_json__escapes_as_ecmascript() -> None:
    assert canonical_json('\u001f\u007f"\\\b\f\t') == b'"\\u001f\x7f\\"\\\\\\b\\f\\t"'


@pytest.mark.parametrize(
    "value", [1.0, {"amount": 0.1}, 2**53, -(2**53), {1: "non-string key"}, b"bytes", "\ud800"]
)
def test_canonical_json__refuses_what_jcs_cannot_carry_exactly(value: Any) -> None:
    with pytest.raises(AgreementError):
        canonical_json(value)


# -- agreement and terms_hash ------------------------------------------------------------------------


def test_agreement__same_inputs_same_bytes_and_hash() -> None:
    first, second = make_agreement(), make_agreement()
    assert first.canonical_bytes() == second.canonical_bytes()
    assert first.terms_hash == second.terms_hash == keccak(first.canonical_bytes())


def test_agreement__key_order_is_irrelevant() -> None:
    agreement = make_agreement()
    document = agreement.document()
    shuffled = reversed_keys(document)
    assert list(shuffled) != list(document)
    assert terms_hash_of(shuffled) == agreement.terms_hash
    # and a parsed copy (as it comes back from a JSONB column) hashes the same
    assert terms_hash_of(json.loads(json.dumps(shuffled))) == agreement.terms_hash


def test_agreement__bytes_agree_with_an_independent_serialiser() -> None:
    # all keys are ASCII, so code-point order (the stdlib's) and UTF-16 order (JCS's) coincide
    document = make_agreement(collateral=Collateral("equipment", "Ọ̀gbẹ́ni's oven", Money(1, "NGN"))).document()
    expected = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_json(document) == expected


def test_agreement__golden_terms_hash() -> None:
    # If this changes, agreements already on chain can no longer be re-derived: bump SCHEMA instead.
    assert make_agreement().terms_hash.hex() == (
        "7fc099518959d7804f0d3f345cd8391dde4beaa3e0c491ce7a777cc8d00cb1df"
    )


@pytest.mark.parametrize(
    "override",
    [
        {"payout": PayoutAccount.parse("bank_transfer", "011", "0000000220")},
        {"created_at": CREATED_AT + timedelta(seconds=1)},
        {"offer": make_offer(principal=100_100_000)},
        {"borrower_id": "sme-user-43"},
        {"collateral": Collateral("equipment", "oven", Money(50_000_000, "NGN"))},
    ],
)
def test_agreement__any_term_changes_the_hash(override: dict[str, Any]) -> None:
    assert make_agreement(**override).terms_hash != make_agreement().terms_hash


def test_agreement__document_carries_the_terms() -> None:
    agreement = make_agreement(collateral=Collateral("guarantor", "director's guarantee"))
    document = agreement.document()
    offer = agreement.offer
    assert document["schema"] == "caas.loan-agreement/1"
    assert document["loan_id"] == str(LOAN_ID)
    assert document["chain_loan_id"] == "0x" + keccak(LOAN_ID.bytes).hex()
    assert document["currency"] == "NGN" and document["currency_code"] == 566
    assert document["principal"] == {"value": 100_000_000, "currency": "NGN"}
    assert document["total_due"]["value"] == offer.total_due
    assert document["fees"]["origination"]["value"] == 1_500_000
    assert document["apr_bps"] == 3_000 and document["ear_bps"] == offer.schedule.ear_bps
    assert [row["amount"]["value"] for row in document["schedule"]] == offer.schedule.amounts
    assert [row["due_offset"] for row in document["schedule"]] == [k * 2_592_000 for k in range(1, 7)]
    assert document["grace_period"] == 3 * 86_400
    assert document["max_late_fees"]["value"] == 10_000_000
    assert document["payout"] == {
        "method": "bank_transfer",
        "bank_code": "011",
        "account_number": "0000014579",
        "ref": "0x" + keccak(b"bank_transfer:011:0000014579").hex(),
    }
    assert document["collateral"] == {
        "kind": "guarantor",
        "description": "director's guarantee",
        "value": None,
    }
    assert document["created_at"] == "2025-03-01T09:45:12Z"


def test_agreement__created_at_normalised_to_utc_seconds() -> None:
    lagos = timezone(timedelta(hours=1))
    local = make_agreement(created_at=datetime(2025, 3, 1, 10, 45, 12, 999_999, tzinfo=lagos))
    assert local.terms_hash == make_agreement().terms_hash
    with pytest.raises(AgreementError, match="timezone-aware"):
        make_agreement(created_at=datetime(2025, 3, 1))


def test_to_chain_terms__abi_order_and_values() -> None:
    agreement = make_agreement()
    terms = to_chain_terms(agreement)
    assert terms._fields == (
        "borrower_ref",
        "partner_ref",
        "currency",
        "principal",
        "total_due",
        "installment_count",
        "installment_interval",
        "grace_period",
        "max_late_fees",
        "payout_ref",
        "terms_hash",
    )
    offer = agreement.offer
    assert tuple(terms) == (
        hmac.new(SECRET, b"borrower:sme-user-42", hashlib.sha256).digest(),
        hmac.new(SECRET, b"partner:partner-acme", hashlib.sha256).digest(),
        566,
        100_000_000,
        offer.total_due,
        6,
        30 * 86_400,
        3 * 86_400,
        10_000_000,
        keccak(b"bank_transfer:011:0000014579"),
        agreement.terms_hash,
    )


# -- references ---------------------------------------------------------------------------------------


def test_keyed_refs__hmac_sha256_per_namespace() -> None:
    assert borrower_ref(SECRET, "u1") == hmac.new(SECRET, b"borrower:u1", hashlib.sha256).digest()
    assert borrower_ref(SECRET.decode(), "u1") == borrower_ref(SECRET, "u1")
    assert borrower_ref(SECRET, "u1") != partner_ref(SECRET, "u1")
    assert borrower_ref(SECRET, "u1") != borrower_ref(SECRET + b"x", "u1")
    assert len(partner_ref(SECRET, "p1")) == 32
    with pytest.raises(AgreementError, match="at least 16 bytes"):
        borrower_ref(b"short", "u1")
    with pytest.raises(AgreementError, match="empty"):
        borrower_ref(SECRET, "")


def test_chain_loan_id__keccak_of_the_uuid_bytes() -> None:
    assert chain_loan_id(LOAN_ID) == keccak(LOAN_ID.bytes)
    assert len(chain_loan_id(uuid.uuid4())) == 32


# -- NUBAN and payout accounts ------------------------------------------------------------------------


def reference_check_digit(bank_code: str, serial: str) -> int:
    """The CBN algorithm written out independently: 2010 scheme for 3-digit codes, 2020 revision else."""
    if len(bank_code) == 3:
        digits, weights = bank_code + serial, [3, 7, 3, 3, 7, 3, 3, 7, 3, 3, 7, 3]
    else:
        institution = bank_code if len(bank_code) == 6 else "9" + bank_code
        digits, weights = institution + serial, [3, 7, 3] * 5
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 10
    return 0 if remainder == 0 else 10 - remainder


def test_nuban__cbn_worked_examples() -> None:
    # CBN NUBAN proposals v0.4: First Bank (011) serials 000001457 and 000000022
    assert nuban_check_digit("011", "000001457") == 9
    assert nuban_check_digit("011", "000000022") == 0
    assert is_valid_nuban("011", "0000014579")
    assert not is_valid_nuban("011", "0000014578")


@settings(max_examples=300, deadline=None)
@given(
    bank_code=st.from_regex(r"\A([0-9]{3}|[0-9]{5}|[0-9]{6})\Z"),
    serial=st.from_regex(r"\A[0-9]{9}\Z"),
    position=st.integers(min_value=0, max_value=9),
    delta=st.integers(min_value=1, max_value=9),
)
def test_nuban__derived_numbers_validate_and_any_single_digit_error_is_caught(
    bank_code: str, serial: str, position: int, delta: int
) -> None:
    account = serial + str(reference_check_digit(bank_code, serial))
    assert is_valid_nuban(bank_code, account)
    typo = account[:position] + str((int(account[position]) + delta) % 10) + account[position + 1 :]
    assert not is_valid_nuban(bank_code, typo)  # weights 3 and 7 are coprime to 10


def test_payout_account__normalised_before_hashing() -> None:
    account = PayoutAccount.parse("  Bank_Transfer ", " 011", "000-001 4579")
    assert account == PayoutAccount(PayoutMethod.BANK_TRANSFER, "011", "0000014579")
    assert account.payout_ref == keccak(b"bank_transfer:011:0000014579")


def test_payout_account__five_and_six_digit_institution_codes() -> None:
    serial = "123456789"
    for code in ("50211", "090267"):
        number = serial + str(reference_check_digit(code, serial))
        assert PayoutAccount.parse("bank_transfer", code, number).bank_code == code


@pytest.mark.parametrize(
    ("method", "bank_code", "account", "message"),
    [
        ("cheque", "011", "0000014579", "payout method"),
        ("bank_transfer", "01", "0000014579", "3 to 6 digits"),
        ("bank_transfer", "0111111", "0000014579", "3 to 6 digits"),
        ("bank_transfer", "O11", "0000014579", "3 to 6 digits"),
        ("bank_transfer", "011", "000001457", "10-digit"),
        ("bank_transfer", "011", "00000145790", "10-digit"),
        ("bank_transfer", "011", "0000014578", "check digit"),
        ("bank_transfer", "0110", "0000014579", "3-, 5- or 6-digit"),
        ("wallet", "011", "000001457a", "10-digit"),
    ],
)
def test_payout_account__refuses_malformed_destinations(
    method: str, bank_code: str, account: str, message: str
) -> None:
    with pytest.raises(AgreementError, match=message):
        PayoutAccount.parse(method, bank_code, account)


def test_payout_account__virtual_accounts_and_wallets_are_checked_for_shape_only() -> None:
    rng = random.Random(7)
    number = "".join(rng.choice("0123456789") for _ in range(10))
    if is_valid_nuban("035", number):
        number = number[:9] + str((int(number[9]) + 1) % 10)
    assert PayoutAccount.parse("virtual_account", "035", number).account_number == number
    wallet = PayoutAccount.parse("wallet", "100004", number)
    assert wallet.payout_ref == keccak(f"wallet:100004:{number}".encode())


def test_collateral_in_another_currency__refused() -> None:
    with pytest.raises(AgreementError, match="currency"):
        make_agreement(collateral=Collateral("equipment", "oven", Money(1, "USD")))
