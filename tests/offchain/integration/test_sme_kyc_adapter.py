"""The SME KYC adapter against a real local HTTP server: shapes, timeout, retries, circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
import structlog
from kyc_http_server import Behaviour, ThreadedServer, create_app

from offchain.domain.underwriting.policy import KycStatus
from offchain.rails.sme.kyc import (
    KycNotFound,
    KycProtocolError,
    KycRecord,
    KycRequestRejected,
    KycUnavailable,
    SmeKycClient,
)

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.02}


@pytest.fixture(scope="module")
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture(scope="module")
def server(behaviour: Behaviour) -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(behaviour)) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(behaviour: Behaviour) -> None:
    behaviour.reset()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def client(server: ThreadedServer, http: httpx.AsyncClient, **options: object) -> SmeKycClient:
    return SmeKycClient(server.url, http=http, **{**FAST, **options})  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_get_kyc__verified_user__full_record_with_credit_extension(server, http, behaviour) -> None:
    record = await client(server, http).get_kyc("sme-123")

    assert record.user_id == "sme-123"
    assert record.kyc_status is KycStatus.VERIFIED
    assert record.risk_score == 10 and record.credit_score == 700
    assert record.verification_date is not None and record.verification_date.year == 2025
    assert [d["type"] for d in record.documents] == ["cac_certificate", "bvn"]
    assert record.employment_verification == {"verified": True, "yearsInBusiness": 5}
    summary = record.summary(date(2025, 7, 1))
    assert summary.status is KycStatus.VERIFIED and summary.years_in_business == Decimal(5)
    assert behaviour.calls == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("user_id", "status"),
    [("kyc-pending-1", KycStatus.PENDING), ("kyc-rejected-1", KycStatus.REJECTED)],
)
async def test_get_kyc__id_conventions(server, http, user_id, status) -> None:
    record = await client(server, http).get_kyc(user_id)
    assert record.kyc_status is status
    assert record.summary(date(2025, 7, 1)).years_in_business is None  # unverified employment


@pytest.mark.asyncio
async def test_get_kyc__unknown_user__not_found_without_retry(server, http, behaviour) -> None:
    with pytest.raises(KycNotFound):
        await client(server, http).get_kyc("unknown-7")
    assert behaviour.calls == 1


@pytest.mark.asyncio
async def test_get_kyc__user_id_is_one_path_segment(server, http, behaviour) -> None:
    # a crafted id must not reach another path (e.g. the bank-statement endpoint)
    with pytest.raises(KycNotFound):
        await client(server, http).get_kyc("unknown-x/bank-statement")


@pytest.mark.asyncio
async def test_aml_screen__clear_hit_and_none(server, http) -> None:
    adapter = client(server, http)
    clear = await adapter.get_aml_screen("sme-1")
    hit = await adapter.get_aml_screen("listed-1")
    assert clear is not None and not clear.hit and clear.lists == ()
    assert hit is not None and hit.hit and hit.lists[0]["list"] == "OFAC SDN"
    assert await adapter.get_aml_screen("unscreened-1") is None
    record = await adapter.get_kyc("listed-1")
    assert record.summary(date(2025, 7, 1), hit).sanctions_hit
    assert not record.summary(date(2025, 7, 1)).sanctions_hit


@pytest.mark.asyncio
async def test_bank_statement__healthy_and_thin_file(server, http) -> None:
    adapter = client(server, http)
    transactions = await adapter.get_bank_statement("sme-123")
    assert transactions is not None and len(transactions) == 6 * 8
    assert transactions[0].date == date(2025, 1, 3) and transactions[0].amount == 50_000_000
    assert await adapter.get_bank_statement("thin-file-9") is None


@pytest.mark.asyncio
async def test_request_id_is_passed_on(server, http, behaviour) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-abc")
    try:
        await client(server, http).get_kyc("sme-1")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    assert behaviour.request_ids == ["req-abc"]


@pytest.mark.asyncio
async def test_transient_5xx__retried_then_succeeds(server, http, behaviour) -> None:
    behaviour.fail_next = 2
    record = await client(server, http, attempts=3).get_kyc("sme-1")
    assert record.user_id == "sme-1"
    assert behaviour.calls == 3


@pytest.mark.asyncio
async def test_5xx__bounded_retries_then_unavailable(server, http, behaviour) -> None:
    behaviour.fail_next = 10
    with pytest.raises(KycUnavailable, match="3 attempt"):
        await client(server, http, attempts=3).get_kyc("sme-1")
    assert behaviour.calls == 3


@pytest.mark.asyncio
async def test_timeout__each_attempt_bounded(server, http, behaviour) -> None:
    behaviour.delay_s = 1.0
    adapter = client(server, http, attempts=2, timeout=httpx.Timeout(0.15))
    started = time.monotonic()
    with pytest.raises(KycUnavailable):
        await adapter.get_kyc("sme-1")
    elapsed = time.monotonic() - started
    assert elapsed < 0.9, "a timed-out attempt must not wait for the slow answer"
    assert behaviour.calls == 2


@pytest.mark.asyncio
async def test_4xx__not_retried(server, http, behaviour) -> None:
    behaviour.fail_next, behaviour.fail_status = 1, 401
    with pytest.raises(KycRequestRejected):
        await client(server, http).get_kyc("sme-1")
    assert behaviour.calls == 1


@pytest.mark.asyncio
async def test_circuit_opens_fails_fast_then_half_open_recovers(server, http, behaviour) -> None:
    adapter = client(server, http, attempts=1, failure_threshold=2, recovery_s=0.3)
    behaviour.fail_next = 100
    for _ in range(2):
        with pytest.raises(KycUnavailable, match="attempt"):
            await adapter.get_kyc("sme-1")
    assert await adapter.circuit_state() == "opened"

    # open: no request reaches the server
    with pytest.raises(KycUnavailable, match="circuit is open"):
        await adapter.get_kyc("sme-1")
    assert behaviour.calls == 2

    # after the recovery time one trial call goes through; it fails, so the circuit opens again
    await asyncio.sleep(0.35)
    with pytest.raises(KycUnavailable, match="attempt"):
        await adapter.get_kyc("sme-1")
    assert behaviour.calls == 3
    with pytest.raises(KycUnavailable, match="circuit is open"):
        await adapter.get_kyc("sme-1")

    # the upstream recovers: the next trial call succeeds and closes the circuit
    behaviour.fail_next = 0
    await asyncio.sleep(0.35)
    assert (await adapter.get_kyc("sme-1")).user_id == "sme-1"
    assert await adapter.circuit_state() == "closed"
    assert (await adapter.get_kyc("sme-2")).user_id == "sme-2"


@pytest.mark.asyncio
async def test_not_found_does_not_count_against_the_circuit(server, http, behaviour) -> None:
    adapter = client(server, http, attempts=1, failure_threshold=2, recovery_s=30)
    for _ in range(5):
        with pytest.raises(KycNotFound):
            await adapter.get_kyc("unknown-1")
    assert await adapter.circuit_state() == "closed"


@pytest.mark.asyncio
async def test_connection_refused__unavailable(http) -> None:
    adapter = SmeKycClient("http://127.0.0.1:9", http=http, attempts=2, **FAST)  # type: ignore[arg-type]
    with pytest.raises(KycUnavailable):
        await adapter.get_kyc("sme-1")


def test_record_from_wire__rejects_bad_shapes() -> None:
    good = {"userId": "u", "kycStatus": "verified"}
    assert KycRecord.from_wire(good).documents == ()
    for bad in (
        [],
        {"kycStatus": "verified"},
        {**good, "kycStatus": "maybe"},
        {**good, "riskScore": "high"},
        {**good, "documents": "none"},
        {**good, "verificationDate": "yesterday"},
        {**good, "employmentVerification": []},
    ):
        with pytest.raises(KycProtocolError):
            KycRecord.from_wire(bad)


def test_years_in_business__from_start_date_when_verified() -> None:
    record = KycRecord.from_wire(
        {
            "userId": "u",
            "kycStatus": "verified",
            "employmentVerification": {"status": "verified", "businessStartDate": "2022-07-01"},
        }
    )
    assert record.years_in_business(date(2025, 7, 1)) == Decimal("3.00")
