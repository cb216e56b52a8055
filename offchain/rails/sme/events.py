"""SME platform events: signing, verification and parsing of `POST /v1/events/sme` deliveries.

Wire:

    POST {gateway}/v1/events/sme
    x-sme-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" under SME_EVENTS_SECRET>
    {"id": "evt_...", "type": "sme.kyc.verified" | "sme.payment.received" | ...,
     "created_at": ISO 8601, "data": {...}}

    sme.kyc.verified      data {"user_id", "kyc_status": "verified", "verification_date"?, "partner_id"?}
    sme.payment.received  data {"payment_id", "reference", "amount" (int minor units), "currency",
                                "method": "bank_transfer" | "wallet", "loan_id"?, "user_id"?,
                                "account_number"?, "paid_at"?}

The timestamp is signed together with the body, and a delivery older (or newer) than the
tolerance window is refused, so a captured request cannot be replayed later; duplicates inside
the window are the consumer's idempotency (`dedupe_key`). Several `v1=` values, and several
secrets on our side, let either party rotate the secret without dropping events. The signature
is checked on the raw bytes before anything parses them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offchain.domain.ledger import MAX_AMOUNT as MAX_LEDGER_AMOUNT
from offchain.platform.settings import RailsSettings

SIGNATURE_HEADER = "x-sme-signature"
KYC_VERIFIED = "sme.kyc.verified"
PAYMENT_RECEIVED = "sme.payment.received"
DEFAULT_TOLERANCE_S = 300


class SmeEventRejected(Exception):
    """The delivery must not be processed; `status` is the HTTP answer to give."""

    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSmeSignature(SmeEventRejected):
    pass


class MalformedSmeEvent(SmeEventRejected):
    status = 400


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The `x-sme-signature` value for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if not value.isdigit():
                raise InvalidSmeSignature("signature timestamp is not a unix time")
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        raise InvalidSmeSignature(f"{SIGNATURE_HEADER} must be t=<unix>,v1=<hex>")
    return timestamp, signatures


def verify(
    body: bytes,
    header: str | None,
    secrets: str | Sequence[str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Raise InvalidSmeSignature unless `header` signs `body` recently; returns the timestamp."""
    if not header:
        raise InvalidSmeSignature(f"missing {SIGNATURE_HEADER} header")
    timestamp, given = _parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSmeSignature(f"signature timestamp is outside the {tolerance_s}s tolerance window")
    candidates = [secrets] if isinstance(secrets, str) else [s for s in secrets if s]
    matched = False
    for secret in candidates:
        expected = _mac(secret, timestamp, body).encode()
        for signature in given:
            matched |= hmac.compare_digest(expected, signature.encode())
    if not matched:
        raise InvalidSmeSignature("signature does not match the body")
    return timestamp


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# What an event's strings and numbers must fit to be stored (the dedupe key is at most 200
# characters, PostgreSQL text and jsonb hold no U+0000, LoanBook amounts are below 2**96).
MAX_ID = 150
MAX_DEPTH = 16
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Short = Annotated[str, Field(max_length=200)]


class KycVerifiedData(_Model):
    user_id: Annotated[str, Field(min_length=1, max_length=200)]
    kyc_status: Literal["verified"] = "verified"
    verification_date: Short | None = None
    partner_id: Short | None = None


class PaymentReceivedData(_Model):
    reference: Id
    # the ledger keeps amounts in BIGINT (LoanBook would take up to 2**96): a larger one could
    # never be posted, so it is refused here rather than wedging the repayment consumer
    amount: Annotated[int, Field(strict=True, gt=0, le=MAX_LEDGER_AMOUNT)]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    method: Literal["bank_transfer", "wallet"]
    payment_id: Short | None = None
    loan_id: Short | None = None
    user_id: Short | None = None
    account_number: Short | None = None
    paid_at: Short | None = None


