"""SME payments service adapter: verify a payment the SME platform reported (`sme.payment.received`).

The signed event says money arrived; before it is recorded on chain the payments service is
asked for its own record of the reference (amount, currency, status), as with Paystack's verify.
Reads only, so bounded retries with backoff are always safe.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from offchain.platform.settings import RailsSettings
from offchain.rails.sme.http import SmeNotFound, SmeRefused, SmeUnavailable, call

SmePaymentNotFound = SmeNotFound


SmePaymentsUnavailable = SmeUnavailable


class SmePayment(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    reference: str
    amount: int = Field(strict=True, gt=0)
    currency: str
    status: str
    method: str | None = None
    loan_id: str | None = None
    account_number: str | None = None
    paid_at: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in ("successful", "success")


class SmePaymentsClient:
    def __init__(self, base_url: str, *, http: httpx.AsyncClient, attempts: int = 3) -> None:
        self._base = base_url.rstrip("/")
        self._http = http
        self._attempts = attempts

    @classmethod
    def from_settings(cls, rails: RailsSettings, *, http: httpx.AsyncClient) -> SmePaymentsClient:
        base = rails.sme_service_urls()["payments"]
        if not base:
            raise SmePaymentsUnavailable(
                "SME payments is not configured: set SME_PAYMENTS_URL or SIMULATOR_URL"
            )
        return cls(base, http=http)

    async def verify(self, reference: str) -> SmePayment:
        url = f"{self._base}/sme/payments/{quote(reference, safe='')}"
        body = await call(self._http, "GET", url, attempts=self._attempts, what="SME payments")
        return SmePayment.model_validate(body)


# the SME platform refused the payout outright (bad request): no transfer exists
WalletTransferRefused = SmeRefused


class WalletTransfer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    reference: str
    amount: int
    currency: str
    status: str  # successful | failed | pending
    transfer_id: str | None = None
    failure_reason: str | None = None


class SmeWalletClient:
    """Payouts into SME platform wallets, under our own reference (the idempotency key)."""

    def __init__(self, base_url: str, *, http: httpx.AsyncClient, attempts: int = 3) -> None:
        self._base = base_url.rstrip("/")
        self._http = http
        self._attempts = attempts

    @classmethod
    def from_settings(cls, rails: RailsSettings, *, http: httpx.AsyncClient) -> SmeWalletClient:
        base = rails.sme_service_urls()["payments"]
        if not base:
            raise SmePaymentsUnavailable(
                "SME payments is not configured: set SME_PAYMENTS_URL or SIMULATOR_URL"
            )
        return cls(base, http=http)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # A repeat cannot pay twice: the reference makes the transfer idempotent at the platform.
        return await call(
            self._http, method, f"{self._base}{path}", json=body, attempts=self._attempts, what="SME wallet"
        )

    async def transfer(self, *, reference: str, wallet_id: str, amount: int, currency: str) -> WalletTransfer:
        body = {"reference": reference, "wallet_id": wallet_id, "amount": amount, "currency": currency}
        return WalletTransfer.model_validate(await self._call("POST", "/sme/wallet/transfers", body))

    async def verify(self, reference: str) -> WalletTransfer:
        return WalletTransfer.model_validate(
            await self._call("GET", f"/sme/wallet/transfers/{quote(reference, safe='')}")
        )
