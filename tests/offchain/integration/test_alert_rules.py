"""ops/prometheus/alerts.yml refers only to metrics the services really export.

Each of the eleven apps is built as `caas serve` builds it and its real `/metrics` is scraped over
ASGI; the rules' expressions are parsed with a PromQL parser (not a regex) and every selector's
metric name must be one of the scraped series (or Prometheus's own `up`). `promtool check
rules` runs too where promtool is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app

pytestmark = pytest.mark.asyncio
RULES = Path(__file__).resolve().parents[3] / "ops" / "prometheus" / "alerts.yml"
PROMETHEUS_OWN = {"up"}  # written by Prometheus for every scrape target
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _selectors(node: Any) -> set[str]:
    if type(node).__name__ == "VectorSelector":
        assert node.name, "selectors must name their metric"
        return {node.name}
    found: set[str] = set()
    for attribute in ("lhs", "rhs", "expr", "args", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        for item in child if isinstance(child, list) else [child]:
            if item is not None and not isinstance(item, (str, int, float)):
                found |= _selectors(item)
    return found


async def _exported(settings: Settings) -> dict[str, set[str]]:
    """Series names per service, from the real /metrics of each app."""
    exported: dict[str, set[str]] = {}
    for name in SERVICES:
        app = create_app(name, settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/health/live")  # one request, so the labelled HTTP series exist
            response = await client.get("/metrics")
        assert response.status_code == 200
        names: set[str] = set()
        for family in text_string_to_metric_families(response.text):
            names.add(family.name)
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
            names.update(sample.name for sample in family.samples)
        exported[name] = names
    return exported


def test_every_rule_is_complete_and_parses() -> None:
    rules = _rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        promql_parser.parse(rule["expr"])  # raises on invalid PromQL


async def test_rules_reference_only_exported_metrics(settings: Settings) -> None:
    exported = await _exported(settings)
    everything = set().union(*exported.values()) | PROMETHEUS_OWN
    for rule in _rules():
        used = _selectors(promql_parser.parse(rule["expr"]))
        missing = used - everything
        assert not missing, f"{rule['alert']}: {sorted(missing)} exported by no service"
    # the SLAs of issue 6/7 are all covered
    covered = set().union(*(_selectors(promql_parser.parse(rule["expr"])) for rule in _rules()))
    for metric in (
        "up",
        "caas_health_platform_status",
        "caas_indexer_lag_blocks",
        "caas_health_tx_intent_oldest_age_seconds",
        "caas_health_outbox_oldest_age_seconds",
        "caas_webhook_delivery_attempts_total",
        "caas_http_requests_total",
        "caas_http_request_duration_seconds_bucket",
    ):
        assert metric in covered, f"no rule watches {metric}"
    assert "caas_health_platform_status" in exported["health"]
    assert "caas_indexer_lag_blocks" in exported["orchestration"]


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed here")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