class SmeKycVerified(_Model):
    id: Id
    type: Literal["sme.kyc.verified"]
    created_at: Short
    data: KycVerifiedData

    @property
    def dedupe_key(self) -> str:
        return f"sme:{self.id}"


class SmePaymentReceived(_Model):
    id: Id
    type: Literal["sme.payment.received"]
    created_at: Short
    data: PaymentReceivedData

    @property
    def dedupe_key(self) -> str:
        # the payment's own reference, not the event id: the same payment re-sent as a new event
        # must still be counted once
        return f"sme:payment:{self.data.reference}"


@dataclass(frozen=True)
class UnknownSmeEvent:
    id: str
    type: str
    data: Any = field(default=None)

    @property
    def dedupe_key(self) -> str:
        return f"sme:{self.id}"


SmeEvent = SmeKycVerified | SmePaymentReceived | UnknownSmeEvent

_MODELS: dict[str, type[SmeKycVerified] | type[SmePaymentReceived]] = {
    KYC_VERIFIED: SmeKycVerified,
    PAYMENT_RECEIVED: SmePaymentReceived,
}


def unstorable(value: Any, *, where: str = "body", depth: int = 0) -> str | None:
    """Why a parsed JSON value cannot be stored as it is (a U+0000 in a key or a string, nesting
    past MAX_DEPTH), or None."""
    if depth > MAX_DEPTH:
        return f"{where}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return f"{where}: NUL character" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = unstorable(key, where=f"{where} key", depth=depth) or unstorable(
                item, where=f"{where}.{key}"[:200], depth=depth + 1
            )
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := unstorable(item, where=f"{where}[{index}]", depth=depth + 1):
                return found
    return None


def parse_event(body: bytes) -> SmeEvent:
    """Parse an already verified body. Raises MalformedSmeEvent."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise MalformedSmeEvent("body is not JSON") from None
    except RecursionError:  # past ~1,000 levels the parser gives up
        raise MalformedSmeEvent(f"body: nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise MalformedSmeEvent("body must be an object with a string `type`")
    if not isinstance(payload.get("id"), str) or not payload["id"]:
        raise MalformedSmeEvent("body must carry a string `id`")
    if len(payload["id"]) > MAX_ID:
        raise MalformedSmeEvent(f"id: at most {MAX_ID} characters")
    if reason := unstorable(payload):
        raise MalformedSmeEvent(reason)
    model = _MODELS.get(payload["type"])
    if model is None:
        return UnknownSmeEvent(id=payload["id"], type=payload["type"], data=payload.get("data"))
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise MalformedSmeEvent(f"{payload['type']}: {problems}") from None


def verify_and_parse(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: str | Sequence[str],
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> SmeEvent:
    header = headers.get(SIGNATURE_HEADER)
    if header is None:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    verify(body, header, secrets, tolerance_s=tolerance_s, now=now)
    return parse_event(body)


@dataclass(frozen=True)
class SmeEventVerifier:
    """`verify_and_parse` configured once from the settings (secret, tolerance window)."""

    secrets: tuple[str, ...]
    tolerance_s: int = DEFAULT_TOLERANCE_S

    @classmethod
    def from_settings(cls, rails: RailsSettings) -> SmeEventVerifier:
        return cls(
            secrets=(rails.sme_events_secret.get_secret_value(),), tolerance_s=rails.sme_events_tolerance_s
        )

    def __call__(self, body: bytes, headers: Mapping[str, str]) -> SmeEvent:
        return verify_and_parse(body, headers, secrets=self.secrets, tolerance_s=self.tolerance_s)


def encode_event(event_type: str, data: dict[str, Any], *, event_id: str, created_at: str) -> bytes:
    """The canonical body of an event, as the SME platform (and the simulator) sends it."""
    envelope = {"id": event_id, "type": event_type, "created_at": created_at, "data": data}
    return json.dumps(envelope, separators=(",", ":")).encode()
