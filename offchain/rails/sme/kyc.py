"""SME KYC adapter: the SME platform's KYC record and bank-statement history of a user.

Wire (the SME platform, and the simulator that mirrors it):

    GET {base}/sme/kyc/{user_id}
      200 {"userId", "kycStatus": "verified"|"pending"|"rejected", "documents": [...],
           "verificationDate": ISO 8601 | null, "riskScore": 0..100 | null,
           "creditScore": int | null, "employmentVerification": {...} | null,
           "incomeVerification": {...} | null, "bankStatementAnalysis": {...} | null}
      404 unknown user
    GET {base}/sme/kyc/{user_id}/bank-statement
      200 {"transactions": [{"date", "amount", "balance"?, "description"?}, ...]} (or the bare list;
          an empty list means no bank history)
      404 no bank history
    GET {base}/sme/aml/{user_id}
      200 {"userId", "status": "clear"|"hit", "lists": [{"list", "matchedName", "matchScore"}], ...}
      404 no screen on record

Resilience: each call has a timeout; transport errors, 429 and 5xx are retried a bounded number of
times with exponential backoff and jitter (tenacity); a circuit breaker (purgatory) opens after
`failure_threshold` consecutive failed calls — a call counts once, after its retries — and fails
fast with `KycUnavailable` until `recovery_s` has passed, when one call is let through (half-open):
success closes the circuit, failure opens it again. Answers that are not outages (404, other 4xx,
a malformed body) raise at once and do not count against the circuit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from offchain.domain.underwriting.bank_statement import StatementError, Transaction, parse_transactions
from offchain.domain.underwriting.policy import KycStatus, KycSummary
from offchain.platform.logging import get_logger
from offchain.platform.settings import RailsSettings

CIRCUIT = "sme-kyc"
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

log = get_logger(__name__)

_STATUSES = {
    "verified": KycStatus.VERIFIED,
    "pending": KycStatus.PENDING,
    "rejected": KycStatus.REJECTED,
}


class KycError(Exception):
    pass


class KycNotFound(KycError):
    """The SME platform does not know the user."""


class KycUnavailable(KycError):
    """The SME platform did not answer usefully in time (after retries) or the circuit is open."""


class KycRequestRejected(KycError):
    """A 4xx other than 404: our request or credentials are wrong; retrying will not help."""


class KycProtocolError(KycError):
    """The answer does not have the documented shape."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class _Retryable(Exception):
    """A 429/5xx answer: worth another attempt."""


def _optional_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KycProtocolError(f"{key} must be a number")
    return int(value)


