"""Settings: DESIGN §5 flat names, nested names, and refusal of dev secrets in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offchain.platform.devkeys import anvil_accounts, dev_roles
from offchain.platform.settings import Environment, Settings

FLAT_NAMES = (
    "CAAS_ENV",
    "DATABASE_URL",
    "REDIS_URL",
    "CHAIN_RPC_URL",
    "CHAIN_RPC_URLS",
    "CHAIN_FINALITY",
    "DEPLOYMENT_FILE",
    "PAYSTACK_SECRET_KEY",
    "SME_EVENTS_SECRET",
    "SIGNER_KEYS",
    "SIMULATOR_URL",
    "SENDER_PRIVATE_KEY",
    "JWT_SECRET",
    "SERVICE_KEY",
    "INDEXER__CONFIRMATIONS",
    "INTERNAL__ENABLED",
    "OUTBOUND_ALLOW_LOOPBACK",
)
REAL = {
    "PAYSTACK_SECRET_KEY": "sk_live_0123456789abcdef",
    "SME_EVENTS_SECRET": "7f1c2b9a0e6d4c3b8a7f6e5d4c3b2a19",
    "JWT_SECRET": "b2f0c8e1d7a6954e3c2b1a0f9e8d7c6b",
    "REF_HASH_SECRET": "9d8c7b6a5f4e3d2c1b0a99887766554433",
    "WEBHOOK_SECRET_KEYS": "4b1d9a7c2e8f6053a1b2c3d4e5f60718",
    "SERVICE_KEY": "3e9a1c7f5b2d8e4a6c0f9b1d3e5a7c9f2b4d6e8a",
    "INDEXER__CONFIRMATIONS": "2",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in FLAT_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_flat_design_names_fill_the_nested_groups(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://db.internal/caas")
    clean_env.setenv("REDIS_URL", "redis://cache.internal:6379/2")
    clean_env.setenv("CHAIN_RPC_URL", "http://node.internal:8545")
    clean_env.setenv("DEPLOYMENT_FILE", "/srv/deployments/local.json")
    clean_env.setenv("SIGNER_KEYS", "0xaa, 0xbb,,0xcc")
    clean_env.setenv("SIMULATOR_URL", "")  # empty in dev.env means "not configured"

    settings = Settings()

    assert settings.database.url == "postgresql://db.internal/caas"
    assert settings.redis.url == "redis://cache.internal:6379/2"
    assert settings.chain.rpc_url == "http://node.internal:8545"
    assert str(settings.chain.deployment_file) == "/srv/deployments/local.json"
    assert [k.get_secret_value() for k in settings.chain.signer_keys] == ["0xaa", "0xbb", "0xcc"]
    assert settings.rails.simulator_url is None
    assert settings.env is Environment.DEVELOPMENT


def test_nested_name_wins_over_flat_and_keywords_win_over_both(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://flat/caas")
    clean_env.setenv("DATABASE__URL", "postgresql://nested/caas")
    clean_env.setenv("EVENTS__MAX_DELIVERIES", "9")

    assert Settings().database.url == "postgresql://nested/caas"
    assert Settings().events.max_deliveries == 9
    assert Settings(database={"url": "postgresql://kw/caas"}).database.url == "postgresql://kw/caas"


def test_secrets_are_secretstr_and_never_printed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PAYSTACK_SECRET_KEY", REAL["PAYSTACK_SECRET_KEY"])
    settings = Settings()
    assert REAL["PAYSTACK_SECRET_KEY"] not in repr(settings)
    assert settings.rails.paystack_secret_key.get_secret_value() == REAL["PAYSTACK_SECRET_KEY"]


@pytest.mark.parametrize("env", ["development", "test"])
def test_dev_defaults_are_fine_in_development_and_test(clean_env: pytest.MonkeyPatch, env: str) -> None:
    clean_env.setenv("CAAS_ENV", env)
    clean_env.setenv("SENDER_PRIVATE_KEY", dev_roles().sender.private_key)
    assert Settings().env.value == env


def test_production_refuses_default_dev_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CAAS_ENV", "production")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    for name in ("PAYSTACK_SECRET_KEY", "SME_EVENTS_SECRET", "JWT_SECRET"):
        assert name in message
    assert "dev-" not in message.replace("'dev-' values", "")  # names the setting, not the value


def test_production_refuses_anvil_keys_without_echoing_them(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CAAS_ENV", "production")
    for name, value in REAL.items():
        clean_env.setenv(name, value)
    anvil_key = anvil_accounts()[7].private_key
    clean_env.setenv("SENDER_PRIVATE_KEY", anvil_key.removeprefix("0x").upper())
    clean_env.setenv("SIGNER_KEYS", f"0x{'11' * 32},{anvil_accounts()[3].private_key}")

    with pytest.raises(ValidationError) as caught:
        Settings()

    message = str(caught.value)
    assert "SENDER_PRIVATE_KEY" in message and "SIGNER_KEYS" in message
    assert "PAYSTACK_SECRET_KEY" not in message
    assert anvil_key[2:] not in message.lower()


def test_production_accepts_real_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CAAS_ENV", "production")
    for name, value in REAL.items():
        clean_env.setenv(name, value)
    clean_env.setenv("SENDER_PRIVATE_KEY", "0x" + "42" * 32)
    assert Settings().env is Environment.PRODUCTION


def test_servers_do_not_read_dev_env_files(
    clean_env: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    (tmp_path / ".caas").mkdir()  # type: ignore[operator]
    (tmp_path / ".caas" / "dev.env").write_text("DATABASE_URL=postgresql://from-file/caas\n")  # type: ignore[operator]
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://from-dotenv/caas\n")  # type: ignore[operator]
    clean_env.chdir(tmp_path)
    assert Settings().database.url is None


def test_role_names_must_be_identifiers() -> None:
    with pytest.raises(ValidationError):
        Settings(database={"app_role": "caas_app; DROP TABLE x"})


def test_log_format__auto_is_console_on_a_terminal_and_json_elsewhere(monkeypatch) -> None:
    import sys

    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert Settings().log.format == "console"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert Settings().log.format == "json"
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert Settings().log.format == "json"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("SERVICE_KEY", "", "SERVICE_KEY is not set"),
        ("SERVICE_KEY", "dev-service-key-from-caas-up-0123456789abcdef", "SERVICE_KEY"),
        ("SERVICE_KEY", "short-but-real", "shorter than 32"),
        ("SERVICE_KEY", REAL["JWT_SECRET"], "SERVICE_KEY equals JWT_SECRET"),
        ("INDEXER__CONFIRMATIONS", "0", "INDEXER__CONFIRMATIONS=0"),
        ("INTERNAL__ENABLED", "false", "INTERNAL__ENABLED=false"),
        ("OUTBOUND_ALLOW_LOOPBACK", "true", "OUTBOUND_ALLOW_LOOPBACK=true"),
    ],
)
def test_production_refuses_unsafe_trust_settings(
    clean_env: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    clean_env.setenv("CAAS_ENV", "production")
    for real_name, real_value in REAL.items():
        clean_env.setenv(real_name, real_value)
    clean_env.setenv("SENDER_PRIVATE_KEY", "0x" + "42" * 32)
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert named in str(caught.value)
    if value and name == "SERVICE_KEY":
        assert value not in str(caught.value)  # names the setting, never echoes the key


def test_chain_rpc_urls_list_and_primary(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CHAIN_RPC_URLS", "https://a.example/rpc, https://b.example/rpc,,")
    chain = Settings().chain
    assert chain.rpc_urls == ["https://a.example/rpc", "https://b.example/rpc"]
    assert chain.rpc_url == "https://a.example/rpc"  # consumers of the single URL get the first
    assert chain.endpoints == chain.rpc_urls
    clean_env.setenv("CHAIN_RPC_URL", "http://primary:8545")
    assert Settings().chain.endpoints == [
        "http://primary:8545",
        "https://a.example/rpc",
        "https://b.example/rpc",
    ]
    clean_env.delenv("CHAIN_RPC_URLS")
    assert Settings().chain.endpoints == ["http://primary:8545"]
    clean_env.setenv("CHAIN_RPC_URLS", "node-without-scheme:8545")
    with pytest.raises(ValidationError, match="not an http"):
        Settings()


@pytest.mark.parametrize("value", ["depth", "safe", "Finalized"])
def test_chain_finality_names(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("CHAIN_FINALITY", value)
    assert Settings().chain.finality == value.lower()


def test_chain_finality_refuses_unknown_names(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CHAIN_FINALITY", "latest")
    with pytest.raises(ValidationError, match="finality"):
        Settings()
