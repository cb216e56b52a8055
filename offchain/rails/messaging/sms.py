"""SMS through an HTTP API in the style of Africa's Talking / Termii: one JSON POST per message.

Wire: POST {url} with `Authorization: Bearer <api key>` (when set) and
    {"to": "+234...", "from": "<sender id>", "message": "...", "reference": "<notification id>"}
2xx accepts it; the provider's id is read from `message_id`, `messageId` or `id` if present.
4xx (other than 408/429) refuses it for good; 408, 429, 5xx and transport errors may pass later.
"""

from __future__ import annotations

from typing import Any

import httpx

from offchain.rails.messaging.base import OutgoingMessage, PermanentSendError, TransientSendError

_RETRYABLE_4XX = {408, 409, 425, 429}


class HttpSmsSender:
    name = "sms"

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        url: str,
        sender: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.http = http
        self.url = url
        self.sender = sender
        self.api_key = api_key
        self.timeout_s = timeout_s

    async def send(self, message: OutgoingMessage) -> str | None:
        if not message.to:
            raise PermanentSendError("no phone number to send to")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "to": message.to,
            "from": self.sender,
            "message": message.body,
            "reference": message.reference,
        }
        try:
            response = await self.http.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as error:
            raise TransientSendError(f"sms provider unreachable: {error!r}") from error
        if response.is_success:
            return _provider_id(response)
        detail = f"sms provider answered {response.status_code}: {response.text[:300]}"
        if 400 <= response.status_code < 500 and response.status_code not in _RETRYABLE_4XX:
            raise PermanentSendError(detail)
        raise TransientSendError(detail)


def _provider_id(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        for key in ("message_id", "messageId", "id"):
            if body.get(key) is not None:
                return str(body[key])
    return None
