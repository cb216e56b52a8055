"""Request and response bodies of the partner webhook API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from offchain.domain.notifications.envelope import ALL_TYPES, PARTNER_EVENT_TYPES
from offchain.platform.inputs import NO_NUL, WHOLE

EventTypeName = Literal[(*PARTNER_EVENT_TYPES, ALL_TYPES)]  # type: ignore[valid-type]
# an absolute http(s) URL without credentials or fragment, its port in range (the use case adds
# the deployment's own rules: https and a public host in production)
_PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# path and query: printable ASCII but `#` (a URL is ASCII; explicit, since `\s` differs between
# Python's and the JSON Schema's regex dialects)
URL = rf"^https?://[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?(:{_PORT})?([/?][!-\x22\x24-~]*)?$"


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2000, pattern=URL, description="https URL (http only in development and test)"
    )
    event_types: list[EventTypeName] = Field(
        min_length=1, max_length=len(PARTNER_EVENT_TYPES), description='event types, or ["*"] for all'
    )
    description: str | None = Field(None, max_length=500, pattern=NO_NUL)

    @field_validator("url", "description")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold U+0000: refuse it here as a field error, not a 500 later
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("event_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t != ALL_TYPES and t not in PARTNER_EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {', '.join(PARTNER_EVENT_TYPES)} or *")
        return [ALL_TYPES] if ALL_TYPES in value else sorted(set(value))


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        None, description="until then deliveries are also signed with the previous secret"
    )


class EndpointCreated(EndpointOut):
    secret: str = Field(description="the signing secret; shown only in this answer")


class EndpointList(BaseModel):
    data: list[EndpointOut]


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expire_previous_in_s: (
        Annotated[
            int,
            Field(
                strict=True,
                ge=0,
                le=7 * 86_400,
                description="how long the old secret keeps signing too (0: at once; default from settings)",
            ),
            WHOLE,
        ]
        | None
    ) = None


class SecretRotated(BaseModel):
    id: uuid.UUID
    secret: str
    previous_secret_expires_at: datetime | None


class DeliveryOut(BaseModel):
    endpoint_id: uuid.UUID
    status: Literal["pending", "delivered", "dead", "cancelled"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    dead_at: datetime | None


class EventOut(BaseModel):
    id: uuid.UUID
    type: str
    created_at: datetime
    data: dict[str, Any]
    deliveries: list[DeliveryOut]


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null at the end")


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_id: uuid.UUID | None = Field(
        None, description="resend to this endpoint only (subscribed or not); default: every subscribed one"
    )


class ReplayOut(BaseModel):
    event_id: uuid.UUID
    deliveries: list[DeliveryOut]