def _optional_object(data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise KycProtocolError(f"{key} must be an object")
    return value


@dataclass(frozen=True)
class KycRecord:
    user_id: str
    kyc_status: KycStatus
    documents: tuple[dict[str, Any], ...]
    verification_date: datetime | None
    risk_score: int | None
    credit_score: int | None
    employment_verification: dict[str, Any] | None
    income_verification: dict[str, Any] | None
    bank_statement_analysis: dict[str, Any] | None

    @classmethod
    def from_wire(cls, data: Any) -> KycRecord:
        if not isinstance(data, dict):
            raise KycProtocolError("KYC answer must be a JSON object")
        user_id, status = data.get("userId"), data.get("kycStatus")
        if not isinstance(user_id, str) or not user_id:
            raise KycProtocolError("userId must be a non-empty string")
        if not isinstance(status, str) or status.lower() not in _STATUSES:
            raise KycProtocolError(f"kycStatus must be one of {', '.join(_STATUSES)}")
        documents = data.get("documents") or []
        if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
            raise KycProtocolError("documents must be a list of objects")
        verified_at = data.get("verificationDate")
        try:
            verification_date = (
                datetime.fromisoformat(verified_at.replace("Z", "+00:00"))
                if isinstance(verified_at, str)
                else None
            )
        except ValueError:
            raise KycProtocolError("verificationDate must be ISO 8601") from None
        return cls(
            user_id=user_id,
            kyc_status=_STATUSES[status.lower()],
            documents=tuple(documents),
            verification_date=verification_date,
            risk_score=_optional_int(data, "riskScore"),
            credit_score=_optional_int(data, "creditScore"),
            employment_verification=_optional_object(data, "employmentVerification"),
            income_verification=_optional_object(data, "incomeVerification"),
            bank_statement_analysis=_optional_object(data, "bankStatementAnalysis"),
        )

    def years_in_business(self, as_of: date) -> Decimal | None:
        """Verified years in business, from `yearsInBusiness` or a start date; None if unverified."""
        ev = self.employment_verification or {}
        if not (ev.get("verified") is True or str(ev.get("status", "")).lower() == "verified"):
            return None
        years = ev.get("yearsInBusiness")
        if isinstance(years, int | float) and not isinstance(years, bool) and years >= 0:
            try:
                return Decimal(str(years))
            except InvalidOperation:
                return None
        for key in ("businessStartDate", "startDate", "employedSince"):
            start = ev.get(key)
            if isinstance(start, str):
                try:
                    since = date.fromisoformat(start[:10])
                except ValueError:
                    continue
                days = max(0, (as_of - since).days)
                return (Decimal(days) / Decimal("365.25")).quantize(Decimal("0.01"))
        return None

    def summary(self, as_of: date, screen: AmlScreen | None = None) -> KycSummary:
        """The policy's view; without an AML screen only the risk score speaks for screening."""
        return KycSummary(
            status=self.kyc_status,
            risk_score=self.risk_score,
            sanctions_hit=screen.hit if screen else False,
            years_in_business=self.years_in_business(as_of),
            credit_score=self.credit_score,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "kycStatus": self.kyc_status.value,
            "documents": list(self.documents),
            "verificationDate": self.verification_date.isoformat() if self.verification_date else None,
            "riskScore": self.risk_score,
            "creditScore": self.credit_score,
            "employmentVerification": self.employment_verification,
            "incomeVerification": self.income_verification,
            "bankStatementAnalysis": self.bank_statement_analysis,
        }


@dataclass(frozen=True)
class AmlScreen:
    status: str  # "clear" | "hit"
    lists: tuple[dict[str, Any], ...]
    screened_at: datetime | None

    @property
    def hit(self) -> bool:
        return self.status == "hit"

    @classmethod
    def from_wire(cls, data: Any) -> AmlScreen:
        if not isinstance(data, dict) or data.get("status") not in ("clear", "hit"):
            raise KycProtocolError('AML screen must be an object with status "clear" or "hit"')
        lists = data.get("lists") or []
        if not isinstance(lists, list) or not all(isinstance(item, dict) for item in lists):
            raise KycProtocolError("AML screen lists must be a list of objects")
        screened_at = data.get("screenedAt")
        try:
            when = (
                datetime.fromisoformat(screened_at.replace("Z", "+00:00"))
                if isinstance(screened_at, str)
                else None
            )
        except ValueError:
            raise KycProtocolError("screenedAt must be ISO 8601") from None
        return cls(status=data["status"], lists=tuple(lists), screened_at=when)


class SmeKycClient:
    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        attempts: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        failure_threshold: int = 5,
        recovery_s: float = 30.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self._base = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()
        self._timeout = timeout
        self._attempts = attempts
        # backoff_s, 2*backoff_s, ... plus up to backoff_s of jitter, never above max_backoff_s
        self._wait = wait_exponential_jitter(multiplier=backoff_s, jitter=backoff_s, max=max_backoff_s)
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=failure_threshold,
            default_ttl=recovery_s,
            exclude=[KycNotFound, KycRequestRejected, KycProtocolError],
        )

    @classmethod
    def from_settings(cls, rails: RailsSettings, *, http: httpx.AsyncClient | None = None) -> SmeKycClient:
        base = rails.sme_service_urls()["kyc"]
        if not base:
            raise KycUnavailable("SME KYC is not configured: set SME_KYC_URL or SIMULATOR_URL")
        return cls(base, http=http)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def circuit_state(self) -> str:
        """closed | opened | half-opened: for health reporting."""
        return (await self._breakers.get_breaker(CIRCUIT)).context.state

    async def get_kyc(self, user_id: str) -> KycRecord:
        response = await self._call(f"/sme/kyc/{quote(user_id, safe='')}")
        if response is None:
            raise KycNotFound(f"SME KYC has no user {user_id!r}")
        return KycRecord.from_wire(_json(response))

    async def get_bank_statement(self, user_id: str) -> list[Transaction] | None:
        """The user's transactions, or None when the platform has no bank history for them."""
        response = await self._call(f"/sme/kyc/{quote(user_id, safe='')}/bank-statement")
        if response is None:
            return None
        body = _json(response)
        records = body.get("transactions") if isinstance(body, dict) else body
        if records == []:
            return None
        try:
            return parse_transactions(records)
        except StatementError as exc:
            raise KycProtocolError("bank statement does not have the documented shape", exc.errors) from exc

    async def get_aml_screen(self, user_id: str) -> AmlScreen | None:
        """The user's sanctions/AML screen, or None when the platform has none on record."""
        response = await self._call(f"/sme/aml/{quote(user_id, safe='')}")
        return AmlScreen.from_wire(_json(response)) if response is not None else None

    # -- transport ------------------------------------------------------------------------------

    async def _call(self, path: str) -> httpx.Response | None:
        """One logical call: breaker around bounded retries. None means 404."""
        try:
            async with await self._breakers.get_breaker(CIRCUIT):
                return await self._with_retries(path)
        except OpenedState as exc:
            raise KycUnavailable("SME KYC circuit is open; not calling until it recovers") from exc
        except (httpx.TransportError, _Retryable) as exc:
            raise KycUnavailable(f"SME KYC did not answer after {self._attempts} attempt(s): {exc}") from exc

    async def _with_retries(self, path: str) -> httpx.Response | None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
            before_sleep=lambda state: log.warning(
                "sme_kyc.retry",
                path=path,
                attempt=state.attempt_number,
                error=repr(state.outcome.exception()) if state.outcome else None,
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(path)
        raise AssertionError("tenacity returns or raises")  # pragma: no cover

    async def _attempt(self, path: str) -> httpx.Response | None:
        headers = {"Accept": "application/json"}
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers["X-Request-ID"] = str(request_id)
        response = await self._http.get(self._base + path, headers=headers, timeout=self._timeout)
        if response.status_code == 404:
            return None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise KycRequestRejected(f"SME KYC refused the request: HTTP {response.status_code}")
        return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise KycProtocolError("SME KYC answered with a body that is not JSON") from None
