"""Signatures and parsing of the rails' inbound deliveries: Paystack webhooks and SME events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from offchain.platform.settings import RailsSettings
from offchain.rails.paystack import webhooks
from offchain.rails.sme import events

SECRET = "sk_test_4f3c2b1a0e9d8c7b6a5f"
SME_SECRET = "whsec_7d6c5b4a39281706"

CHARGE = {
    "event": "charge.success",
    "data": {
        "id": 302961,
        "domain": "live",
        "status": "success",
        "reference": "qTPrJoy9Bx",
        "amount": 10000,
        "gateway_response": "Approved",
        "paid_at": "2024-12-02T12:05:12.000Z",
        "channel": "dedicated_nuban",
        "currency": "NGN",
        "metadata": {"receiver_account_number": "1234567890", "receiver_bank": "Test Bank"},
        "fees": 100,
        "authorization": {
            "authorization_code": "AUTH_039292",
            "channel": "dedicated_nuban",
            "card_type": "transfer",
            "sender_name": "John",
            "receiver_bank_account_number": "1234567890",
            "receiver_bank": "Test Bank",
        },
        "customer": {"id": 68324, "customer_code": "CUS_qo38as2hpsgk2r0", "email": "a@b.ng"},
    },
}


def _raw(payload: dict) -> bytes:
    return json.dumps(payload).encode()


# -- Paystack --------------------------------------------------------------------------------


def test_paystack_signature_is_hex_hmac_sha512_of_the_raw_body() -> None:
    body = _raw(CHARGE)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha512).hexdigest()

    assert webhooks.sign(body, SECRET) == expected
    webhooks.verify_signature(body, expected, SECRET)
    webhooks.verify_signature(body, expected.upper(), SECRET)  # hex case does not matter
    webhooks.verify_signature(body, expected, ["sk_test_old_key", SECRET])  # during a key rotation


@pytest.mark.parametrize(
    ("body", "signature", "secret"),
    [
        (_raw(CHARGE).replace(b"10000", b"90000"), None, SECRET),  # body changed after signing
        (_raw(CHARGE), None, "sk_test_someone_else"),  # signed with another key
        (json.dumps(CHARGE, indent=2).encode(), None, SECRET),  # same JSON, other bytes
        (_raw(CHARGE), "", SECRET),  # header missing
        (_raw(CHARGE), "deadbeef", SECRET),
    ],
)
def test_paystack_signature_mismatch_is_refused_before_parsing(
    body: bytes, signature: str | None, secret: str
) -> None:
    given = webhooks.sign(_raw(CHARGE), SECRET) if signature is None else signature
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify_and_parse(body, {"x-paystack-signature": given}, secrets=secret)


def test_unparseable_body_with_a_bad_signature_is_an_auth_failure_not_a_parse_error() -> None:
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify_and_parse(b"{not json", {"X-Paystack-Signature": "00"}, secrets=SECRET)


def test_source_allowlist_accepts_listed_addresses_and_ranges_only() -> None:
    allow = ["52.31.139.75", "10.20.0.0/16"]
    webhooks.check_source("52.31.139.75", allow)
    webhooks.check_source("10.20.3.4", allow)
    webhooks.check_source("203.0.113.9", [])  # no allowlist: the signature alone decides
    for address in ("203.0.113.9", None, "not-an-ip"):
        with pytest.raises(webhooks.SourceNotAllowed) as refused:
            webhooks.check_source(address, allow)
        assert refused.value.status == 403
    body = _raw(CHARGE)
    with pytest.raises(webhooks.SourceNotAllowed):
        webhooks.verify_and_parse(
            body,
            {"x-paystack-signature": webhooks.sign(body, SECRET)},
            secrets=SECRET,
            source_ip="198.51.100.1",
            allowlist=webhooks.PAYSTACK_SOURCE_IPS,
        )


def test_charge_success_parses_with_the_matching_keys() -> None:
    body = _raw(CHARGE)
    event = webhooks.verify_and_parse(
        body, {"x-paystack-signature": webhooks.sign(body, SECRET)}, secrets=SECRET
    )

    assert isinstance(event, webhooks.ChargeSuccess)
    assert event.data.amount == 10000 and event.data.succeeded
    assert event.data.receiver_account_number == "1234567890"
    assert event.data.loan_id is None
    assert event.dedupe_key == "paystack:charge.success:qTPrJoy9Bx"
    assert event.data.model_extra and event.data.model_extra["domain"] == "live"  # unknown fields kept


@pytest.mark.parametrize(
    ("metadata", "loan_id"),
    [('{"loan_id": "L-7"}', "L-7"), ("", None), (None, None), ("free text", None), ({"loan_id": 12}, "12")],
)
def test_charge_metadata_in_any_shape_paystack_echoes(metadata: object, loan_id: str | None) -> None:
    payload = {"event": "charge.success", "data": {**CHARGE["data"], "metadata": metadata}}
    event = webhooks.parse_event(_raw(payload))
    assert isinstance(event, webhooks.ChargeSuccess) and event.data.loan_id == loan_id


def test_transfer_events_and_unknown_events() -> None:
    transfer = {
        "event": "transfer.reversed",
        "data": {
            "id": 37272792,
            "amount": 30000,
            "currency": "NGN",
            "reference": "loan-1-payout",
            "status": "reversed",
            "transfer_code": "TRF_wpl1dem4967avzm",
            "recipient": {
                "id": 8690817,
                "recipient_code": "RCP_a8wkxiychzdzfgs",
                "type": "nuban",
                "name": "Jack",
                "currency": "NGN",
                "details": {"account_number": "0000000000", "bank_code": "011"},
            },
            "created_at": "2020-10-26T12:28:57.000Z",
        },
    }
    event = webhooks.parse_event(_raw(transfer))
    assert isinstance(event, webhooks.TransferEvent)
    assert event.data.status.conclusive and not event.data.status.paid_out
    assert event.data.recipient_code == "RCP_a8wkxiychzdzfgs"
    assert event.data.created_at == "2020-10-26T12:28:57.000Z"

    unknown = webhooks.parse_event(_raw({"event": "subscription.create", "data": {"id": 9}}))
    assert isinstance(unknown, webhooks.UnknownEvent) and unknown.event == "subscription.create"


@pytest.mark.parametrize(
    "payload",
    [
        {"data": {}},
        {"event": "charge.success", "data": {**CHARGE["data"], "amount": 100.5}},  # never float money
        {"event": "charge.success", "data": {"reference": "x"}},
        {"event": "transfer.success", "data": {**CHARGE["data"], "status": "teleported"}},
        ["not", "an", "object"],
    ],
)
def test_malformed_events_are_refused(payload: object) -> None:
    with pytest.raises(webhooks.MalformedEvent):
        webhooks.parse_event(json.dumps(payload).encode())


# -- SME events ------------------------------------------------------------------------------

PAYMENT = {
    "id": "evt_1",
    "type": "sme.payment.received",
    "created_at": "2026-01-01T00:00:00Z",
    "data": {"reference": "smepay_1", "amount": 500_000, "currency": "NGN", "method": "bank_transfer"},
}


def test_sme_signature_signs_the_timestamp_with_the_body() -> None:
    body = _raw(PAYMENT)
    header = events.sign(body, SME_SECRET, timestamp=1_700_000_000)
    mac = hmac.new(SME_SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()

    assert header == f"t=1700000000,v1={mac}"
    assert events.verify(body, header, SME_SECRET, now=1_700_000_100) == 1_700_000_000
    # several v1 values (the sender rotating) and several secrets (we rotating)
    events.verify(body, f"t=1700000000,v1={'0' * 64},v1={mac}", ["old", SME_SECRET], now=1_700_000_000)


@pytest.mark.parametrize(
    ("header", "now", "reason"),
    [
        (None, 1_700_000_000, "missing"),
        ("v1=abc", 1_700_000_000, "t=<unix>"),
        ("t=soon,v1=abc", 1_700_000_000, "unix time"),
        ("t=1700000000", 1_700_000_000, "t=<unix>"),
        ("SIGNED", 1_700_000_000, "t=<unix>"),
    ],
)
def test_sme_malformed_headers_are_refused(header: str | None, now: int, reason: str) -> None:
    with pytest.raises(events.InvalidSmeSignature, match=reason):
        events.verify(_raw(PAYMENT), header, SME_SECRET, now=now)


def test_sme_signature_outside_the_window_or_over_other_bytes_is_refused() -> None:
    body = _raw(PAYMENT)
    header = events.sign(body, SME_SECRET, timestamp=1_700_000_000)
    for now in (1_700_000_000 + 301, 1_700_000_000 - 301):  # replayed later, or from the future
        with pytest.raises(events.InvalidSmeSignature, match="tolerance"):
            events.verify(body, header, SME_SECRET, now=now)
    with pytest.raises(events.InvalidSmeSignature, match="does not match"):
        events.verify(body.replace(b"500000", b"900000"), header, SME_SECRET, now=1_700_000_000)
    forged_time = header.replace("t=1700000000", "t=1700000200")  # moving the clock breaks the MAC
    with pytest.raises(events.InvalidSmeSignature, match="does not match"):
        events.verify(body, forged_time, SME_SECRET, now=1_700_000_200)


def test_sme_events_parse_into_types() -> None:
    payment = events.parse_event(_raw(PAYMENT))
    assert isinstance(payment, events.SmePaymentReceived) and payment.data.amount == 500_000
    assert payment.dedupe_key == "sme:payment:smepay_1"

    kyc = events.parse_event(
        _raw({"id": "evt_2", "type": "sme.kyc.verified", "created_at": "x", "data": {"user_id": "u-1"}})
    )
    assert isinstance(kyc, events.SmeKycVerified) and kyc.data.user_id == "u-1"

    other = events.parse_event(_raw({"id": "evt_3", "type": "sme.user.deleted", "data": {}}))
    assert isinstance(other, events.UnknownSmeEvent) and other.type == "sme.user.deleted"

    for bad in (
        {**PAYMENT, "data": {**PAYMENT["data"], "amount": 10.5}},
        {**PAYMENT, "data": {**PAYMENT["data"], "method": "cash"}},
        {**PAYMENT, "id": None},
    ):
        with pytest.raises(events.MalformedSmeEvent):
            events.parse_event(_raw(bad))


def test_verifiers_configured_from_settings() -> None:
    rails = RailsSettings(
        paystack_secret_key=SECRET,
        sme_events_secret=SME_SECRET,
        paystack_webhook_ips="52.31.139.75, 52.49.173.169",
        sme_events_tolerance_s=60,
    )
    paystack = webhooks.WebhookVerifier.from_settings(rails)
    body = _raw(CHARGE)
    headers = {"x-paystack-signature": webhooks.sign(body, SECRET)}
    assert isinstance(paystack(body, headers, source_ip="52.49.173.169"), webhooks.ChargeSuccess)
    with pytest.raises(webhooks.SourceNotAllowed):
        paystack(body, headers, source_ip="127.0.0.1")

    sme = events.SmeEventVerifier.from_settings(rails)
    sme_body = _raw(PAYMENT)
    assert isinstance(
        sme(sme_body, {"x-sme-signature": events.sign(sme_body, SME_SECRET)}), events.SmePaymentReceived
    )
    stale = events.sign(sme_body, SME_SECRET, timestamp=int(time.time()) - 120)
    with pytest.raises(events.InvalidSmeSignature, match="60s"):
        sme(sme_body, {"x-sme-signature": stale})
