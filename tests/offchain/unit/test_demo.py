"""`caas demo` without a stack: where its settings come from, and how it fails."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from offchain.cli import main
from offchain.demo import REQUIRED_KEYS, DemoConfig, DemoError, money, valid_nuban
from offchain.domain.offers.agreement import is_valid_nuban
from offchain.stack.devstack import write_env_file


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*REQUIRED_KEYS, "CHAIN_RPC_URL", "DEPLOYMENT_FILE"):
        monkeypatch.delenv(key, raising=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dev_env(path: Path, gateway_url: str) -> None:
    write_env_file(
        path,
        {
            "GATEWAY_URL": gateway_url,
            "DEMO_PARTNER_TOKEN": "token-from-file",
            "SIGNER_KEYS": "0x01, 0x02,0x03",
            "SIMULATOR_URL": "http://127.0.0.1:8100/",
            "CHAIN_RPC_URL": "http://127.0.0.1:8545",
        },
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(50_000_000, "NGN 500,000.00"), (5, "NGN 0.05"), (0, "NGN 0.00"), (-12_345, "NGN -123.45")],
)
def test_money__minor_units_for_people(value: int, text: str) -> None:
    assert money(value) == text


def test_valid_nuban__passes_the_check_digit() -> None:
    account = valid_nuban()
    assert len(account) == 10 and is_valid_nuban("058", account)


def test_config__file_fills_what_the_environment_leaves_unset(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dev_env(tmp_path / "dev.env", "http://127.0.0.1:8000/")
    monkeypatch.setenv("DEMO_PARTNER_TOKEN", "token-from-env")
    config = DemoConfig.from_env(tmp_path / "dev.env", step_timeout_s=5.0, amount=None)
    assert config.gateway_url == "http://127.0.0.1:8000"
    assert config.simulator_url == "http://127.0.0.1:8100"
    assert config.token == "token-from-env"
    assert config.signer_keys == ("0x01", "0x02", "0x03")
    assert config.step_timeout_s == 5.0 and config.amount == 500_000_00


def test_config__nothing_running__names_the_missing_settings(tmp_path: Path, clean_env: None) -> None:
    with pytest.raises(
        DemoError, match="GATEWAY_URL, DEMO_PARTNER_TOKEN, SIGNER_KEYS, SIMULATOR_URL not set"
    ):
        DemoConfig.from_env(tmp_path / "dev.env")


def test_cli__no_stack__exits_1_with_the_reason(tmp_path: Path, clean_env: None) -> None:
    result = CliRunner().invoke(main, ["demo", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "caas demo failed at settings" in result.output and "caas up" in result.output

    _dev_env(tmp_path / "dev.env", f"http://127.0.0.1:{_closed_port()}")
    result = CliRunner().invoke(main, ["demo", "--state-dir", str(tmp_path), "--timeout", "2"])
    assert result.exit_code == 1
    assert "caas demo failed at preflight: cannot reach the gateway" in result.output
