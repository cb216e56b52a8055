"""Paystack REST client: transfer recipients, transfers (with our reference), OTP finalize, transfer
and transaction verification, customers and dedicated virtual accounts.

Wire: `Authorization: Bearer <secret key>`; every answer is `{"status": bool, "message", "data"}`;
amounts are integers in the minor unit (kobo).

Retries are bounded (attempts, exponential backoff with jitter) and only where a repeat cannot
move money twice:
- reads (`verify`), and creations Paystack itself de-duplicates (a recipient for an account
  number that exists returns the existing one): transport errors, 429 and 5xx are retried;
- `initiate_transfer` always carries our reference, which Paystack keeps unique per integration:
  a repeat after a lost answer cannot create a second payout. Should the repeat be refused as a
  duplicate reference, the transfer that exists under it is fetched and returned — provided it
  is the same payout (amount and recipient); anything else is a bug on our side and raises;
- other writes (OTP finalize, customer, dedicated account) are retried only when the request
  certainly never reached Paystack (connection refused / connect timeout) or was rate-limited.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import httpx
import structlog
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from offchain.platform.logging import get_logger
from offchain.platform.settings import RailsSettings
from offchain.rails.paystack import wire
from offchain.rails.paystack.models import (
    Customer,
    DedicatedAccount,
    Recipient,
    Transaction,
    Transfer,
)

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
PAYSTACK_API = "https://api.paystack.co"
# Paystack: "a unique identifier (in lowercase) ... only -, _ and alphanumeric characters"
REFERENCE = re.compile(r"[a-z0-9_-]{1,100}")

log = get_logger(__name__)
M = TypeVar("M", bound=BaseModel)


class PaystackError(Exception):
    def __init__(
        self, message: str, *, status_code: int | None = None, code: str | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.body = body


class PaystackNotFound(PaystackError):
    """Paystack has no such resource (e.g. no transfer under a reference)."""


class PaystackRejected(PaystackError):
    """Paystack refused the request (4xx): retrying the same request will not help."""


class PaystackUnavailable(PaystackError):
    """No usable answer after the bounded retries: the outcome of a write is unknown."""


class PaystackProtocolError(PaystackError):
    """The answer does not have Paystack's documented shape."""


@dataclass(frozen=True)
class _Answer:
    """An answer read over aiohttp, with the two things this client asks of httpx's Response."""

    status_code: int
    content: bytes


_Response = httpx.Response | _Answer
# transport failures: no (usable) answer came back
_TRANSPORT_ERRORS = (httpx.TransportError, aiohttp.ClientError, TimeoutError)


