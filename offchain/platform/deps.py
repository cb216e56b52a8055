"""Typed FastAPI dependencies for route handlers: `async def route(db: DatabaseDep): ...`."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request
from redis.asyncio import Redis

from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.problems import Problem
from offchain.platform.settings import Settings

_UNAVAILABLE = "urn:caas:problem:dependency-unavailable"


def get_resources(request: Request) -> AppResources:
    resources: AppResources = request.app.state.resources
    return resources


def get_database(request: Request) -> Database:
    db = get_resources(request).db
    if db is None:
        raise Problem(503, _UNAVAILABLE, title="Database not configured", detail="DATABASE_URL is not set")
    return db


def get_redis(request: Request) -> Redis:
    redis = get_resources(request).redis
    if redis is None:
        raise Problem(503, _UNAVAILABLE, title="Redis not configured", detail="REDIS_URL is not set")
    return redis


def get_settings_dep(request: Request) -> Settings:
    return get_resources(request).settings


def get_http(request: Request) -> httpx.AsyncClient:
    return get_resources(request).http


ResourcesDep = Annotated[AppResources, Depends(get_resources)]
DatabaseDep = Annotated[Database, Depends(get_database)]
RedisDep = Annotated[Redis, Depends(get_redis)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
HttpDep = Annotated[httpx.AsyncClient, Depends(get_http)]
