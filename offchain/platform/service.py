"""What a service is, for the shared app factory: a name, a port, and what it depends on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Dependency(StrEnum):
    DATABASE = "database"
    REDIS = "redis"
    CHAIN = "chain"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    owns: str  # one line from DESIGN §4, shown in the OpenAPI description
    dependencies: frozenset[Dependency]

    @property
    def uses_database(self) -> bool:
        return Dependency.DATABASE in self.dependencies

    @property
    def uses_redis(self) -> bool:
        return Dependency.REDIS in self.dependencies

    @property
    def uses_chain(self) -> bool:
        return Dependency.CHAIN in self.dependencies
