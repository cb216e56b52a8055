"""The composition root: builds any of the eleven service apps by name (what `caas serve <name>`
and `caas up` run). It sits above the services, the one place that knows them all."""

from __future__ import annotations

import importlib
from typing import Protocol

from fastapi import FastAPI

from offchain.platform.service_map import SERVICES
from offchain.platform.settings import Settings


class _AppModule(Protocol):
    def create_app(self, settings: Settings | None = None) -> FastAPI: ...


def create_app(name: str, settings: Settings | None = None) -> FastAPI:
    """Build service `name`'s app (what `caas serve <name>` and `caas up` run)."""
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    module: _AppModule = importlib.import_module(f"offchain.services.{name}.app")
    return module.create_app(settings)
