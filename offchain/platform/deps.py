"""Typed FastAPI dependencies for route handlers: `async def route(db: DatabaseDep): ...`.

All `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop (and GIL
hand-over) per request for what is an attribute lookup.
"""

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


async def get_resources(request: Request) -> AppResources:
    resources: AppResources = request.app.state.resources
    return resources


async def get_database(request: Request) -> Database:
    db = request.app.state.resources.db
    if db is None:
        raise Problem(503, _UNAVAILABLE, title="Database not configured", detail="DATABASE_URL is not set")
    return db


async def get_redis(request: Request) -> Redis:
    redis = request.app.state.resources.redis
    if redis is None:
        raise Problem(503, _UNAVAILABLE, title="Redis not configured", detail="REDIS_URL is not set")
    return redis


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.resources.settings


async def get_http(request: Request) -> httpx.AsyncClient:
    return request.app.state.resources.http


ResourcesDep = Annotated[AppResources, Depends(get_resources)]
DatabaseDep = Annotated[Database, Depends(get_database)]
RedisDep = Annotated[Redis, Depends(get_redis)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
HttpDep = Annotated[httpx.AsyncClient, Depends(get_http)]