class _Retryable(Exception):
    def __init__(self, response: _Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _any_failure(exc: BaseException) -> bool:
    return isinstance(exc, (*_TRANSPORT_ERRORS, _Retryable))


def _never_sent(exc: BaseException) -> bool:
    # A refused or timed-out connection carried no request; 429 means Paystack did not process it.
    if isinstance(
        exc,
        httpx.ConnectError
        | httpx.ConnectTimeout
        | aiohttp.ClientConnectorError
        | aiohttp.ConnectionTimeoutError,
    ):
        return True
    return isinstance(exc, _Retryable) and exc.response.status_code == 429


class PaystackClient:
    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        http: httpx.AsyncClient | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        attempts: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
    ) -> None:
        """`session` (aiohttp), when given, carries the requests instead of `http`: a caller that
        verifies under a burst pays about a third of httpx's CPU per request with it."""
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        if not secret_key:
            raise ValueError("a Paystack secret key is required")
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {secret_key}", "Accept": "application/json"}
        self._session = session
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()
        self._timeout = timeout
        self._aio_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout.connect, sock_read=timeout.read
        )
        self._attempts = attempts
        # jitter of the same order as the backoff: retries of many callers spread out
        self._wait = wait_exponential_jitter(multiplier=backoff_s, max=max_backoff_s, jitter=backoff_s)

    @classmethod
    def from_settings(
        cls, rails: RailsSettings, *, http: httpx.AsyncClient | None = None, **options: Any
    ) -> PaystackClient:
        """Paystack at PAYSTACK_BASE_URL, else the simulator at SIMULATOR_URL."""
        base = rails.paystack_base_url or rails.simulator_url
        if not base:
            raise PaystackUnavailable("Paystack is not configured: set PAYSTACK_BASE_URL or SIMULATOR_URL")
        return cls(base, rails.paystack_secret_key.get_secret_value(), http=http, **options)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> PaystackClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- transfers ----------------------------------------------------------------------------

    async def create_recipient(
        self,
        *,
        name: str,
        account_number: str,
        bank_code: str,
        currency: str = "NGN",
        type: str = "nuban",
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Recipient:
        body: dict[str, Any] = {
            "type": type,
            "name": name,
            "account_number": account_number,
            "bank_code": bank_code,
            "currency": currency,
        }
        if description is not None:
            body["description"] = description
        if metadata is not None:
            body["metadata"] = metadata
        data = await self._request("POST", "/transferrecipient", json=body, retry=_any_failure)
        return _model(Recipient, data)

    async def initiate_transfer(
        self,
        *,
        amount: int,
        recipient_code: str,
        reference: str,
        reason: str | None = None,
        currency: str = "NGN",
    ) -> Transfer:
        """Pay `amount` minor units from the balance to a recipient, under our own `reference`.

        Returns the transfer in status `pending` or `otp` (then call `finalize_transfer`); the
        outcome arrives as a webhook or through `verify_transfer(reference)`.
        """
        _check_amount(amount)
        if not REFERENCE.fullmatch(reference):
            raise ValueError("reference: 1-100 characters of a-z, 0-9, '-' and '_' (Paystack's rule)")
        body: dict[str, Any] = {
            "source": "balance",
            "amount": amount,
            "recipient": recipient_code,
            "reference": reference,
            "currency": currency,
        }
        if reason is not None:
            body["reason"] = reason
        try:
            data = await self._request("POST", "/transfer", json=body, retry=_any_failure)
        except PaystackRejected as exc:
            if "reference" not in exc.message.lower():
                raise
            try:
                existing = await self.verify_transfer(reference)
            except PaystackNotFound:
                raise exc from None
            same_recipient = existing.recipient_code in (None, recipient_code)
            if existing.amount != amount or existing.currency != currency or not same_recipient:
                raise PaystackRejected(
                    f"reference {reference} already names a different transfer "
                    f"({existing.amount} {existing.currency} to {existing.recipient_code})",
                    status_code=exc.status_code,
                ) from exc
            log.info("paystack.transfer_already_initiated", reference=reference, status=existing.status)
            return existing
        return _model(Transfer, data)

    async def finalize_transfer(self, *, transfer_code: str, otp: str) -> Transfer:
        data = await self._request(
            "POST",
            "/transfer/finalize_transfer",
            json={"transfer_code": transfer_code, "otp": otp},
            retry=_never_sent,
        )
        return _model(Transfer, data)

    async def verify_transfer(self, reference: str) -> Transfer:
        """The transfer under our reference, whatever its status. Raises PaystackNotFound."""
        data = await self._request("GET", f"/transfer/verify/{quote(reference, safe='')}", retry=_any_failure)
        return _model(Transfer, data)

    # -- incoming payments --------------------------------------------------------------------

    async def verify_transaction(self, reference: str) -> Transaction:
        """The charge under `reference` as Paystack recorded it: check amount, currency, status."""
        try:
            data = await self._request(
                "GET", f"/transaction/verify/{quote(reference, safe='')}", retry=_any_failure
            )
        except PaystackRejected as exc:
            # Paystack answers an unknown transaction reference with 400, not 404
            if "not found" in exc.message.lower():
                raise PaystackNotFound(exc.message, status_code=exc.status_code, body=exc.body) from exc
            raise
        return _model(Transaction, data)

    async def create_customer(
        self,
        *,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        phone: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Customer:
        body = {
            key: value
            for key, value in {
                "email": email,
                "first_name": first_name,
                "last_name": last_name,
                "phone": phone,
                "metadata": metadata,
            }.items()
            if value is not None
        }
        data = await self._request("POST", "/customer", json=body, retry=_never_sent)
        return _model(Customer, data)

    async def create_dedicated_account(
        self, *, customer: str | int, preferred_bank: str | None = None
    ) -> DedicatedAccount:
        """A dedicated virtual account (NUBAN) for a customer (code `CUS_...` or id)."""
        body: dict[str, Any] = {"customer": customer}
        if preferred_bank is not None:
            body["preferred_bank"] = preferred_bank
        data = await self._request("POST", "/dedicated_account", json=body, retry=_never_sent)
        return _model(DedicatedAccount, data)

    # -- transport ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        retry: Callable[[BaseException], bool],
    ) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(retry),
            before_sleep=lambda state: log.warning(
                "paystack.retry",
                method=method,
                path=path,
                attempt=state.attempt_number,
                error=repr(state.outcome.exception()) if state.outcome else None,
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(method, path, json)
        except _TRANSPORT_ERRORS as exc:
            raise PaystackUnavailable(f"{method} {path}: no answer from Paystack: {exc!r}") from exc
        except _Retryable as exc:
            raise _error(exc.response, PaystackUnavailable) from exc
        raise AssertionError("tenacity returns or raises")  # pragma: no cover

    async def _attempt(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        headers = dict(self._headers)
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers["X-Request-ID"] = str(request_id)
        response: _Response
        if self._session is not None:
            async with self._session.request(
                method, self._base + path, json=body, headers=headers, timeout=self._aio_timeout
            ) as answer:
                response = _Answer(answer.status, await answer.read())
        else:
            response = await self._http.request(
                method, self._base + path, json=body, headers=headers, timeout=self._timeout
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(response)
        if response.status_code == 404:
            raise _error(response, PaystackNotFound)
        if response.status_code >= 400:
            raise _error(response, PaystackRejected)
        payload = _json(response)
        if not isinstance(payload, dict) or payload.get("status") is not True or "data" not in payload:
            raise _error(response, PaystackRejected)
        return payload["data"]


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError("amount must be a positive integer of minor units (kobo)")


def _json(response: _Response) -> Any:
    # Paystack's answers echo metadata as the integration set it: read depth-bounded, never
    # with a recursive decoder (wire.decode), and storable (no U+0000)
    try:
        return wire.storable(wire.decode(response.content))
    except ValueError:
        raise PaystackProtocolError(
            f"Paystack answered HTTP {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
        ) from None


def _error(response: _Response, kind: type[PaystackError]) -> PaystackError:
    try:
        payload = wire.storable(wire.decode(response.content))
    except ValueError:
        payload = None
    message = payload.get("message") if isinstance(payload, dict) else None
    code = payload.get("code") if isinstance(payload, dict) else None
    return kind(
        f"Paystack: {message or f'HTTP {response.status_code}'}",
        status_code=response.status_code,
        code=code,
        body=payload,
    )


def _model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise PaystackProtocolError(f"{model.__name__} does not have Paystack's shape: {problems}") from None
