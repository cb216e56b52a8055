"""The loan agreement document, its hash, and the LoanBook `Terms` derived from it.

Canonical form (what `terms_hash` commits to): JSON per RFC 8785 (JCS) for the values this document
holds — object keys sorted by their UTF-16 code units, no insignificant whitespace, strings escaped
as ECMAScript's JSON.stringify does, UTF-8. Floats are refused outright (amounts are integer minor
units, rates are integer basis points or decimal strings), and integers must lie within ±(2**53 - 1)
so that every JCS implementation reads them back exactly. `terms_hash = keccak256(canonical bytes)`.

References (DESIGN §3: no personal data on chain):
- `chain_loan_id = keccak256(loan_uuid.bytes)` (the 16 raw bytes of the UUID);
- `borrower_ref` / `partner_ref = HMAC-SHA256(secret, "<kind>:<id>")` with kind `borrower` or
  `partner`, so the same id in the two namespaces never yields the same reference. The secret is
  passed in by the caller (from settings), never held here;
- `payout_ref = keccak256(utf8 "<method>:<bank_code>:<account_number>")` after normalising the
  inputs. Signers recompute it from the agreement to check where the money goes, so it is an
  unkeyed hash; it identifies an account to anyone who can guess the account number.

Account numbers are NUBANs: 10 digits, the last a check digit. For bank transfers the check digit
is verified with the CBN algorithm as revised for other financial institutions (2020): the
institution code is made 6 digits (a 3-digit bank code is prefixed with "000", a 5-digit one with
"9"), followed by the 9-digit serial, weighted 3,7,3 repeating; the check digit is
`(10 - sum % 10) % 10`. For 3-digit codes this equals the original 2010 scheme. 4-digit codes have
no CBN check-digit rule and are refused for bank transfers. Virtual accounts and wallets are checked
for shape only: providers issue them from their own number ranges.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from eth_hash.auto import keccak

from offchain.domain.loan_book import MAX_AMOUNT, MAX_LATE_FEES
from offchain.domain.money import Money, iso_numeric
from offchain.domain.offers.pricing import OfferTerms

SCHEMA = "caas.loan-agreement/1"
MAX_SAFE_INTEGER = 2**53 - 1
UINT16_MAX, UINT32_MAX = 2**16 - 1, 2**32 - 1
MIN_SECRET_BYTES = 16

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class AgreementError(ValueError):
    pass


# -- canonical JSON ----------------------------------------------------------------------------


def _string(value: str) -> str:
    out = ['"']
    for char in value:
        if char in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        elif "\ud800" <= char <= "\udfff":
            raise AgreementError("lone surrogate in a string")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _serialize(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise AgreementError(f"integer {value} is outside the exactly representable JSON range")
        out.append(str(value))
    elif isinstance(value, float):
        raise AgreementError("floats have no place in an agreement: use integer minor units or bps")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise AgreementError(f"object keys must be strings, got {type(key).__name__}")
        out.append("{")
        for position, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if position:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _serialize(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _serialize(item, out)
        out.append("]")
    else:
        raise AgreementError(f"{type(value).__name__} is not a JSON value")


def canonical_json(document: Any) -> bytes:
    out: list[str] = []
    _serialize(document, out)
    return "".join(out).encode("utf-8")


def terms_hash_of(document: Mapping[str, Any]) -> bytes:
    """What an auditor runs on a stored agreement to compare with the chain's `terms_hash`."""
    return keccak(canonical_json(document))


# -- references ---------------------------------------------------------------------------------


def chain_loan_id(loan_id: uuid.UUID) -> bytes:
    return keccak(loan_id.bytes)


