"""Structured logs: one JSON object per line, service and request id, secrets scrubbed."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from offchain.platform.logging import REDACTED, configure_logging, get_logger, redact_secrets


def test_secret_named_keys_are_redacted_and_url_passwords_masked() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "jwt_secret": "s3cr3t",
            "Authorization": "Bearer abc",
            "private_key": "0xabc",
            "dsn": "postgresql://caas:hunter2@db:5432/caas",
            "amount": 100,
        },
    )
    assert event["jwt_secret"] == event["Authorization"] == event["private_key"] == REDACTED
    assert event["dsn"] == "postgresql://caas:***@db:5432/caas"
    assert event["amount"] == 100


def test_events_are_single_json_lines_with_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    structlog.contextvars.bind_contextvars(service="ledger", request_id="req-1")
    try:
        get_logger("test").info("ledger.posted", entries=2, api_token="t0k3n")
        logging.getLogger("uvicorn.error").warning("from stdlib\nwith a newline")
    finally:
        structlog.contextvars.clear_contextvars()

    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    ours, stdlib = (json.loads(line) for line in lines[-2:])
    assert ours["event"] == "ledger.posted"
    assert ours["service"] == "ledger" and ours["request_id"] == "req-1"
    assert ours["api_token"] == REDACTED
    assert ours["level"] == "info" and "timestamp" in ours
    assert stdlib["logger"] == "uvicorn.error" and stdlib["service"] == "ledger"
