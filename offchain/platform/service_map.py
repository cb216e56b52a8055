"""The port map of DESIGN §4 and what each service depends on (drives `/health/ready`).

Platform data, not a service: every service and the platform's identity wiring read it."""

from __future__ import annotations

from offchain.platform.service import Dependency, ServiceSpec

_DB_REDIS = frozenset({Dependency.DATABASE, Dependency.REDIS})
_WITH_CHAIN = _DB_REDIS | {Dependency.CHAIN}

SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            "gateway",
            8000,
            "Partner REST API /v1: JWT auth, credit permissions, rate limits, Idempotency-Key, routing.",
            _DB_REDIS,
        ),
        ServiceSpec(
            "underwriting",
            8001,
            "KYC facade, bank-statement analysis, scorecard, policy rules, reason codes.",
            _DB_REDIS,
        ),
        ServiceSpec("offers", 8002, "Pricing, amortization schedules, offer acceptance.", _DB_REDIS),
        ServiceSpec(
            "disbursement",
            8003,
            "Payouts through rails after on-chain approval; two-phase ledger holds.",
            _DB_REDIS,
        ),
        ServiceSpec(
            "repayment",
            8004,
            "Paystack and SME payment intake, matching, on-chain recording, reversals.",
            _DB_REDIS,
        ),
        ServiceSpec(
            "collections",
            8005,
            "Daily close of business: due/missed, DPD buckets, dunning, default.",
            _DB_REDIS,
        ),
        # reconciles the ledger against the chain, so it reads the chain itself
        ServiceSpec(
            "ledger",
            8006,
            "Double-entry journal, balances, reconciliation ledger <-> chain <-> rail.",
            _WITH_CHAIN,
        ),
        ServiceSpec(
            "notifications",
            8007,
            "Partner webhooks (signed, retried, replayable), email/SMS adapters.",
            _DB_REDIS,
        ),
        ServiceSpec(
            "orchestration",
            8008,
            "Transaction sending (nonces, retries, crash-safe), the chain indexer and the outbox relay.",
            _WITH_CHAIN,
        ),
        ServiceSpec(
            "analytics",
            8009,
            "Portfolio figures: disbursed, outstanding, PAR30/60/90, approval and collection rates.",
            _DB_REDIS,
        ),
        # probes the dependencies directly for /v1/health
        ServiceSpec(
            "health", 8010, "HealthStatus of SME services, CaaS services and dependencies.", _WITH_CHAIN
        ),
    )
}
