"""Paystack's documented payloads parse, in every shape Paystack documents; hostile bodies have a
decided answer; the borrower's repayment and Paystack's fee are told apart as documented."""

from __future__ import annotations

import json

import pytest
from paystack_samples import NAMES, body, sample, source

from offchain.domain import ledger
from offchain.domain import money_movement as mm
from offchain.rails.paystack import webhooks, wire
from offchain.rails.paystack.models import DedicatedAccount, Transaction, Transfer, TransferStatus

SECRET = "sk_test_shapes_0001"


def test_every_fixture_names_the_documentation_page_it_comes_from() -> None:
    assert len(NAMES) >= 10
    for name in NAMES:
        assert source(name).startswith("https://paystack.com/docs/"), name


def test_charge_success_sample__metadata_zero_and_null_fees__is_a_charge() -> None:
    event = webhooks.parse_event(body(sample("charge_success")))
    assert isinstance(event, webhooks.ChargeSuccess)
    assert (event.data.amount, event.data.currency, event.data.metadata) == (10000, "NGN", {})
    assert event.data.fees is None and event.data.loan_id is None
    assert event.data.model_extra and event.data.model_extra["log"]["attempts"] == 1  # kept, unread


@pytest.mark.parametrize(
    ("name", "status", "amount"),
    [
        ("transfer_success", TransferStatus.SUCCESS, 100000),
        ("transfer_failed", TransferStatus.FAILED, 200000),
        ("transfer_reversed", TransferStatus.REVERSED, 10000),
    ],
)
def test_transfer_samples_parse(name: str, status: TransferStatus, amount: int) -> None:
    event = webhooks.parse_event(body(sample(name)))
    assert isinstance(event, webhooks.TransferEvent)
    assert (event.data.status, event.data.amount) == (status, amount)
    assert event.data.recipient_code and event.data.recipient_code.startswith("RCP_")


def test_verify_answers_and_dedicated_account_samples_parse() -> None:
    paid = Transaction.model_validate(sample("verify_transaction")["data"])
    assert (paid.amount, paid.requested_amount, paid.fees, paid.metadata) == (40333, 30050, 10283, {})
    transfer = Transfer.model_validate(sample("verify_transfer")["data"])
    assert transfer.status.paid_out and transfer.recipient_code == "RCP_rjs1szi4ax5hoeo"
    account = DedicatedAccount.model_validate(sample("dedicated_account_create")["data"])
    assert (account.account_number, account.bank.slug) == ("9930000737", "access-bank")
    # the assignment event is acknowledged and not acted on (accounts are opened by API call)
    assigned = webhooks.parse_event(body(sample("dedicatedaccount_assign_success")))
    assert isinstance(assigned, webhooks.UnknownEvent) and assigned.event == "dedicatedaccount.assign.success"


def test_dedicated_account_charge__the_receiving_account_is_found() -> None:
    event = webhooks.parse_event(body(sample("charge_success_dedicated_nuban")))
    assert isinstance(event, webhooks.ChargeSuccess)
    assert event.data.receiver_account_number == "9930000902"
    assert event.data.authorization and event.data.authorization.sender_name == "RANDALL AKANBI HORTON"


@pytest.mark.parametrize(
    ("metadata", "loan_id"),
    [
        ({"loan_id": "L-1"}, "L-1"),  # an object
        ('{"loan_id": "L-2"}', "L-2"),  # a JSON string
        (0, None),  # Paystack's webhook sample
        ("", None),  # Paystack's verify sample
        (None, None),
        ("free text", None),
        ([1, 2], None),
    ],
)
def test_metadata_in_every_shape(metadata: object, loan_id: str | None) -> None:
    payload = sample("charge_success")
    payload["data"]["metadata"] = metadata
    event = webhooks.parse_event(body(payload))
    assert isinstance(event, webhooks.ChargeSuccess) and event.data.loan_id == loan_id
    del payload["data"]["metadata"]  # absent
    absent = webhooks.parse_event(body(payload))
    assert isinstance(absent, webhooks.ChargeSuccess) and absent.data.metadata == {}


def test_fields_paystack_adds_later_are_ignored_and_odd_decoration_does_not_refuse_money() -> None:
    payload = sample("verify_transaction")["data"]
    payload["a_field_paystack_adds_in_2027"] = {"nested": [1, 2, 3]}
    payload["customer"] = "not an object"  # decoration in an unexpected shape: left out
    payload["authorization"] = {"receiver_bank_account_number": 1234}
    payload["fees"] = "a lot"
    charge = Transaction.model_validate(payload)
    assert charge.amount == 40333 and charge.customer is None and charge.authorization is None
    assert charge.fees is None


def test_amounts_as_digit_strings_are_read_and_fractions_refused() -> None:
    payload = sample("verify_transaction")["data"]
    assert Transaction.model_validate({**payload, "amount": "40333"}).amount == 40333
    with pytest.raises(ValueError):
        Transaction.model_validate({**payload, "amount": 403.33})


# -- the borrower's repayment and Paystack's fee ---------------------------------------------


def test_the_payer_bore_the_fees__the_repayment_is_requested_amount() -> None:
    data = sample("verify_transaction")["data"]
    figures = mm.paystack_charge_figures(data["amount"], data["requested_amount"], data["fees"])
    assert figures == mm.ChargeFigures(charged=40333, repayment=30050, provider_fee=10283, payer_fee=10283)
    assert figures.settled == 30050  # what Paystack settles is exactly the repayment


