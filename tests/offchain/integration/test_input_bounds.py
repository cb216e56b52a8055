"""No input gives a 5xx (issue 15): each case that did, or could, now a 4xx problem+json naming
the field and the reason, or (for a signed SME event the platform would retry forever) a decided
200 `rejected`; and none of them changes any state.

On the session's PostgreSQL and Redis, through each service's app in-process.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fuzz_support import credentials, fuzz_app
from journey_support import chain_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from offchain.platform.settings import Settings
from offchain.rails.sme.events import SIGNATURE_HEADER, sign

YEAR_10000 = "9999-12-31T23:59:59-12:00"  # a valid ISO 8601 date-time, year 10000 in UTC


@pytest.fixture
def gateway(settings: Settings) -> Iterator[TestClient]:
    with TestClient(fuzz_app("gateway", settings)) as client:
        client.headers.update(credentials("gateway", "POST", "/v1/applications", settings))
        yield client


def _problem(response, status: int, field: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["request_id"] == response.headers["x-request-id"]
    if field is not None:
        fields = [error["field"] for error in body["errors"]]
        assert any(name == field or name.startswith(f"{field}.") for name in fields), body
        assert all(error["reason"] for error in body["errors"])
    return body


def _application(value: object) -> dict:
    return {
        "external_id": f"bounds-{uuid.uuid4()}",
        "borrower": {"sme_user_id": "acme-trading-ltd"},
        "amount": {"value": value, "currency": "NGN"},
        "tenor_months": 6,
        "purpose": "inventory",
    }


def _count(settings: Settings, sql: str) -> int:
    engine = create_engine(make_url(settings.database.url).set(drivername="postgresql+psycopg2"))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        (10**78, "less than or equal"),  # NUMERIC(78) overflowed: a 500 before
        (2**96, "less than or equal"),  # LoanBook packs principal into 96 bits
        (True, "valid integer"),
        ("500000", "valid integer"),
        (1.5, "whole number"),
        (1e20, "without a fraction"),  # a float that big no longer names one integer
        (0, "greater than 0"),
    ],
)
def test_amount_out_of_bounds__422_naming_it(gateway, settings, value, reason_part) -> None:
    before = _count(settings, "SELECT count(*) FROM caas_applications")
    body = _problem(gateway.post("/v1/applications", json=_application(value)), 422, "body.amount.value")
    assert any(reason_part in e["reason"] for e in body["errors"]), body
    assert _count(settings, "SELECT count(*) FROM caas_applications") == before


@pytest.mark.parametrize("value", [2**96 - 1, 500_000_00.0])
def test_amount_at_the_bound_or_spelled_as_whole_float__taken(gateway, value) -> None:
    answer = gateway.post("/v1/applications", json=_application(value))
    assert answer.status_code == 201, answer.text
    assert answer.json()["amount"]["value"] == int(value)


def _raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor(payload: object) -> str:
    return _raw_cursor(json.dumps(payload))


@pytest.mark.parametrize("path", ["/v1/applications", "/v1/loans", "/v1/events"])
@pytest.mark.parametrize(
    "cursor",
    [
        _cursor([YEAR_10000, str(uuid.uuid4())]),  # a 500 before (OverflowError in the driver)
        _cursor(["2026-01-01T00:00:00", str(uuid.uuid4())]),  # no offset: not one we issue
        _raw_cursor("[" * 150 + "]" * 150),
        _cursor([1, 2, 3]),
        "bm90LWpzb24",  # base64 of "not-json"
        "abc",  # not even base64
    ],
    ids=["year-10000", "no-offset", "150-deep", "wrong-shape", "not-json", "not-base64"],
)
def test_bad_cursor__400_naming_it(gateway, path, cursor) -> None:
    _problem(gateway.get(path, params={"cursor": cursor}), 400, "cursor")


@pytest.mark.parametrize("path", ["/v1/applications", "/v1/loans", "/v1/events"])
@pytest.mark.parametrize(
    "cursor",
    [
        _raw_cursor("[" * 5_000 + "]" * 5_000),  # 5,000 deep: a 500 before (RecursionError)
        "!!not base64!!",
        "a" * 513,
    ],
    ids=["5000-deep", "not-base64-alphabet", "too-long"],
)
def test_cursor_outside_its_shape__422_naming_it(gateway, path, cursor) -> None:
    _problem(gateway.get(path, params={"cursor": cursor}), 422, "query.cursor")


@pytest.mark.parametrize("since", [YEAR_10000, "0.5", "1700000000", "not a date", "0000-01-01T00:00:00Z"])
def test_events_since_out_of_range__422(gateway, since) -> None:
    _problem(gateway.get("/v1/events", params={"since": since}), 422, "query.since")


def test_events_since_a_real_time__200(gateway) -> None:
    assert gateway.get("/v1/events", params={"since": "2026-01-01T00:00:00"}).status_code == 200
    assert gateway.get("/v1/events", params={"since": "2026-01-01T00:00:00+01:00"}).status_code == 200


def _sme_delivery(settings: Settings, body: bytes) -> dict[str, str]:
    secret = settings.rails.sme_events_secret.get_secret_value()
    return {
        SIGNATURE_HEADER: sign(body, secret, timestamp=int(time.time())),
        "content-type": "application/json",
    }


def _kyc_event(user_id: str) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "sme.kyc.verified",
            "created_at": "2026-12-01T10:00:00Z",
            "data": {"user_id": user_id, "kyc_status": "verified"},
        }
    ).encode()


def _payment_event(amount: int) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "sme.payment.received",
            "created_at": "2026-12-01T10:00:00Z",
            "data": {
                "reference": f"ref-{uuid.uuid4().hex}",
                "amount": amount,
                "currency": "NGN",
                "method": "wallet",
            },
        }
    ).encode()


def _nested(depth: int) -> bytes:
    inner = "[" * depth + "]" * depth
    return (
        '{"id": "evt_deep", "type": "sme.kyc.verified", "created_at": "2026-12-01T10:00:00Z", '
        f'"data": {{"user_id": "u1", "extra": {inner}}}}}'
    ).encode()


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        (_kyc_event("acme\x00ltd"), "NUL"),  # a 500 before: PostgreSQL jsonb holds no U+0000
        (_nested(1_000), "nested deeper"),
        (_nested(5_000), "nested deeper"),
        (b'{"id": "' + b"e" * 151 + b'", "type": "sme.kyc.verified", "data": {}}', "at most 150"),
        (b"not json", "not JSON"),
        (_payment_event(2**63), "less than or equal"),  # past the ledger's BIGINT
    ],
    ids=["nul-user-id", "1000-deep", "5000-deep", "id-too-long", "not-json", "amount-past-bigint"],
)
def test_signed_sme_event_never_processable__200_rejected_once(gateway, settings, body, reason_part) -> None:
    before = _count(
        settings,
        "SELECT count(*) FROM caas_outbox WHERE topic LIKE 'sme.%' AND topic <> 'sme.event.rejected'",
    )
    rejected_before = _count(settings, "SELECT count(*) FROM caas_outbox WHERE topic = 'sme.event.rejected'")
    for _ in range(2):  # the platform retries whatever was not a 2xx: this was, twice
        answer = gateway.post("/v1/events/sme", content=body, headers=_sme_delivery(settings, body))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "rejected" and reason_part in answer.json()["reason"]
    taken = _count(
        settings,
        "SELECT count(*) FROM caas_outbox WHERE topic LIKE 'sme.%' AND topic <> 'sme.event.rejected'",
    )
    assert taken == before
    # one record for operators, however often it is delivered
    rejected = _count(settings, "SELECT count(*) FROM caas_outbox WHERE topic = 'sme.event.rejected'")
    assert rejected == rejected_before + 1


def test_unsigned_sme_event__401(gateway) -> None:
    body = _kyc_event("acme\x00ltd")
    _problem(gateway.post("/v1/events/sme", content=body, headers={"content-type": "application/json"}), 401)


def test_deeply_nested_request_body__4xx_problem(gateway) -> None:
    deep = "[" * 5_000 + "]" * 5_000
    body = json.dumps(_application(1_000_00))[:-1] + f', "extra": {deep}}}'
    answer = gateway.post("/v1/applications", content=body, headers={"content-type": "application/json"})
    _problem(answer, 400)  # the parser gives up: "could not be decoded"
    within = "[" * 500 + "]" * 500
    body = json.dumps(_application(1_000_00))[:-1] + f', "extra": {within}}}'
    answer = gateway.post("/v1/applications", content=body, headers={"content-type": "application/json"})
    _problem(answer, 422, "body.extra")


@pytest.mark.parametrize(
    ("field", "value"),
    [("url", "https://example.com/\x00hook"), ("description", "a\x00b"), ("event_types", ["nope"])],
)
def test_webhook_endpoint_bad_field__422(gateway, field, value) -> None:
    body = {"url": "https://example.com/hook", "event_types": ["*"], field: value}
    _problem(gateway.post("/v1/webhook-endpoints", json=body), 422, f"body.{field}")


def test_405_lists_every_method_of_the_path(gateway) -> None:
    answer = gateway.request("OPTIONS", "/v1/webhook-endpoints")
    _problem(answer, 405)
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "POST"}
    # /v1/events/sme is the SME intake (POST), not an event id
    answer = gateway.get("/v1/events/sme")
    _problem(answer, 405)
    assert answer.headers["allow"] == "POST"


def test_odd_length_hex__422(settings) -> None:
    with TestClient(fuzz_app("orchestration", settings)) as client:
        client.headers.update(credentials("orchestration", "POST", "/v1/tx-intents", settings))
        body = {"idempotency_key": f"k-{uuid.uuid4()}", "to": "0x" + "11" * 20, "data": "0xabc"}
        _problem(client.post("/v1/tx-intents", json=body), 422, "body.data")
        body |= {"data": "0x", "value": 2**256}
        _problem(client.post("/v1/tx-intents", json=body), 422, "body.value")


def test_statement_upload_nested_too_deep__422(settings) -> None:
    with TestClient(fuzz_app("underwriting", settings)) as client:
        client.headers.update(credentials("underwriting", "POST", "/v1/bank-statements/analyze", settings))
        body = b'{"transactions": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
        answer = client.post(
            "/v1/bank-statements/analyze", content=body, headers={"content-type": "application/json"}
        )
        _problem(answer, 422, "body")


def test_ledger_run_id_past_bigint__422(settings) -> None:
    with TestClient(fuzz_app("ledger", settings)) as client:
        client.headers.update(credentials("ledger", "GET", "/v1/ledger/reconciliation", settings))
        _problem(client.get("/v1/ledger/reconciliation", params={"run_id": 2**70}), 422, "query.run_id")


@pytest.fixture
def collections(settings: Settings, anvil_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with_chain = chain_settings(
        database_url=settings.database.url,
        redis_url=settings.redis.url,
        stream_prefix=settings.events.stream_prefix,
        anvil_url=anvil_url,
        out_dir=tmp_path,
    )
    with TestClient(fuzz_app("collections", with_chain)) as client:
        client.headers.update(credentials("collections", "POST", "/v1/collections/cob-runs", with_chain))
        yield client


@pytest.mark.parametrize("business_date", ["1969-12-31", "0041-02-25", "0001-01-01"])
def test_close_of_business_before_unix_time__422(collections, business_date) -> None:
    # its day-end is read from the LoanBook as unix seconds: with loans in repayment, a 500 from
    # the ABI encoder before (found by the all-services fuzz run)
    answer = collections.post("/v1/collections/cob-runs", json={"business_date": business_date})
    _problem(answer, 422, "body.business_date")
    epoch = collections.post("/v1/collections/cob-runs", json={"business_date": "1970-01-01"})
    assert epoch.status_code == 200, epoch.text


def test_dead_letter_id_past_uint64__422(settings) -> None:
    # Redis stream ids are two unsigned 64-bit numbers: XRANGE refused the id (a 500, fuzz-found)
    path = "/v1/operations/dead-letters/{group}/{message_id}/requeue"
    with TestClient(fuzz_app("gateway", settings)) as client:
        client.headers.update(credentials("gateway", "POST", path, settings))
        answer = client.post("/v1/operations/dead-letters/ledger/42174393733582031563-3/requeue")
        _problem(answer, 422, "path.message_id")
