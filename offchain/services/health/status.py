"""The platform's HealthStatus (DESIGN §4), probed live on every request.

SME services are probed at their configured URLs (the simulator by default), CaaS services
through their own `/health/ready`, and the dependencies directly -- so a broken service cannot
hide a broken database, and vice versa. All probes run concurrently under one timeout each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from offchain.platform.app import AppResources
from offchain.platform.probes import (
    NOT_CONFIGURED,
    ProbeResult,
    probe_service,
    probe_url,
    resolved,
    worst,
)
from offchain.services.registry import SERVICES


async def platform_health(resources: AppResources) -> dict[str, Any]:
    settings = resources.settings
    timeout = settings.services.probe_timeout_s
    slow_ms = settings.services.slow_probe_ms
    http = resources.http

    sme: dict[str, Awaitable[ProbeResult]] = {
        name: probe_url(http, url, timeout_s=timeout, slow_ms=slow_ms) if url else resolved(NOT_CONFIGURED)
        for name, url in settings.rails.sme_service_urls().items()
    }
    caas: dict[str, Awaitable[ProbeResult]] = {
        name: probe_service(http, settings.service_url(name, spec.port), timeout_s=timeout, slow_ms=slow_ms)
        for name, spec in SERVICES.items()
    }
    groups = {"smeServices": sme, "caasServices": caas}
    flat = [(group, name, probe) for group, probes in groups.items() for name, probe in probes.items()]
    results, dependencies = await asyncio.gather(
        asyncio.gather(*(probe for _, _, probe in flat)), resources.readiness()
    )

    report: dict[str, dict[str, Any]] = {group: {} for group in groups}
    for (group, name, _), result in zip(flat, results, strict=True):
        report[group][name] = result.as_dict()
    report["dependencies"] = {name: result.as_dict() for name, result in dependencies.items()}
    return {
        "status": worst([*results, *dependencies.values()]),
        "checkedAt": datetime.now(UTC).isoformat(),
        **report,
    }
