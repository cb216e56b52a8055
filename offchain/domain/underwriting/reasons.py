"""A reason on a decision: a stable code for systems, a message for the applicant, and its source."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Source(StrEnum):
    POLICY = "policy"
    AFFORDABILITY = "affordability"
    SCORECARD = "scorecard"
    ONCHAIN = "onchain"


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    source: Source

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "source": self.source.value}
