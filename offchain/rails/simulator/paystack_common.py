"""Shared by the simulated Paystack's parts: its constants, the API error, scenario rules for
the next transfers, and the small body/id helpers."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi.responses import JSONResponse

Outcome = Literal["success", "failed", "reversed", "stall"]
# a transfer in one of these states may be initiated again with the same reference
RETRYABLE = ("failed", "reversed")
REFERENCE = re.compile(r"[a-z0-9_-]{1,100}")
INTEGRATION_ID = 463433
BUSINESS_NAME = "CaaS Simulator"
INTEGRATION = {"id": INTEGRATION_ID, "is_live": False, "business_name": BUSINESS_NAME}
BANKS = {
    "058": "Guaranty Trust Bank",
    "044": "Access Bank",
    "057": "Zenith Bank",
    "011": "First Bank of Nigeria",
    "033": "United Bank For Africa",
    "035": "Wema Bank",
    "999": "Test Bank",
}
DVA_BANKS = {
    "test-bank": {"name": "Test Bank", "id": 21, "slug": "test-bank"},
    "wema-bank": {"name": "Wema Bank", "id": 20, "slug": "wema-bank"},
    "titan-paystack": {"name": "Paystack-Titan", "id": 629, "slug": "titan-paystack"},
}
_ALPHABET = string.ascii_lowercase + string.digits


class PaystackApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str = "invalid_params") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> JSONResponse:
        kind = "api_error" if self.status >= 500 else "validation_error"
        return JSONResponse(
            {"status": False, "message": self.message, "type": kind, "code": self.code, "meta": {}},
            status_code=self.status,
        )


@dataclass
class TransferRule:
    """How the next transfer(s) go: `times` transfers, or only the one under `reference`."""

    outcome: Outcome = "success"
    otp: bool = False
    delay_s: float | None = None
    times: int = 1
    reference: str | None = None


def _code(prefix: str, length: int = 15) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _now() -> str:
    """Paystack's timestamp format: ISO 8601, milliseconds, Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # Paystack accepts amounts as numeric strings too
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PaystackApiError(400, f"{name} must be a positive integer in the lowest currency unit")
    return value


def _required(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise PaystackApiError(400, f"{name} is required")
    return str(value).strip()
