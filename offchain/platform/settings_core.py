"""The building blocks of the settings tree: the environment, the group base (secrets hidden in
validation errors) and the flat-name alias helper (see offchain.platform.settings)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
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
