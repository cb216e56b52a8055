"""SME platform contact adapter: a borrower's phone and email, fetched when a message is sent.

The backend keeps no borrower contact details (no personal data at rest beyond the SME user id):
the notifications service asks the SME platform for them at send time. Reads only, so bounded
retries are safe; a user the platform does not know is a permanent refusal.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict

from offchain.platform.settings import RailsSettings
from offchain.rails.sme.http import SmeNotFound, SmeUnavailable, call

ContactNotFound = SmeNotFound


ContactsUnavailable = SmeUnavailable


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
        return Contact.model_validate(
            await call(self._http, "GET", url, attempts=self._attempts, what="SME contacts")
        )
