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
from functools import cache
from typing import Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
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
from offchain.platform.settings_core import DEV_SECRET_PREFIX, Environment, OptionalStr
from offchain.platform.settings_infra import (
    AuthSettings,
    ChainSettings,
    DatabaseSettings,
    EventBusSettings,
    HealthSettings,
    IndexerSettings,
    LogSettings,
    RailsSettings,
    RedisSettings,
    SenderSettings,
    ServicesSettings,
    TracingSettings,
)
from offchain.platform.settings_policy import (
    CollectionsSettings,
    DunningStep,
    LedgerSettings,
    MoneySettings,
    NotificationsSettings,
)

__all__ = [
    "DEV_SECRET_PREFIX",
    "AuthSettings",
    "ChainSettings",
    "CollectionsSettings",
    "DatabaseSettings",
    "DunningStep",
    "Environment",
    "EventBusSettings",
    "FlatEnvSource",
    "HealthSettings",
    "IndexerSettings",
    "LedgerSettings",
    "LogSettings",
    "MoneySettings",
    "NotificationsSettings",
    "OptionalStr",
    "RailsSettings",
    "RedisSettings",
    "SenderSettings",
    "ServicesSettings",
    "Settings",
    "TracingSettings",
    "flat_env_names",
    "get_settings",
    "is_dev_secret",
]


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
