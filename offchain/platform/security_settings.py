"""Settings of the trust boundaries (docs/SECURITY.md): service identity on the internal ports,
limits at the edge, outbound URLs, and what production refuses.

Kept apart from offchain.platform.settings (which includes these groups) so that file does not
grow; the groups follow its conventions: nested names (`INTERNAL__TOKEN_TTL_S`) plus a flat
upper-case alias where scripts need one (`SERVICE_KEY`, `MAX_BODY_BYTES`).
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator

MIB = 1024 * 1024


class _Group(BaseModel):
    # as offchain.platform.settings._Group: secrets never echoed in validation errors
    model_config = ConfigDict(hide_input_in_errors=True, populate_by_name=True, extra="ignore")


class InternalAuthSettings(_Group):
    """Service identity: short-lived HS256 JWTs signed with the deployment's service key,
    `sub` = the calling service, `aud` = the service called (offchain.platform.service_auth)."""

    # Off only where nothing but tests reach the ports; production refuses it off.
    enabled: bool = True
    # Per deployment, shared by the services and nobody else. `caas up` generates one into
    # .caas/dev.env; missing, every service-only route answers 401 (fail closed).
    service_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("service_key", "SERVICE_KEY")
    )
    # Tokens a service issues live this long; a token claiming a longer life is refused.
    token_ttl_s: int = Field(default=60, ge=5, le=3_600)
    max_token_ttl_s: int = Field(default=300, ge=5, le=3_600)
    leeway_s: int = Field(default=10, ge=0, le=60)

    @field_validator("service_key", mode="before")
    @classmethod
    def _blank_key(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class LimitsSettings(_Group):
    """Limits at the edge of every service (offchain.platform.body_limit, offchain.platform.auth)."""

    # A request body larger than this is refused with 413 before it is read (a declared
    # Content-Length) or as soon as it passes the limit (chunked).
    max_body_bytes: int = Field(
        default=1 * MIB, ge=1_024, validation_alias=AliasChoices("max_body_bytes", "MAX_BODY_BYTES")
    )
    # ... except on the routes that take uploads (bank statements), up to this.
    max_upload_bytes: int = Field(default=5 * MIB, ge=1_024)
    # Failed authentications per client address (`limits` notation); past it, 429.
    failed_auth: str = "60/minute"


class OutboundSettings(_Group):
    """URLs taken from input (partner webhook endpoints): offchain.platform.outbound."""

    # Development and tests only (production refuses it): deliveries may go to loopback
    # addresses, never to the platform's own ports.
    allow_loopback: bool = Field(
        default=False, validation_alias=AliasChoices("allow_loopback", "OUTBOUND_ALLOW_LOOPBACK")
    )
    resolve_timeout_s: float = Field(default=5.0, gt=0)


def unsafe_in_production(settings: Any) -> list[str]:
    """What a production deployment must not run with, beyond development secrets (those are
    refused by name in Settings): each entry names the setting and why."""
    problems = []
    internal: InternalAuthSettings = settings.internal
    if not internal.enabled:
        problems.append("INTERNAL__ENABLED=false: every internal route would act without an identity")
    key = internal.service_key.get_secret_value() if internal.service_key else ""
    if not key:
        problems.append("SERVICE_KEY is not set: services cannot prove who they are to each other")
    elif len(key) < 32:
        problems.append("SERVICE_KEY is shorter than 32 characters")
    elif key == settings.auth.jwt_secret.get_secret_value():
        problems.append("SERVICE_KEY equals JWT_SECRET: a partner token's key must not mint service tokens")
    if settings.indexer.confirmations < 1:
        problems.append(
            "INDEXER__CONFIRMATIONS=0: money would move on events of blocks that can still be reorged"
            " (set a depth of at least 1, e.g. 2 on Hardhat/Anvil, 12+ on a public L2; docs/CHAINS.md)"
        )
    if settings.outbound.allow_loopback:
        problems.append("OUTBOUND_ALLOW_LOOPBACK=true: partner URLs could reach this host")
    return problems
