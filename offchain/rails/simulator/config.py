"""The simulator's settings: where it delivers webhooks and events, with which secrets, how fast."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from offchain.platform.settings import Settings

DEFAULT_PORT = 8100


@dataclass
class SimulatorConfig:
    # The backend's gateway: Paystack webhooks go to {gateway_url}/v1/webhooks/paystack and SME
    # events to {gateway_url}/v1/events/sme, unless the two URLs below are set.
    gateway_url: str = "http://127.0.0.1:8000"
    paystack_webhook_url: str | None = None
    sme_events_url: str | None = None
    paystack_secret_key: str = "dev-paystack-secret-key"  # noqa: S105 - the dev default, as in settings
    sme_events_secret: str = "dev-sme-events-secret"  # noqa: S105
    # a transfer completes (or fails, or reverses) this long after it is queued
    transfer_delay_s: float = 0.2
    # every transfer waits for an OTP (Paystack's default until OTP is disabled on the integration)
    otp_required: bool = False
    otp_code: str = "123456"
    # A repeated reference for the same payout: "return" the transfer already made, or "reject"
    # it as a duplicate (the client must then look the transfer up); never a second payout.
    duplicate_reference: str = "return"
    # the integration's transfer balance per currency, minor units
    opening_balance: int = 10**14
    # webhook / event delivery: attempts in all, exponential backoff between them
    webhook_attempts: int = 6
    webhook_backoff_s: float = 0.2
    webhook_max_backoff_s: float = 5.0
    webhook_timeout_s: float = 5.0
    jwt_issuer: str = "sme-auth-simulator"
    # JSON snapshot of accounts, transfers, charges and signing keys; None keeps state in memory
    state_file: Path | None = None

    def webhook_url(self) -> str:
        return self.paystack_webhook_url or f"{self.gateway_url.rstrip('/')}/v1/webhooks/paystack"

    def events_url(self) -> str:
        return self.sme_events_url or f"{self.gateway_url.rstrip('/')}/v1/events/sme"

    def public(self) -> dict[str, Any]:
        """The adjustable settings, without the secrets."""
        hidden = {"paystack_secret_key", "sme_events_secret", "otp_code"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        values["state_file"] = str(self.state_file) if self.state_file else None
        values["webhook_url"] = self.webhook_url()
        values["events_url"] = self.events_url()
        return values

    @classmethod
    def from_env(cls, settings: Settings | None = None, **overrides: Any) -> SimulatorConfig:
        """CAAS_GATEWAY_URL (or GATEWAY_URL), the rails secrets from the settings, SIMULATOR_* knobs."""
        settings = settings or Settings()
        values: dict[str, Any] = {
            "gateway_url": os.environ.get("CAAS_GATEWAY_URL")
            or os.environ.get("GATEWAY_URL")
            or cls.gateway_url,
            "paystack_secret_key": settings.rails.paystack_secret_key.get_secret_value(),
            "sme_events_secret": settings.rails.sme_events_secret.get_secret_value(),
        }
        if delay := os.environ.get("SIMULATOR_TRANSFER_DELAY_S"):
            values["transfer_delay_s"] = float(delay)
        if os.environ.get("SIMULATOR_OTP_REQUIRED", "").lower() in ("1", "true", "yes"):
            values["otp_required"] = True
        if state := os.environ.get("SIMULATOR_STATE_FILE"):
            values["state_file"] = Path(state)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
