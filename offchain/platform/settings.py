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

    @field_validator("signer_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


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

    def sme_service_urls(self) -> dict[str, str | None]:
        return {
            "auth": self.sme_auth_url or self.simulator_url,
            "kyc": self.sme_kyc_url or self.simulator_url,
            "payments": self.sme_payments_url or self.simulator_url,
        }


class AuthSettings(_Group):
    jwt_secret: SecretStr = Field(
        default=SecretStr("dev-jwt-secret"), validation_alias=_flat("jwt_secret", "JWT_SECRET")
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


class LogSettings(_Group):
    level: str = Field(default="INFO", validation_alias=_flat("level", "LOG_LEVEL"))
    format: Literal["json", "console"] = Field(default="json", validation_alias=_flat("format", "LOG_FORMAT"))


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
    rails: RailsSettings = Field(default_factory=RailsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    events: EventBusSettings = Field(default_factory=EventBusSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    log: LogSettings = Field(default_factory=LogSettings)

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
