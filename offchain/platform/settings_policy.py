"""Settings of the business policy: collections (dunning, grace), money, notifications and the
ledger (what operators tune, not what the services connect to)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    field_validator,
)

from offchain.platform.settings_core import (
    OptionalStr,
    _blank_to_none,
    _flat,
    _Group,
)

Channel = Literal["sms", "email", "log"]


def _default_due_reminders() -> dict[int, Channel]:
    return {7: "email", 3: "sms", 0: "sms"}


class DunningStep(BaseModel):
    """A borrower reminder sent once a delinquency reaches `dpd` days past due."""

    dpd: int = Field(ge=1)
    channel: Literal["sms", "email", "log"]
    template: Literal["repayment_missed", "collection_initiated"]


class CollectionsSettings(_Group):
    """Close of business (offchain.services.collections): reminders, late fees, dunning, default."""

    # Business dates are calendar days here; a date's COB evaluates the book at its last second.
    timezone: str = "Africa/Lagos"
    # The daily COB job (None: on, except with CAAS_ENV=test, where tests run dates themselves).
    schedule_enabled: bool | None = None
    run_at: str = Field(default="18:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # local HH:MM
    poll_s: float = Field(default=60.0, gt=0)
    # Missed dates the job catches up at most (older ones need an explicit run).
    max_catch_up_days: int = Field(default=31, ge=0)
    # Days before a due date a repayment_due reminder goes out, and on which channel.
    due_reminders: dict[int, Channel] = Field(default_factory=_default_due_reminders)
    missed_channel: Channel = "sms"
    # credit.collection.initiated once a delinquency is this many days past due (after grace)
    collection_after_dpd: int = Field(default=1, ge=1)
    dunning: list[DunningStep] = Field(
        default_factory=lambda: [
            DunningStep(dpd=1, channel="sms", template="repayment_missed"),
            DunningStep(dpd=3, channel="email", template="repayment_missed"),
            DunningStep(dpd=7, channel="sms", template="collection_initiated"),
            DunningStep(dpd=14, channel="email", template="collection_initiated"),
            DunningStep(dpd=30, channel="sms", template="collection_initiated"),
            DunningStep(dpd=60, channel="email", template="collection_initiated"),
        ]
    )
    # One late fee per late installment: bps of its unpaid part, at least `late_fee_min`, and never
    # above what the loan's on-chain cap (max_late_fees) has left.
    late_fee_bps: int = Field(default=500, ge=0, le=10_000)
    late_fee_min: int = Field(default=0, ge=0)
    # Days past due, once defaulted, before a write-off proposal opens for the committee.
    write_off_after_dpd: int = Field(default=0, ge=0)
    write_off_proposal_ttl_s: int = Field(default=7 * 86_400, ge=3_600, le=30 * 86_400)
    rpc_batch_size: int = Field(default=300, ge=1)


class MoneySettings(_Group):
    """Payouts (disbursement:8003) and incoming payments (repayment:8004)."""

    # a payout retries after a conclusive failure, under its one reference, this many times in all
    payout_max_attempts: int = Field(default=5, ge=1)
    # the n-th retry waits min(base * 2**(n-1), max) seconds
    payout_retry_base_s: float = Field(default=60.0, ge=0)
    payout_retry_max_s: float = Field(default=3_600.0, ge=0)
    # a transfer without a webhook is verified with the rail after this long (lost webhooks)
    payout_verify_after_s: float = Field(default=30.0, ge=0)
    worker_poll_s: float = Field(default=0.5, gt=0)
    worker_batch: int = Field(default=20, ge=1)
    # how often repayment:8004 looks for held money of loans that can take it now (the indexer's
    # LoanDisbursed / LoanCancelled settle it at once; the sweep is the backstop)
    held_sweep_s: float = Field(default=30.0, gt=0)
    # money held this long on a loan still not repayable (left PENDING) goes to operator review
    held_max_days: int = Field(default=30, ge=1)
    # the name on a transfer recipient when the payout account carries none
    default_account_name: str = "CaaS borrower"


class NotificationsSettings(_Group):
    """Partner webhooks and borrower messages (offchain.services.notifications)."""

    # Keys that encrypt webhook signing secrets at rest (comma-separated; the first encrypts, all
    # decrypt, so a key can be rotated without losing stored secrets). Any string: a Fernet key
    # is derived from each.
    secret_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("dev-webhook-secret-key-local-development-only")],
        validation_alias=_flat("secret_keys", "WEBHOOK_SECRET_KEYS"),
    )
    # Retry schedule: the n-th retry waits min(base * 2**(n-1), max) seconds, +/- jitter, until
    # `retry_window_s` after the event (or its replay) has passed; then the delivery is dead.
    retry_base_s: float = Field(default=30.0, gt=0)
    retry_max_interval_s: float = Field(default=6 * 3600.0, gt=0)
    retry_window_s: float = Field(default=3 * 86_400.0, gt=0)
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    # deliveries claimed per round, and how many POSTs run at once
    delivery_batch: int = Field(default=50, ge=1)
    delivery_concurrency: int = Field(default=16, ge=1)
    worker_poll_s: float = Field(default=1.0, gt=0)
    # consumers of the partner-event streams per process: each handles one event per transaction,
    # so their number is what lets commits (WAL flushes) overlap; keep it under the DB pool size
    intake_concurrency: int = Field(default=8, ge=1)
    # A claimed delivery whose worker died is due again after this long.
    delivery_lease_s: float = Field(default=60.0, gt=0)
    # GET /v1/events shows this many days; stored events are purged after `event_retention_days`.
    event_listing_days: int = Field(default=30, ge=1)
    event_retention_days: int = Field(default=35, ge=30)
    # A rotated-out signing secret keeps signing (second v1=) this long by default.
    rotation_overlap_s: int = Field(default=24 * 3600, ge=0)
    # Borrower messages: "smtp" needs smtp_host; "http" needs sms_url; "log" writes a log line.
    email_adapter: Literal["log", "smtp"] = "log"
    sms_adapter: Literal["log", "http"] = "log"
    smtp_host: OptionalStr = Field(default=None, validation_alias=_flat("smtp_host", "SMTP_HOST"))
    smtp_port: int = Field(default=587, validation_alias=_flat("smtp_port", "SMTP_PORT"))
    smtp_username: OptionalStr = Field(default=None, validation_alias=_flat("smtp_username", "SMTP_USERNAME"))
    smtp_password: SecretStr | None = Field(
        default=None, validation_alias=_flat("smtp_password", "SMTP_PASSWORD")
    )
    smtp_starttls: bool = True
    smtp_from: str = Field(
        default="CaaS <no-reply@caas.local>", validation_alias=_flat("smtp_from", "SMTP_FROM")
    )
    # An Africa's Talking / Termii style HTTP SMS API: POST {to, from, message} with an api key.
    sms_url: OptionalStr = Field(default=None, validation_alias=_flat("sms_url", "SMS_URL"))
    sms_api_key: SecretStr | None = Field(default=None, validation_alias=_flat("sms_api_key", "SMS_API_KEY"))
    sms_sender: str = "CaaS"
    message_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("smtp_password", "sms_api_key", mode="before")
    @classmethod
    def _blank_secret(cls, value: Any) -> Any:
        return _blank_to_none(value)


class LedgerSettings(_Group):
    """The ledger service (offchain.services.ledger): its reconciliation job."""

    # Run reconciliation (ledger <-> chain <-> projection) every `reconcile_interval_s` seconds.
    # None: on, except with CAAS_ENV=test, where tests run it on demand.
    reconcile_enabled: bool | None = None
    reconcile_interval_s: float = Field(default=300.0, gt=0)
    # loans read from the chain per JSON-RPC batch
    reconcile_rpc_batch: int = Field(default=500, ge=1)
    # a hold (pending posting) older than this is reported: its outcome never arrived
    stale_hold_s: float = Field(default=86_400.0, gt=0)
