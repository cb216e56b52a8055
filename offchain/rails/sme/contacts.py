"""SME platform contact adapter: a borrower's phone and email, fetched when a message is sent.

The backend keeps no borrower contact details (no personal data at rest beyond the SME user id):
the notifications service asks the SME platform for them at send time. Reads only, so bounded
retries are safe; a user the platform does not know is a permanent refusal.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from offchain.platform.settings import RailsSettings


class ContactNotFound(LookupError):
    pass


class ContactsUnavailable(RuntimeError):
    pass


class Contact(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    user_id: str
    phone: str | None = None
    email: str | None = None


class SmeContactsClient:
    def __init__(self, base_url: str, *, http: httpx.AsyncClient, attempts: int = 3) -> None:
        self._base = base_url.rstrip("/")
        self._http = http
        self._attempts = attempts

    @classmethod
    def from_settings(cls, rails: RailsSettings, *, http: httpx.AsyncClient) -> SmeContactsClient | None:
        base = rails.sme_service_urls()["kyc"]
        return cls(base, http=http) if base else None

    async def contact(self, user_id: str) -> Contact:
        url = f"{self._base}/sme/users/{quote(user_id, safe='')}/contact"
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(initial=0.2, max=2.0),
            retry=retry_if_exception_type(ContactsUnavailable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    response = await self._http.get(url, timeout=httpx.Timeout(5.0, connect=2.0))
                except httpx.HTTPError as error:
                    raise ContactsUnavailable(f"SME contacts unreachable: {error}") from error
                if response.status_code == 404:
                    raise ContactNotFound(user_id)
                if response.status_code >= 500 or response.status_code == 429:
                    raise ContactsUnavailable(f"SME contacts answered {response.status_code}")
                response.raise_for_status()
                return Contact.model_validate(response.json())
        raise AssertionError("unreachable")  # pragma: no cover
