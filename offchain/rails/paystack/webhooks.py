"""Paystack webhooks: authenticate the delivery, then parse it into a typed event.

Paystack signs every delivery with `x-paystack-signature` = hex HMAC-SHA512 of the raw request
body keyed with the secret key. The signature is checked on the exact bytes received, before any
JSON parsing: a parser must never see an unauthenticated body (parser bugs, key-order or
whitespace normalisation would otherwise change what was signed). Comparison is constant-time.

Paystack also publishes the addresses it sends from; an allowlist (IPs or CIDR ranges) adds a
second, independent check where the deployment can see the real client address.

Event types the backend acts on are parsed into models; any other type is returned as
`UnknownEvent`, so the caller can answer 200 (Paystack retries anything else for 72 hours) and
do nothing.

Hostile or odd bodies, once the signature holds (docs/PAYSTACK.md, "Decided answers"):
- nested arbitrarily deep: read without recursion; containers deeper than 32 levels are dropped
  (a marker string takes their place) and the event is taken as usual -- no fact the backend
  uses sits that deep, and the money it announces is real;
- a reference Paystack could never have issued (control characters such as U+0000, empty,
  over 200 characters): `UnusableEvent`, acknowledged with 200 and not acted on (retrying the
  same bytes can never make it a payment; it is logged and counted);
- U+0000 anywhere else: replaced before anything is stored (PostgreSQL cannot hold it);
- not JSON, or a known event type without the facts it must carry: `MalformedEvent` (400), so
  Paystack's retries can bring it back once the reader is fixed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from offchain.platform.settings import RailsSettings
from offchain.rails.paystack import wire
from offchain.rails.paystack.models import Transaction, Transfer

SIGNATURE_HEADER = "x-paystack-signature"
# Published by Paystack for test and live mode alike.
PAYSTACK_SOURCE_IPS = ("52.31.139.75", "52.49.173.169", "52.214.14.220")

CHARGE_SUCCESS = "charge.success"
TRANSFER_SUCCESS = "transfer.success"
TRANSFER_FAILED = "transfer.failed"
TRANSFER_REVERSED = "transfer.reversed"
TRANSFER_EVENTS = (TRANSFER_SUCCESS, TRANSFER_FAILED, TRANSFER_REVERSED)


class WebhookRejected(Exception):
    """The delivery must not be processed; `status` is the HTTP answer to give."""

    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSignature(WebhookRejected):
    pass


class SourceNotAllowed(WebhookRejected):
    status = 403


class MalformedEvent(WebhookRejected):
    """Correctly signed, but not a Paystack event we can read."""

    status = 400


def sign(raw_body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), raw_body, hashlib.sha512).hexdigest()


def verify_signature(raw_body: bytes, signature: str | None, secrets: str | Sequence[str]) -> None:
    """Raise InvalidSignature unless `signature` is the HMAC of `raw_body` under one of `secrets`.

    Several secrets allow a key rotation without dropping deliveries signed with the old key.
    """
    if not signature:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    given = signature.strip().lower().encode()
    # every candidate is compared, so timing does not tell which secret (if any) matched
    matched = False
    for secret in candidates:
        if secret:
            matched |= hmac.compare_digest(sign(raw_body, secret).encode(), given)
    if not matched:
        raise InvalidSignature("signature does not match the body")


def check_source(address: str | None, allowlist: Iterable[str]) -> None:
    """Raise SourceNotAllowed unless `address` is in the allowlist; an empty allowlist allows all."""
    networks = [ipaddress.ip_network(entry.strip(), strict=False) for entry in allowlist if entry.strip()]
    if not networks:
        return
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        raise SourceNotAllowed(f"source address {address!r} is not an IP address") from None
    if not any(ip in network for network in networks):
        raise SourceNotAllowed(f"source address {ip} is not on the Paystack allowlist")


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ChargeSuccess(_Event):
    event: Literal["charge.success"]
    data: Transaction

    @property
    def dedupe_key(self) -> str:
        return f"paystack:{self.event}:{self.data.reference}"


class TransferEvent(_Event):
    event: Literal["transfer.success", "transfer.failed", "transfer.reversed"]
    data: Transfer

    @property
    def dedupe_key(self) -> str:
        return f"paystack:{self.event}:{self.data.reference}"


@dataclass(frozen=True)
class UnknownEvent:
    """A correctly signed event of a type the backend does not act on."""

    event: str
    data: Any = field(default=None)

    @property
    def dedupe_key(self) -> str:
        ident = self.data.get("id") if isinstance(self.data, dict) else None
        return f"paystack:{self.event}:{ident}"


@dataclass(frozen=True)
class UnusableEvent:
    """Correctly signed, of a type we act on, but it can never be a payment or payout of ours
    (its reference is not one Paystack issues): acknowledged, never acted on."""

    event: str
    reason: str

    @property
    def dedupe_key(self) -> str:
        return f"paystack:{self.event}:unusable"


PaystackEvent = ChargeSuccess | TransferEvent | UnknownEvent | UnusableEvent

_MODELS: dict[str, type[ChargeSuccess] | type[TransferEvent]] = {
    CHARGE_SUCCESS: ChargeSuccess,
    **dict.fromkeys(TRANSFER_EVENTS, TransferEvent),
}


def decode_body(raw_body: bytes) -> dict[str, Any]:
    """The authenticated body, decoded depth-bounded (wire.decode). Raises MalformedEvent."""
    try:
        payload = wire.decode(raw_body)
    except wire.UnreadableJson as error:
        raise MalformedEvent(f"body is {error}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise MalformedEvent("body must be an object with a string `event`")
    return payload


def parse_payload(payload: dict[str, Any]) -> PaystackEvent:
    """A decoded body as a typed event. Raises MalformedEvent."""
    model = _MODELS.get(payload["event"])
    if model is None:
        return UnknownEvent(event=wire.storable(payload["event"]), data=wire.storable(payload.get("data")))
    data = payload.get("data")
    if isinstance(data, dict) and "reference" in data:
        unusable = wire.reference_problem(data["reference"])
        if unusable is not None:
            return UnusableEvent(event=payload["event"], reason=unusable)
    try:
        return model.model_validate(wire.storable(payload))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise MalformedEvent(f"{payload['event']} does not have Paystack's shape: {problems}") from None


def parse_event(raw_body: bytes) -> PaystackEvent:
    """Parse an already authenticated body. Raises MalformedEvent."""
    return parse_payload(decode_body(raw_body))


def verify_and_read(
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: str | Sequence[str],
    source_ip: str | None = None,
    allowlist: Iterable[str] = (),
) -> tuple[PaystackEvent, dict[str, Any]]:
    """`verify_and_parse`, with the decoded body (storable: what may go into a table)."""
    check_source(source_ip, allowlist)
    signature = headers.get(SIGNATURE_HEADER)
    if signature is None:
        signature = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    verify_signature(raw_body, signature, secrets)
    payload = decode_body(raw_body)
    event = parse_payload(payload)
    return event, wire.storable(payload)


def verify_and_parse(
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: str | Sequence[str],
    source_ip: str | None = None,
    allowlist: Iterable[str] = (),
) -> PaystackEvent:
    """The whole intake check in the only safe order: source, signature on raw bytes, then parse.

    `headers` may be any case-insensitive mapping (Starlette's Headers) or a plain dict.
    """
    event, _ = verify_and_read(raw_body, headers, secrets=secrets, source_ip=source_ip, allowlist=allowlist)
    return event


@dataclass(frozen=True)
class WebhookVerifier:
    """The intake check configured once: secret key(s) and the optional source allowlist.

    `source_ip` is the address the request came from as the deployment knows it (the socket
    peer, or the first untrusted hop of X-Forwarded-For behind a proxy you control).
    """

    secrets: tuple[str, ...]
    allowlist: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, rails: RailsSettings) -> WebhookVerifier:
        return cls(
            secrets=(rails.paystack_secret_key.get_secret_value(),),
            allowlist=tuple(rails.paystack_webhook_ips),
        )

    def __call__(
        self, raw_body: bytes, headers: Mapping[str, str], *, source_ip: str | None = None
    ) -> PaystackEvent:
        return verify_and_parse(
            raw_body, headers, secrets=self.secrets, source_ip=source_ip, allowlist=self.allowlist
        )

    def read(
        self, raw_body: bytes, headers: Mapping[str, str], *, source_ip: str | None = None
    ) -> tuple[PaystackEvent, dict[str, Any]]:
        return verify_and_read(
            raw_body, headers, secrets=self.secrets, source_ip=source_ip, allowlist=self.allowlist
        )