def keyed_ref(secret: bytes | str, kind: str, identifier: str) -> bytes:
    """HMAC-SHA256(secret, "<kind>:<identifier>"): a bytes32 that names a party only to us."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise AgreementError(f"the reference secret must be at least {MIN_SECRET_BYTES} bytes")
    if kind not in ("borrower", "partner"):
        raise AgreementError(f"unknown reference kind {kind!r}")
    if not identifier:
        raise AgreementError("empty identifier")
    return hmac.new(key, f"{kind}:{identifier}".encode(), hashlib.sha256).digest()


def borrower_ref(secret: bytes | str, borrower_id: str) -> bytes:
    return keyed_ref(secret, "borrower", borrower_id)


def partner_ref(secret: bytes | str, partner_id: str) -> bytes:
    return keyed_ref(secret, "partner", partner_id)


# -- payout accounts ----------------------------------------------------------------------------


class PayoutMethod(StrEnum):
    BANK_TRANSFER = "bank_transfer"
    VIRTUAL_ACCOUNT = "virtual_account"
    WALLET = "wallet"


_NUBAN_WEIGHTS = (3, 7, 3) * 5
_SEPARATORS = re.compile(r"[\s\-]")


def _institution_code(bank_code: str) -> str:
    if len(bank_code) == 3:
        return "000" + bank_code
    if len(bank_code) == 5:
        return "9" + bank_code
    if len(bank_code) == 6:
        return bank_code
    raise AgreementError(f"no NUBAN check-digit rule for a {len(bank_code)}-digit bank code")


def nuban_check_digit(bank_code: str, serial: str) -> int:
    """Check digit of the 9-digit NUBAN `serial` at the bank or institution `bank_code`."""
    if not (serial.isascii() and serial.isdigit() and len(serial) == 9):
        raise AgreementError("a NUBAN serial is 9 digits")
    if not (bank_code.isascii() and bank_code.isdigit()):
        raise AgreementError("bank codes are digits")
    digits = _institution_code(bank_code) + serial
    total = sum(int(digit) * weight for digit, weight in zip(digits, _NUBAN_WEIGHTS, strict=True))
    return (10 - total % 10) % 10


def is_valid_nuban(bank_code: str, account_number: str) -> bool:
    if not (account_number.isascii() and account_number.isdigit() and len(account_number) == 10):
        return False
    try:
        return nuban_check_digit(bank_code, account_number[:9]) == int(account_number[9])
    except AgreementError:
        return False


@dataclass(frozen=True, slots=True)
class PayoutAccount:
    method: PayoutMethod
    bank_code: str
    account_number: str

    @classmethod
    def parse(cls, method: str, bank_code: str, account_number: str) -> PayoutAccount:
        """Normalise (trim, drop spaces and dashes, lower-case the method), then validate."""
        try:
            payout_method = PayoutMethod(method.strip().lower())
        except ValueError:
            raise AgreementError(
                f"payout method must be one of {', '.join(m.value for m in PayoutMethod)}"
            ) from None
        code = _SEPARATORS.sub("", bank_code)
        number = _SEPARATORS.sub("", account_number)
        if not (code.isascii() and code.isdigit() and 3 <= len(code) <= 6):
            raise AgreementError("bank_code must be 3 to 6 digits")
        if not (number.isascii() and number.isdigit() and len(number) == 10):
            raise AgreementError("account_number must be a 10-digit NUBAN")
        if payout_method is PayoutMethod.BANK_TRANSFER:
            if len(code) == 4:
                raise AgreementError("bank transfers need a 3-, 5- or 6-digit CBN bank code")
            if not is_valid_nuban(code, number):
                raise AgreementError("account_number fails the NUBAN check digit for this bank")
        return cls(payout_method, code, number)

    @property
    def ref_preimage(self) -> str:
        return f"{self.method.value}:{self.bank_code}:{self.account_number}"

    @property
    def payout_ref(self) -> bytes:
        return keccak(self.ref_preimage.encode("utf-8"))


# -- the agreement --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Collateral:
    kind: str  # e.g. "equipment", "inventory", "guarantor"
    description: str
    value: Money | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "value": self.value.to_json() if self.value is not None else None,
        }


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise AgreementError("created_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ChainTerms(NamedTuple):
    """LoanBook `Terms`, field for field in ABI order; web3 encodes it as the struct tuple."""

    borrower_ref: bytes
    partner_ref: bytes
    currency: int
    principal: int
    total_due: int
    installment_count: int
    installment_interval: int
    grace_period: int
    max_late_fees: int
    payout_ref: bytes
    terms_hash: bytes


@dataclass(frozen=True)
class Agreement:
    loan_id: uuid.UUID
    offer_id: str
    borrower_ref: bytes
    partner_ref: bytes
    offer: OfferTerms
    payout: PayoutAccount
    created_at: datetime
    collateral: Collateral | None = None

    def __post_init__(self) -> None:
        if len(self.borrower_ref) != 32 or len(self.partner_ref) != 32:
            raise AgreementError("party references are 32 bytes")
        if not self.offer_id:
            raise AgreementError("offer_id is required")
        _timestamp(self.created_at)
        if self.collateral is not None and self.collateral.value is not None:
            if self.collateral.value.currency != self.offer.currency:
                raise AgreementError("collateral valued in another currency than the loan")

    @property
    def chain_loan_id(self) -> bytes:
        return chain_loan_id(self.loan_id)

    def document(self) -> dict[str, Any]:
        offer, schedule = self.offer, self.offer.schedule
        currency = offer.currency

        def money(value: int) -> dict[str, Any]:
            return Money(value, currency).to_json()

        return {
            "schema": SCHEMA,
            "loan_id": str(self.loan_id),
            "chain_loan_id": _hex(self.chain_loan_id),
            "offer_id": self.offer_id,
            "borrower_ref": _hex(self.borrower_ref),
            "partner_ref": _hex(self.partner_ref),
            "currency": currency,
            "currency_code": iso_numeric(currency),
            "principal": money(offer.principal),
            "interest": money(schedule.interest),
            "fees": {"origination": money(offer.origination_fee)},
            "total_due": money(offer.total_due),
            "apr_bps": offer.apr_bps,
            "ear_bps": schedule.ear_bps,
            "ear": format(schedule.ear, "f"),
            "method": schedule.method.value,
            "frequency": schedule.frequency.value,
            "tenor_months": offer.tenor_months,
            "installment_count": schedule.installment_count,
            "installment_interval": schedule.installment_interval,
            "grace_period": offer.grace_period,
            "max_late_fees": money(offer.max_late_fees),
            "schedule": [
                {
                    "index": item.index,
                    "due_offset": item.due_offset,
                    "amount": money(item.amount),
                    "principal": money(item.principal),
                    "interest": money(item.interest),
                    "fee": money(item.fee),
                }
                for item in schedule.installments
            ],
            "payout": {
                "method": self.payout.method.value,
                "bank_code": self.payout.bank_code,
                "account_number": self.payout.account_number,
                "ref": _hex(self.payout.payout_ref),
            },
            "collateral": self.collateral.to_json() if self.collateral is not None else None,
            "pricing_version": offer.pricing_version,
            "created_at": _timestamp(self.created_at),
        }

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.document())

    @property
    def terms_hash(self) -> bytes:
        return keccak(self.canonical_bytes())


def build_agreement(
    *,
    loan_id: uuid.UUID,
    offer_id: str,
    offer: OfferTerms,
    borrower_id: str,
    partner_id: str,
    ref_secret: bytes | str,
    payout: PayoutAccount,
    created_at: datetime,
    collateral: Collateral | None = None,
) -> Agreement:
    return Agreement(
        loan_id=loan_id,
        offer_id=offer_id,
        borrower_ref=borrower_ref(ref_secret, borrower_id),
        partner_ref=partner_ref(ref_secret, partner_id),
        offer=offer,
        payout=payout,
        created_at=created_at,
        collateral=collateral,
    )


def to_chain_terms(agreement: Agreement) -> ChainTerms:
    """The `Terms` LoanBook.create_loan takes, from the same fields the document hashes."""
    offer, schedule = agreement.offer, agreement.offer.schedule
    terms = ChainTerms(
        borrower_ref=agreement.borrower_ref,
        partner_ref=agreement.partner_ref,
        currency=iso_numeric(offer.currency),
        principal=offer.principal,
        total_due=offer.total_due,
        installment_count=schedule.installment_count,
        installment_interval=schedule.installment_interval,
        grace_period=offer.grace_period,
        max_late_fees=offer.max_late_fees,
        payout_ref=agreement.payout.payout_ref,
        terms_hash=agreement.terms_hash,
    )
    # LoanBook.create_loan's checks, so a refusal happens here and not in a reverted transaction
    if not 0 < terms.principal <= terms.total_due <= MAX_AMOUNT:
        raise AgreementError("need 0 < principal <= total_due within LoanBook's range")
    if not 1 <= terms.installment_count <= UINT16_MAX or terms.total_due < terms.installment_count:
        raise AgreementError("installment_count out of range or installments below one unit")
    if not 0 < terms.installment_interval <= UINT32_MAX or not 0 <= terms.grace_period <= UINT32_MAX:
        raise AgreementError("interval or grace period outside uint32")
    if terms.max_late_fees > MAX_LATE_FEES:
        raise AgreementError("late fee cap too large")
    return terms