def test_the_merchant_bore_the_fees__the_repayment_is_the_whole_amount() -> None:
    data = sample("verify_transaction_api")["data"]
    figures = mm.paystack_charge_figures(data["amount"], data["requested_amount"], data["fees"])
    assert (figures.repayment, figures.provider_fee, figures.payer_fee, figures.settled) == (
        20000,
        100,
        0,
        19900,
    )


@pytest.mark.parametrize(
    ("requested", "fees", "repayment", "fee"),
    [(None, None, 10000, 0), (0, 0, 10000, 0), (12000, 5, 10000, 5), (9000, None, 9000, 0)],
)
def test_charge_figures_without_a_usable_request_or_fee(
    requested: int | None, fees: int | None, repayment: int, fee: int
) -> None:
    # no request, or a partial debit that charged less than requested: what was charged
    figures = mm.paystack_charge_figures(10000, requested, fees)
    assert (figures.repayment, figures.provider_fee) == (repayment, fee)


def test_fee_postings_balance_and_clearing_holds_what_paystack_settles() -> None:
    payer_bore = mm.rail_fee_posting(
        posting_id="f1", rail="paystack", provider_fee=10283, payer_fee=10283, currency="NGN", reference="r"
    )
    assert payer_bore is not None
    assert {(leg.account, leg.side.value, leg.amount) for leg in payer_bore.legs} == {
        ("rail:paystack:fees", "debit", 10283),
        ("rail:paystack:fees_recovered", "credit", 10283),
    }
    merchant_bore = mm.rail_fee_posting(
        posting_id="f2", rail="paystack", provider_fee=100, payer_fee=0, currency="NGN", reference="r"
    )
    assert merchant_bore is not None
    assert {(leg.account, leg.side.value, leg.amount) for leg in merchant_bore.legs} == {
        ("rail:paystack:fees", "debit", 100),
        ("rail:paystack:clearing", "credit", 100),
    }
    assert (
        mm.rail_fee_posting(
            posting_id="f3", rail="paystack", provider_fee=0, payer_fee=0, currency="NGN", reference="r"
        )
        is None
    )
    assert ledger.parse_account("rail:paystack:fees").normal_side is ledger.Side.DEBIT
    assert ledger.parse_account("rail:paystack:fees_recovered").normal_side is ledger.Side.CREDIT
    with pytest.raises(ValueError):
        ledger.parse_account("rail:visa:fees")


# -- hostile bodies, validly signed ---------------------------------------------------------------


def _signed(raw: bytes) -> dict[str, str]:
    return {"x-paystack-signature": webhooks.sign(raw, SECRET)}


@pytest.mark.parametrize("reference", ["qTPr\x00Joy9Bx", "\x00", "tab\there", "x" * 201, "", "\ufffd"])
def test_a_reference_paystack_never_issues__is_unusable_not_an_error(reference: str) -> None:
    payload = sample("charge_success")
    payload["data"]["reference"] = reference
    raw = body(payload)
    event = webhooks.verify_and_parse(raw, _signed(raw), secrets=SECRET)
    assert isinstance(event, webhooks.UnusableEvent) and event.event == "charge.success"


def test_nul_outside_the_reference_is_replaced_before_anything_is_stored() -> None:
    payload = sample("charge_success")
    payload["data"]["customer"]["first_name"] = "Bo\x00Jack"
    payload["data"]["metadata"] = {"loan_id": "L-9", "no\x00te": "a\x00b"}
    raw = body(payload)
    event, stored = webhooks.verify_and_read(raw, _signed(raw), secrets=SECRET)
    assert isinstance(event, webhooks.ChargeSuccess) and event.data.loan_id == "L-9"
    assert "\x00" not in json.dumps(stored, ensure_ascii=False)
    assert stored["data"]["metadata"] == {"loan_id": "L-9", "no\ufffdte": "a\ufffdb"}


def _nested(depth: int) -> object:
    value: object = {"leaf": True}
    for _ in range(depth):
        value = {"more": value}
    return value


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_metadata_nested_deep__the_charge_is_taken_and_the_depth_dropped(depth: int) -> None:
    payload = sample("charge_success")
    payload["data"]["metadata"] = {"loan_id": "L-3", "deep": {}}
    # built as text: json.dumps itself recurses
    raw = body(payload).replace(b'"deep":{}', b'"deep":' + b'{"more":' * depth + b"1" + b"}" * depth)
    event, stored = webhooks.verify_and_read(raw, _signed(raw), secrets=SECRET)
    assert isinstance(event, webhooks.ChargeSuccess) and event.data.loan_id == "L-3"
    level = stored["data"]["metadata"]["deep"]
    for _ in range(wire.MAX_DEPTH - 3):  # the 4th container of the body is "deep"
        level = level["more"]
    assert level == wire.DROPPED


def test_the_whole_body_nested_deep_or_not_json__is_malformed_not_a_crash() -> None:
    deep = b'{"event":"charge.success","data":' + b"[" * 1000 + b"]" * 1000 + b"}"
    for raw in (deep, b"[" * 100_000, b"{not json", b'{"event": "charge.success"', b"\xff\xfe"):
        with pytest.raises(webhooks.MalformedEvent):
            webhooks.verify_and_parse(raw, _signed(raw), secrets=SECRET)


def test_decode_is_the_standard_decoder_within_the_depth() -> None:
    for value in (sample("verify_transaction"), [1, "a", None, True, 1.5, {"k": []}], "x", 12):
        assert wire.decode(json.dumps(value).encode()) == value
