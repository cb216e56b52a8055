"""Settings of the infrastructure: database, Redis, chain, sender, indexer, rails, auth, event
bus, service URLs, health probes, tracing and logs (one group per part the services connect to)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from offchain.platform.settings_core import (
    OptionalStr,
    _blank_to_none,
    _flat,
    _Group,
)


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
    read_connections: int = Field(default=3, ge=1)
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
    # The node the consoles' browsers read the chain through (docs/CONSOLES.md). It is handed to
    # anyone who opens /console, so it must be a URL fit for the public: a hosted RPC URL
    # carries its API key. Unset: development hands out CHAIN_RPC_URL, production nothing.
    console_rpc_url: OptionalStr = Field(
        default=None, validation_alias=_flat("console_rpc_url", "CAAS_CONSOLE_RPC_URL")
    )

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
