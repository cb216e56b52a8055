"""What `caas demo` runs with and reports: its settings (environment, then `.caas/dev.env`), its
result, and the payout account and money formatting it shows (offchain.demo runs it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("GATEWAY_URL", "DEMO_PARTNER_TOKEN", "SIGNER_KEYS", "SIMULATOR_URL")
# Where the demo borrower's money goes: a valid NUBAN at GTBank (058), like a real payout account.
PAYOUT_BANK_CODE = "058"
PAYOUT_SERIAL = "012345678"


class DemoError(Exception):
    """A step did not happen (refused, failed or timed out); the message says which and why."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass(frozen=True)
class DemoConfig:
    gateway_url: str
    token: str
    simulator_url: str
    signer_keys: tuple[str, ...]
    chain_rpc_url: str | None = None
    deployment_file: str | None = None
    # None: a borrower and payout account of this run's own, so that running the demo again and
    # again never looks like one borrower drawing loan after loan (transaction monitoring)
    sme_user_id: str | None = None
    amount: int = 500_000_00  # NGN 500,000.00 in kobo
    tenor_months: int = 3
    step_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, dev_env: Path, **overrides: Any) -> DemoConfig:
        """The environment first, then `dev_env` for what it does not set."""
        from offchain.stack.devstack import read_env_file

        values = read_env_file(dev_env) if dev_env.is_file() else {}
        values.update({k: v for k, v in os.environ.items() if v.strip()})
        missing = [key for key in REQUIRED_KEYS if not values.get(key, "").strip()]
        if missing:
            where = f"{dev_env} has none of them" if not dev_env.is_file() else f"nor in {dev_env}"
            raise DemoError(
                "settings",
                f"{', '.join(missing)} not set in the environment ({where}); start the stack with "
                "`caas up` (or `make run`) in another terminal first",
            )
        keys = tuple(k.strip() for k in values["SIGNER_KEYS"].split(",") if k.strip())
        return cls(
            gateway_url=values["GATEWAY_URL"].rstrip("/"),
            token=values["DEMO_PARTNER_TOKEN"],
            simulator_url=values["SIMULATOR_URL"].rstrip("/"),
            signer_keys=keys,
            chain_rpc_url=values.get("CHAIN_RPC_URL") or None,
            deployment_file=values.get("DEPLOYMENT_FILE") or None,
            **{k: v for k, v in overrides.items() if v is not None},
        )


@dataclass
class DemoResult:
    loan_id: str = ""
    chain_loan_id: str = ""
    chain_state: str = ""
    outstanding: int | None = None
    tx_hashes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def money(value: int, currency: str = "NGN") -> str:
    """Minor units for people: 50000000 -> 'NGN 500,000.00' (integers only, no float rounding)."""
    sign = "-" if value < 0 else ""
    major, minor = divmod(abs(int(value)), 100)
    return f"{currency} {sign}{major:,}.{minor:02d}"


def valid_nuban(bank_code: str = PAYOUT_BANK_CODE, serial: str = PAYOUT_SERIAL) -> str:
    from offchain.domain.offers.agreement import nuban_check_digit

    return serial + str(nuban_check_digit(bank_code, serial))
