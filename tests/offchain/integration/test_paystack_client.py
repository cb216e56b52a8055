"""The Paystack client against the simulator on a real port: recipients, transfers by our own
reference (idempotent, never a second payout), OTP, verification, failures, bounded retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
from simulator_support import PAYSTACK_SECRET, Receiver, running_simulator

from offchain.rails.paystack.client import (
    PaystackClient,
    PaystackNotFound,
    PaystackRejected,
    PaystackUnavailable,
)
from offchain.rails.paystack.models import Transfer, TransferStatus

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    for sim_url, _ in running_simulator(receiver):
        yield sim_url, receiver


@pytest.fixture
def sim(world: tuple[str, Receiver]) -> str:
    url, receiver = world
    httpx.post(f"{url}/simulate/reset", timeout=5).raise_for_status()
    httpx.post(f"{url}/simulate/config", json={"duplicate_reference": "return"}, timeout=5).raise_for_status()
    receiver.reset()
    return url


def client(sim: str, **options: object) -> PaystackClient:
    return PaystackClient(sim, PAYSTACK_SECRET, backoff_s=0.01, max_backoff_s=0.05, **options)  # type: ignore[arg-type]


async def _control(sim: str, method: str, path: str, body: dict | None = None) -> dict:
    async with httpx.AsyncClient(base_url=sim, timeout=5) as http:
        response = await http.request(method, path, json=body)
    assert response.status_code < 300, response.text
    return response.json()


async def _balance(sim: str) -> int:
    return (await _control(sim, "GET", "/simulate/config"))["balances"]["NGN"]


async def _recipient(paystack: PaystackClient) -> str:
    recipient = await paystack.create_recipient(name="Ada Obi", account_number="0123456789", bank_code="058")
    return recipient.recipient_code


async def _conclusive(paystack: PaystackClient, reference: str, timeout_s: float = 5.0) -> Transfer:
    deadline = time.monotonic() + timeout_s
    while True:
        transfer = await paystack.verify_transfer(reference)
        if transfer.status.conclusive or time.monotonic() > deadline:
            return transfer
        await asyncio.sleep(0.02)


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Paystack processes the request, but its answer never reaches us (a read timeout)."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.path = path
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == self.path and not self.lost:
            await response.aread()
            await response.aclose()
            self.lost += 1
            raise httpx.ReadTimeout("answer lost on the way back", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_recipient_for_a_known_account_is_the_existing_one(sim: str) -> None:
    async with client(sim) as paystack:
        first = await paystack.create_recipient(name="Ada Obi", account_number="0123456789", bank_code="058")
        again = await paystack.create_recipient(name="Ada Obi", account_number="0123456789", bank_code="058")
        other = await paystack.create_recipient(name="Ada Obi", account_number="0123456789", bank_code="044")

    assert first.recipient_code == again.recipient_code and first.recipient_code.startswith("RCP_")
    assert other.recipient_code != first.recipient_code
    assert first.details.bank_name == "Guaranty Trust Bank" and first.details.account_number == "0123456789"


async def test_same_reference_is_one_payout_even_when_sent_concurrently(sim: str) -> None:
    opening = await _balance(sim)
    async with client(sim) as paystack:
        code = await _recipient(paystack)
        first = await paystack.initiate_transfer(
            amount=1_500_000, recipient_code=code, reference="loan-7f3a-payout-1", reason="loan payout"
        )
        repeats = await asyncio.gather(
            *(
                paystack.initiate_transfer(
                    amount=1_500_000, recipient_code=code, reference="loan-7f3a-payout-1"
                )
                for _ in range(10)
            )
        )
        settled = await _conclusive(paystack, "loan-7f3a-payout-1")

    assert first.status is TransferStatus.PENDING and first.transfer_code.startswith("TRF_")
    assert {t.transfer_code for t in repeats} == {first.transfer_code}
    assert settled.status is TransferStatus.SUCCESS and settled.recipient_code == code
    assert opening - await _balance(sim) == 1_500_000  # debited once
    assert len(await _control(sim, "GET", "/simulate/transfers")) == 1


async def test_reference_reused_for_another_payout_is_refused(sim: str) -> None:
    async with client(sim) as paystack:
        code = await _recipient(paystack)
        await paystack.initiate_transfer(amount=100_000, recipient_code=code, reference="loan-1-payout-0001")
        with pytest.raises(PaystackRejected, match="different transfer"):
            await paystack.initiate_transfer(
                amount=999_999, recipient_code=code, reference="loan-1-payout-0001"
            )


@pytest.mark.parametrize("duplicates", ["return", "reject"])
async def test_lost_answer_is_retried_with_the_same_reference_without_a_second_payout(
    sim: str, duplicates: str
) -> None:
    # whether Paystack answers a repeated reference with the transfer or with "duplicate"
    await _control(sim, "POST", "/simulate/config", {"duplicate_reference": duplicates})
    opening = await _balance(sim)
    transport = LoseFirstAnswer("/transfer")
    async with httpx.AsyncClient(transport=transport) as http, client(sim, http=http) as paystack:
        code = await _recipient(paystack)
        transfer = await paystack.initiate_transfer(
            amount=250_000, recipient_code=code, reference="loan-lost-answer-01"
        )
        settled = await _conclusive(paystack, "loan-lost-answer-01")

    assert transport.lost == 1
    assert transfer.reference == "loan-lost-answer-01" and settled.status is TransferStatus.SUCCESS
    assert opening - await _balance(sim) == 250_000
    assert len(await _control(sim, "GET", "/simulate/transfers")) == 1


async def test_otp_flow(sim: str) -> None:
    await _control(sim, "POST", "/simulate/scenario", {"transfers": [{"otp": True}]})
    async with client(sim) as paystack:
        code = await _recipient(paystack)
        transfer = await paystack.initiate_transfer(
            amount=300_000, recipient_code=code, reference="otp-payout-00001"
        )
        assert transfer.status is TransferStatus.OTP and not transfer.status.conclusive
        await asyncio.sleep(0.1)
        assert (await paystack.verify_transfer("otp-payout-00001")).status is TransferStatus.OTP  # waits

        with pytest.raises(PaystackRejected, match="Invalid OTP"):
            await paystack.finalize_transfer(transfer_code=transfer.transfer_code, otp="000000")
        finalized = await paystack.finalize_transfer(transfer_code=transfer.transfer_code, otp="123456")
        assert finalized.status is TransferStatus.PENDING
        assert (await _conclusive(paystack, "otp-payout-00001")).status is TransferStatus.SUCCESS
        with pytest.raises(PaystackRejected, match="not currently awaiting OTP"):
            await paystack.finalize_transfer(transfer_code=transfer.transfer_code, otp="123456")


async def test_failed_and_stalled_transfers(sim: str) -> None:
    opening = await _balance(sim)
    await _control(
        sim, "POST", "/simulate/scenario", {"transfers": [{"outcome": "failed"}, {"outcome": "stall"}]}
    )
    async with client(sim) as paystack:
        code = await _recipient(paystack)
        await paystack.initiate_transfer(amount=400_000, recipient_code=code, reference="payout-will-fail-1")
        await paystack.initiate_transfer(amount=400_000, recipient_code=code, reference="payout-will-stall")
        failed = await _conclusive(paystack, "payout-will-fail-1")
        await asyncio.sleep(0.15)
        stalled = await paystack.verify_transfer("payout-will-stall")
        assert failed.status is TransferStatus.FAILED and failed.status.conclusive
        assert failed.failures and not failed.status.paid_out
        assert stalled.status is TransferStatus.PENDING and not stalled.status.conclusive
        assert opening - await _balance(sim) == 400_000  # the failed one was refunded

        await _control(sim, "POST", "/simulate/transfers/payout-will-stall/resolve", {"outcome": "success"})
        assert (await _conclusive(paystack, "payout-will-stall")).status is TransferStatus.SUCCESS


async def test_verify_transaction_after_a_charge(sim: str) -> None:
    charged = await _control(
        sim, "POST", "/simulate/charge", {"amount": 750_000, "currency": "NGN", "loan_id": "L-42"}
    )
    async with client(sim) as paystack:
        transaction = await paystack.verify_transaction(charged["reference"])
        with pytest.raises(PaystackNotFound):
            await paystack.verify_transaction("no-such-charge")
        with pytest.raises(PaystackNotFound):
            await paystack.verify_transfer("no-such-transfer")

    assert (transaction.amount, transaction.currency, transaction.succeeded) == (750_000, "NGN", True)
    assert transaction.loan_id == "L-42" and transaction.fees is not None


async def test_wrong_key_is_refused_and_unreachable_paystack_gives_up(sim: str) -> None:
    async with PaystackClient(sim, "sk_test_not_ours") as wrong:
        with pytest.raises(PaystackRejected) as refused:
            await wrong.verify_transfer("anything")
    assert refused.value.status_code == 401

    started = time.monotonic()
    async with PaystackClient("http://127.0.0.1:1", PAYSTACK_SECRET, attempts=3, backoff_s=0.01) as down:
        with pytest.raises(PaystackUnavailable):
            await down.verify_transfer("anything")
    assert time.monotonic() - started < 2


async def test_arguments_are_checked_before_anything_is_sent(sim: str) -> None:
    async with client(sim) as paystack:
        for amount in (0, -5, 10.5, True):
            with pytest.raises(ValueError, match="amount"):
                await paystack.initiate_transfer(
                    amount=amount, recipient_code="RCP_x", reference="ok-ref-000001"
                )  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="reference"):
            await paystack.initiate_transfer(amount=100, recipient_code="RCP_x", reference="Upper Case!")
    assert await _control(sim, "GET", "/simulate/transfers") == []


async def test_over_an_aiohttp_session__same_answers_refusals_and_give_up(sim: str) -> None:
    # the transport repayment's intake verifies with: the same models, errors and retries
    charged = await _control(
        sim, "POST", "/simulate/charge", {"amount": 420_000, "currency": "NGN", "loan_id": "L-7"}
    )
    async with aiohttp.ClientSession() as session:
        async with client(sim, session=session) as paystack:
            transaction = await paystack.verify_transaction(charged["reference"])
            with pytest.raises(PaystackNotFound):
                await paystack.verify_transaction("no-such-charge")
            transfer = await paystack.initiate_transfer(
                amount=5_000, recipient_code=await _recipient(paystack), reference="aio-payout-0001"
            )
            assert (await _conclusive(paystack, "aio-payout-0001")).status is TransferStatus.SUCCESS
        async with PaystackClient(sim, "sk_test_not_ours", session=session) as wrong:
            with pytest.raises(PaystackRejected) as refused:
                await wrong.verify_transaction(charged["reference"])
        started = time.monotonic()
        async with PaystackClient(
            "http://127.0.0.1:1", PAYSTACK_SECRET, attempts=3, backoff_s=0.01, session=session
        ) as down:
            with pytest.raises(PaystackUnavailable):
                await down.verify_transaction("anything")
        assert time.monotonic() - started < 2
        assert not session.closed  # the caller's session: the client does not close it

    assert (transaction.amount, transaction.currency, transaction.succeeded) == (420_000, "NGN", True)
    assert transaction.loan_id == "L-7"
    assert (transfer.amount, transfer.reference) == (5_000, "aio-payout-0001")
    assert refused.value.status_code == 401
