"""A request that fails because PostgreSQL or Redis is down is a 503 with Retry-After, not a 500."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from offchain.platform.problems import install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/redis")
    async def redis_down() -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    @app.get("/database")
    async def database_down() -> None:
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except ConnectionRefusedError as error:
            raise OperationalError("SELECT 1", {}, error) from error

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("a bug is still a 500")

    return app


def test_dependency_down__503_problem_with_retry_after() -> None:
    client = TestClient(_app(), raise_server_exceptions=False)
    for path, dependency in (("/redis", "redis"), ("/database", "database")):
        answer = client.get(path)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["type"] == "urn:caas:problem:dependency-unavailable"
        assert dependency in answer.json()["detail"]


def test_other_errors__still_500() -> None:
    answer = TestClient(_app(), raise_server_exceptions=False).get("/bug")
    assert answer.status_code == 500
    assert answer.json()["detail"] == "An unexpected error occurred."
