"""HealthStatus as DESIGN §4 fixes it, plus an overall `status`, `checkedAt` and `queues` (whether
work flows: indexer, outbox, streams, tx_intents)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Status = Literal["healthy", "degraded", "down"]


class Check(BaseModel):
    status: Status
    latency_ms: float | None
    detail: str | None


class SmeServices(BaseModel):
    auth: Check
    kyc: Check
    payments: Check


class Dependencies(BaseModel):
    database: Check
    redis: Check
    blockchain: Check


class HealthStatus(BaseModel):
    status: Status
    checkedAt: str
    smeServices: SmeServices
    caasServices: dict[str, Check]  # one entry per service of the port map
    dependencies: Dependencies
    queues: dict[str, Check]  # indexer, outbox, streams, tx_intents


# --- what callers other than operators see (the gateway's GET /v1/health) ------------------------
# `detail` can name internal hosts, addresses and errors: it is for operators only.


class CheckSummary(BaseModel):
    status: Status
    latency_ms: float | None


class SmeServicesSummary(BaseModel):
    auth: CheckSummary
    kyc: CheckSummary
    payments: CheckSummary


class DependenciesSummary(BaseModel):
    database: CheckSummary
    redis: CheckSummary
    blockchain: CheckSummary


class HealthSummary(BaseModel):
    """HealthStatus without the `detail` strings."""

    status: Status
    checkedAt: str
    smeServices: SmeServicesSummary
    caasServices: dict[str, CheckSummary]
    dependencies: DependenciesSummary
    queues: dict[str, CheckSummary]
