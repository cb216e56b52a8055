"""Fixtures for the backend tests: real PostgreSQL, Redis and Anvil, isolated per session.

- PostgreSQL: a throwaway database `caas_test_<random>` on CAAS_TEST_PG_URL's server (default
  the machine's 127.0.0.1:5432), migrated to head once, dropped at the end; parallel sessions
  never share one.
- Redis: CAAS_TEST_REDIS_URL (default 127.0.0.1:6379/0) with a random stream prefix per session;
  the session's keys are deleted at the end.
- Anvil: a fresh one on a free port, only for the tests that ask for it.

Run with ape's pytest plugin disabled (it would start its own Anvil for every session):
    pytest -p no:ape_test tests/offchain -m "not stack"
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import pytest_asyncio
from identities import SERVICE_KEY, service_headers
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from offchain.persistence.migrate import upgrade
from offchain.platform.db import Database
from offchain.platform.redis import create_redis
from offchain.platform.settings import Settings
from offchain.stack.embedded import anvil_executable, rpc_call

PG_URL = os.environ.get("CAAS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stack: starts the whole `caas up` stack in a subprocess (slow; ports 8000-8010)"
    )
    # starlette's TestClient nags about httpx2; the test client works as documented.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    return free_port


# --- PostgreSQL ---------------------------------------------------------------------------


def _admin_execute(*statements: str) -> list[tuple[Any, ...]] | None:
    """Run statements as the login superuser on the server's own database; the rows of the last
    one, if it returns any."""
    conn = psycopg2.connect(PG_URL)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.fixture(name="admin_execute")
def admin_execute_fixture() -> Callable[..., list[tuple[Any, ...]] | None]:
    return _admin_execute


def _database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def make_database() -> Iterator[Callable[[], str]]:
    """Factory of empty throwaway databases; all dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"caas_test_{uuid.uuid4().hex[:12]}"
        _admin_execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _database_url(name)

    yield make
    _admin_execute(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in created))


@pytest.fixture(scope="session")
def database_url(make_database: Callable[[], str]) -> str:
    """A database migrated to head, shared by the session (tests use their own keys/topics)."""
    url = make_database()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def stream_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"caas-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = SyncRedis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def settings(database_url: str, redis_url: str, stream_prefix: str) -> Settings:
    return Settings(
        env="test",
        database={"url": database_url},
        redis={"url": redis_url},
        events={"stream_prefix": stream_prefix, "retry_idle_ms": 50, "max_deliveries": 3},
        internal={"service_key": SERVICE_KEY},
    )


@pytest.fixture(name="service_headers")
def service_headers_fixture() -> Callable[..., dict[str, str]]:
    return service_headers


@pytest_asyncio.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database.from_settings(settings.database, application_name="caas-tests")
    yield database
    await database.dispose()


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = create_redis(settings.redis, client_name="caas-tests")
    yield client
    await client.aclose()


# --- Anvil ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def anvil_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("anvil") / "anvil.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [anvil_executable(), "--port", str(port), "--silent"], stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    rpc_call(url, "eth_chainId", timeout=1)
                    break
                except Exception:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(10)
