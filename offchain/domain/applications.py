"""The lifecycle statuses of an application and of an offer, as stored (`caas_applications`,
`caas_offers`) and compared by the services."""

from __future__ import annotations

from enum import StrEnum


class ApplicationStatus(StrEnum):
    SUBMITTED = "submitted"
    UNDERWRITING = "underwriting"
    OFFERED = "offered"
    DECLINED = "declined"
    ACCEPTED = "accepted"
    REFERRED = "referred"


class OfferStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
