"""Runtime settings: one typed tree, read from the environment only.

Two spellings reach every value:
- the flat names of DESIGN §5 (`DATABASE_URL`, `CHAIN_RPC_URL`, `SIGNER_KEYS`, ...), declared on the
  field itself as its upper-case alias, so scripts and `.caas/dev.env` stay simple;
- the nested names (`DATABASE__URL`, `EVENTS__MAX_DELIVERIES`, ...) for everything else.
A nested name wins over its flat twin; explicit keyword arguments win over both.

Servers never read a dotenv file: what the process environment says is what runs. The CLI may
load `.caas/dev.env` into the environment first (see offchain.cli), filling only unset names.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from offchain.platform.security_settings import (
    InternalAuthSettings,
    LimitsSettings,
    OutboundSettings,
    unsafe_in_production,
)

DEV_SECRET_PREFIX = "dev-"  # noqa: S105 - the marker of dev values, not a secret


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def _flat(*names: str) -> AliasChoices:
    """Field name first (nested spelling), then the flat environment names."""
    return AliasChoices(*names)


def _blank_to_none(value: Any) -> Any:
    # `SIMULATOR_URL=` in an env file means "not configured", not "the empty URL".
    return None if isinstance(value, str) and not value.strip() else value


OptionalStr = Annotated[str | None, BeforeValidator(_blank_to_none)]


class _Group(BaseModel):
    # Secrets must not be echoed in validation errors (they end up in logs and tracebacks).
    model_config = ConfigDict(hide_input_in_errors=True, populate_by_name=True, extra="ignore")


class DatabaseSettings(_Group):
    url: OptionalStr = Field(default=None, validation_alias=_flat("url", "DATABASE_URL"))
    # Services connect as the login user but run every statement as this role, which owns no
    # table, so row-level security really applies. Empty keeps the login role (when the login
    # role already is the application role).
    app_role: str = "caas_app"
    # Role for trusted workers (indexer, sender, outbox relay) that act for all partners.
    worker_role: str = "caas_worker"
    pool_size: int = 5
    max_overflow: int = 5
    # Connections per process for the one-statement partner reads (Database.fetch_one). Each is
    # held for one round trip only, so a few keep up with a busy worker; more only add backends
    # that wake for one query each: on the 2-core bench machine 10 per worker cost PostgreSQL
    # 0.17-0.19 ms of CPU per read, 3 cost 0.13 and served ~10 % more reads (bench/api.py).
    read_connections: int = Field(3, ge=1)
    # A liveness check on every checkout costs three round trips (BEGIN, ping, ROLLBACK) per
    # transaction. Off: a connection the server dropped fails its one statement, and SQLAlchemy
    # then invalidates the whole pool, so a database restart costs a failed call, not a hang.
    pool_pre_ping: bool = False
    # Connections older than this are replaced at checkout (server-side idle timeouts, failover).
    pool_recycle_s: int = 1_800
    connect_timeout_s: float = 5.0
    statement_timeout_ms: int = 30_000

    @field_validator("app_role", "worker_role")
    @classmethod
    def _identifier(cls, value: str) -> str:
        # Role names are spliced into SET ROLE statements; allow plain identifiers only.
        if value and not value.replace("_", "").isalnum():
            raise ValueError("role names must be plain identifiers")
        return value


class RedisSettings(_Group):
    url: OptionalStr = Field(default=None, validation_alias=_flat("url", "REDIS_URL"))
    connect_timeout_s: float = 2.0
    socket_timeout_s: float = 5.0


class ChainSettings(_Group):
    rpc_url: OptionalStr = Field(default=None, validation_alias=_flat("rpc_url", "CHAIN_RPC_URL"))
    # Several endpoints of one chain, tried in order with failover (offchain.chain.jsonrpc):
    # `CHAIN_RPC_URLS=https://a,https://b`. CHAIN_RPC_URL, when set, is the first of them;
    # when only the list is set, CHAIN_RPC_URL becomes its first entry.
    rpc_urls: list[str] = Field(default_factory=list, validation_alias=_flat("rpc_urls", "CHAIN_RPC_URLS"))
    # What makes a block final for this network: `depth` (INDEXER__CONFIRMATIONS blocks behind
    # the head; every EVM), or the node's `safe` / `finalized` block tag (post-merge Ethereum,
    # OP-stack L2s such as Base). See docs/CHAINS.md.
    finality: Literal["depth", "safe", "finalized"] = Field(
        default="depth", validation_alias=_flat("finality", "CHAIN_FINALITY")
    )
    deployment_file: Path | None = Field(
        default=None, validation_alias=_flat("deployment_file", "DEPLOYMENT_FILE")
    )
    sender_private_key: SecretStr | None = Field(
        default=None, validation_alias=_flat("sender_private_key", "SENDER_PRIVATE_KEY")
    )
    # Committee signer keys (dev and tests only; real signers keep their keys to themselves).
    signer_keys: list[SecretStr] = Field(
        default_factory=list, validation_alias=_flat("signer_keys", "SIGNER_KEYS")
    )
    rpc_timeout_s: float = 10.0

    @field_validator("deployment_file", mode="before")
    @classmethod
    def _blank_path(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("signer_keys", "rpc_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("finality", mode="before")
    @classmethod
    def _finality_name(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_endpoint_list(self) -> ChainSettings:
        for url in self.rpc_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"CHAIN_RPC_URLS: {url!r} is not an http(s) URL")
        if self.rpc_url and self.rpc_url not in self.rpc_urls and self.rpc_urls:
            self.rpc_urls = [self.rpc_url, *self.rpc_urls]
        elif not self.rpc_url and self.rpc_urls:
            self.rpc_url = self.rpc_urls[0]
        return self

    @property
    def endpoints(self) -> list[str]:
        """Every configured RPC URL, the primary first (empty: no chain configured)."""
        return self.rpc_urls or ([self.rpc_url] if self.rpc_url else [])


class SenderSettings(_Group):
    """The transaction sender (offchain.chain.sender): one worker per sending key."""

    enabled: bool = True
    # A receipt this many blocks deep (1 = in the head block) makes an intent final.
    confirmations: int = Field(default=1, ge=1)
    # Intents estimated, signed and broadcast per round, and the cap on unmined ones in flight.
    batch_size: int = Field(default=500, ge=1)
    max_in_flight: int = Field(default=2_000, ge=1)
    # ... and their gas limits together within this many blocks' worth of the block gas limit.
    in_flight_blocks: float = Field(default=1.0, gt=0)
    idle_poll_s: float = 0.25
    gas_margin_percent: int = Field(default=20, ge=0)
    # Unmined this long after its last broadcast: re-sign the same nonce with higher fees.
    bump_after_s: float = 60.0
    # Fee increase per bump in basis points; nodes refuse replacements below +10 %.
    bump_bps: int = Field(default=1_250, ge=1_000)
    # None: ask the node (eth_maxPriorityFeePerGas).
    priority_fee_wei: int | None = None
    max_fee_per_gas_wei: int = 500 * 10**9
    # A broadcast the node refused is tried again after this long.
    rebroadcast_after_s: float = 5.0
    rpc_batch_size: int = Field(default=500, ge=1)


class IndexerSettings(_Group):
    """The chain indexer (offchain.chain.indexer): LoanBook + committee logs into caas_ tables."""

    enabled: bool = True
    # checkpoint name in caas_indexer_checkpoints
    name: str = "loanbook"
    # Blocks behind the head the indexer stays. 0 indexes the head itself (dev); reorgs are
    # repaired either way, a depth only makes them rarer for consumers to see.
    confirmations: int = Field(default=0, ge=0)
    # Recent block headers kept to find the common ancestor of a reorg; a deeper reorg stops
    # the indexer (ReorgTooDeepError) rather than leave rows of an abandoned chain behind.
    reorg_window: int = Field(default=128, ge=2)
    # eth_getLogs block range: starts here, doubles while answers stay small, halves when the
    # node refuses (too many results, response too large, timeout).
    initial_block_range: int = Field(default=1_000, ge=1)
    max_block_range: int = Field(default=10_000, ge=1)
    # logs per database transaction the range adapts towards
    target_logs_per_batch: int = Field(default=5_000, ge=1)
    poll_interval_s: float = Field(default=0.2, gt=0)
    rpc_batch_size: int = Field(default=500, ge=1)
    # compare each touched loan's event chain with LoanBook.event_chain at the batch's last block
    verify_event_chain: bool = True
    # ... when that block is at most this deep: a non-archive node keeps state for only the last
    # ~128 blocks (Anvil fewer), so backfill batches leave the check to a sweep once caught up
    verify_event_chain_within: int = Field(default=64, ge=0)
    # loans the caught-up sweep checks per poll
    verify_sweep_batch: int = Field(default=1_000, ge=1)
    # a second indexer on the same chain waits for the lock (True) or exits at once (False)
    wait_for_lock: bool = True
    lock_poll_s: float = Field(default=5.0, gt=0)


class RailsSettings(_Group):
    paystack_secret_key: SecretStr = Field(
        default=SecretStr("dev-paystack-secret-key"),
        validation_alias=_flat("paystack_secret_key", "PAYSTACK_SECRET_KEY"),
    )
    sme_events_secret: SecretStr = Field(
        default=SecretStr("dev-sme-events-secret"),
        validation_alias=_flat("sme_events_secret", "SME_EVENTS_SECRET"),
    )
    simulator_url: OptionalStr = Field(default=None, validation_alias=_flat("simulator_url", "SIMULATOR_URL"))
    # Where the SME platform's services answer; each defaults to the simulator.
    sme_auth_url: OptionalStr = Field(default=None, validation_alias=_flat("sme_auth_url", "SME_AUTH_URL"))
    sme_kyc_url: OptionalStr = Field(default=None, validation_alias=_flat("sme_kyc_url", "SME_KYC_URL"))
    sme_payments_url: OptionalStr = Field(
        default=None, validation_alias=_flat("sme_payments_url", "SME_PAYMENTS_URL")
    )
    # Paystack's API (https://api.paystack.co in production); defaults to the simulator.
    paystack_base_url: OptionalStr = Field(
        default=None, validation_alias=_flat("paystack_base_url", "PAYSTACK_BASE_URL")
    )
    # Source addresses or CIDR ranges Paystack webhooks may come from (comma-separated); empty
    # accepts any source, the signature being the check that always applies.
    paystack_webhook_ips: list[str] = Field(
        default_factory=list, validation_alias=_flat("paystack_webhook_ips", "PAYSTACK_WEBHOOK_IPS")
    )
    # How old (or how far in the future) a signed SME event's timestamp may be.
    sme_events_tolerance_s: int = Field(default=300, ge=1)

    @field_validator("paystack_webhook_ips", mode="before")
    @classmethod
    def _ip_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def sme_service_urls(self) -> dict[str, str | None]:
        return {
            "auth": self.sme_auth_url or self.simulator_url,
            "kyc": self.sme_kyc_url or self.simulator_url,
            "payments": self.sme_payments_url or self.simulator_url,
        }


class AuthSettings(_Group):
    # HS256 secret shared with the SME auth service (empty: HS256 tokens are refused).
    jwt_secret: SecretStr = Field(
        default=SecretStr("dev-jwt-secret-local-development-only-0001"),
        validation_alias=_flat("jwt_secret", "JWT_SECRET"),
    )
    # RS256 via the SME auth service's JWKS (None: RS256 tokens are refused).
    jwks_url: OptionalStr = Field(default=None, validation_alias=_flat("jwks_url", "JWKS_URL"))
    jwks_cache_s: float = 300.0
    # Verified tokens kept (by token) until they expire or this many seconds pass.
    token_cache_size: int = Field(default=10_000, ge=0)
    token_cache_s: float = Field(default=60.0, ge=0)
    audience: OptionalStr = None
    issuer: OptionalStr = None
    # Key of the keyed hashes that stand for borrowers and partners on chain (no PII on chain).
    ref_secret: SecretStr = Field(
        default=SecretStr("dev-ref-secret-local-development-only"),
        validation_alias=_flat("ref_secret", "REF_HASH_SECRET"),
    )
    # Per partner, per route class, in `limits` notation.
    rate_limits: dict[str, str] = Field(
        default_factory=lambda: {"read": "6000/minute", "write": "1200/minute"}
    )


class EventBusSettings(_Group):
    stream_prefix: str = "caas"
    max_deliveries: int = 5
    # A pending message idle this long is taken over by another consumer (crash or retry).
    retry_idle_ms: int = 30_000
    # Streams are a delivery buffer; the outbox is the durable log, so trimming is safe.
    stream_maxlen: int = 100_000
    relay_batch: int = 500
    relay_idle_s: float = 0.2


class ServicesSettings(_Group):
    bind_host: str = Field(default="127.0.0.1", validation_alias=_flat("bind_host", "CAAS_BIND_HOST"))
    # Base URLs other services are reachable at, e.g. {"gateway": "http://gateway:8000"};
    # a missing entry means http://127.0.0.1:<port>.
    urls: dict[str, str] = Field(default_factory=dict)
    probe_timeout_s: float = 2.0
    # A dependency answering slower than this is reported "degraded".
    slow_probe_ms: float = 1_000.0


class HealthSettings(_Group):
    """Thresholds at which health:8010 calls the platform degraded (and its monitor's cadence)."""

    # Only meaningful when the chain makes blocks on a clock (a real network, Anvil --block-time):
    # an automining Anvil with nothing to mine keeps an old head, so None judges the chain by
    # reachability and the indexer's lag alone.
    max_head_age_s: float | None = Field(default=None, gt=0)
    # checkpoint further than this behind head - confirmations
    max_indexer_lag_blocks: int = Field(default=20, ge=0)
    # oldest outbox row the relay has not published yet
    max_outbox_age_s: float = Field(default=30.0, gt=0)
    # per consumer group: delivered-but-unacknowledged plus not-yet-delivered stream entries
    max_stream_backlog: int = Field(default=1_000, ge=0)
    # oldest transaction intent not final yet (pending, signed, broadcast or mined)
    max_intent_age_s: float = Field(default=300.0, gt=0)
    # how often the health service re-evaluates everything for its Prometheus gauges
    monitor_interval_s: float = Field(default=15.0, gt=0)


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
    due_reminders: dict[int, Literal["sms", "email", "log"]] = Field(
        default_factory=lambda: {7: "email", 3: "sms", 0: "sms"}
    )
    missed_channel: Literal["sms", "email", "log"] = "sms"
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


class TracingSettings(_Group):
    """OpenTelemetry traces (offchain.platform.tracing)."""

    # "none" keeps trace context flowing (headers, outbox events, log lines) and exports
    # nothing; "console" prints finished spans; "otlp" sends them over OTLP/HTTP. Unset: "otlp"
    # when an endpoint is configured, else "none".
    exporter: Literal["none", "console", "otlp"] | None = Field(
        default=None, validation_alias=_flat("exporter", "OTEL_TRACES_EXPORTER")
    )
    otlp_endpoint: OptionalStr = Field(
        default=None, validation_alias=_flat("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    # Share of root traces recorded; a caller's sampled flag is always honoured. Unset: all when
    # exporting, none otherwise (ids still flow; recording spans nobody exports costs ~1 ms of
    # CPU per request on the gateway's hot path, measured).
    sample_ratio: float | None = Field(default=None, ge=0, le=1)
    # service.name of this process's spans; unset: the first service the process starts.
    service_name: OptionalStr = Field(
        default=None, validation_alias=_flat("service_name", "OTEL_SERVICE_NAME")
    )

    @property
    def effective_exporter(self) -> str:
        return self.exporter or ("otlp" if self.otlp_endpoint else "none")

    @property
    def effective_sample_ratio(self) -> float:
        if self.sample_ratio is not None:
            return self.sample_ratio
        return 0.0 if self.effective_exporter == "none" else 1.0


def _log_format(value: Any) -> Any:
    # "auto" (the default): lines for people on a terminal, JSON for a log shipper everywhere else
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return "console" if sys.stdout.isatty() else "json"
    return value


class LogSettings(_Group):
    level: str = Field(default="INFO", validation_alias=_flat("level", "LOG_LEVEL"))
    format: Annotated[Literal["json", "console"], BeforeValidator(_log_format)] = Field(
        default="auto", validate_default=True, validation_alias=_flat("format", "LOG_FORMAT")
    )
    # One line per HTTP request (metrics are kept either way).
    access_log: bool = Field(default=True, validation_alias=_flat("access_log", "LOG_ACCESS"))


class FlatEnvSource(PydanticBaseSettingsSource):
    """Reads the flat DESIGN §5 names declared as upper-case aliases on group fields.

    pydantic-settings only looks up aliases of top-level fields; this source does the same for one
    level of nesting, so `DATABASE_URL` fills `database.url` without a parallel list of names.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole dict

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for group_name, group_field in self.settings_cls.model_fields.items():
            group_type = group_field.annotation
            if not (isinstance(group_type, type) and issubclass(group_type, BaseModel)):
                continue
            for name, field in group_type.model_fields.items():
                for env_name in flat_env_names(field.validation_alias):
                    raw = os.environ.get(env_name)
                    if raw is not None and raw.strip():
                        values.setdefault(group_name, {})[name] = raw
                        break
        return values


def flat_env_names(alias: Any) -> list[str]:
    if not isinstance(alias, AliasChoices):
        return []
    return [choice for choice in alias.choices if isinstance(choice, str) and choice.isupper()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,
        populate_by_name=True,
    )

    env: Environment = Field(default=Environment.DEVELOPMENT, validation_alias=AliasChoices("CAAS_ENV"))
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)
    sender: SenderSettings = Field(default_factory=SenderSettings)
    rails: RailsSettings = Field(default_factory=RailsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    events: EventBusSettings = Field(default_factory=EventBusSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    notifications: NotificationsSettings = Field(default_factory=NotificationsSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    collections: CollectionsSettings = Field(default_factory=CollectionsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    money: MoneySettings = Field(default_factory=MoneySettings)
    internal: InternalAuthSettings = Field(default_factory=InternalAuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No dotenv source on purpose (module docstring); file secrets stay available.
        return init_settings, env_settings, FlatEnvSource(settings_cls), file_secret_settings

    @model_validator(mode="after")
    def _refuse_dev_secrets(self) -> Settings:
        if self.env in (Environment.DEVELOPMENT, Environment.TEST):
            return self
        offenders = [name for name, value in self.secrets() if is_dev_secret(value)]
        if offenders:
            raise ValueError(
                f"CAAS_ENV={self.env.value} refuses well-known development values for "
                f"{', '.join(offenders)}: set real secrets (no 'dev-' values, no Anvil keys)"
            )
        unsafe = unsafe_in_production(self)
        if unsafe:
            raise ValueError(f"CAAS_ENV={self.env.value} refuses unsafe settings: {'; '.join(unsafe)}")
        return self

    def secrets(self) -> list[tuple[str, str]]:
        """Every configured secret as (environment name, value), for checks, never for logs."""
        found: list[tuple[str, str]] = []
        for group_name in type(self).model_fields:
            group = getattr(self, group_name)
            if not isinstance(group, BaseModel):
                continue
            for name, field in type(group).model_fields.items():
                flat = flat_env_names(field.validation_alias)
                env_name = flat[0] if flat else f"{group_name}__{name}".upper()
                value = getattr(group, name)
                items = value if isinstance(value, list) else [value]
                found.extend(
                    (env_name, item.get_secret_value()) for item in items if isinstance(item, SecretStr)
                )
        return found

    def service_url(self, name: str, port: int) -> str:
        return self.services.urls.get(name, f"http://127.0.0.1:{port}").rstrip("/")


def is_dev_secret(value: str) -> bool:
    if value.startswith(DEV_SECRET_PREFIX):
        return True
    from offchain.platform.devkeys import is_anvil_key  # eth_account only when really needed

    return is_anvil_key(value)


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests build `Settings(...)` directly instead."""
    return Settings()
