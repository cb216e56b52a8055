"""A 500 that still happens, served by a real uvicorn to a keep-alive client (issue 15).

It is logged once, with the request id its body promises and the trace id of the request's
span, and the connection it came on stays usable: before, Starlette answered and re-raised,
uvicorn logged the exception a second time (without the request id) and closed the
connection, so the client's next request on it met ECONNRESET.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

import pytest
from fastapi import APIRouter, Depends, Request
from simulator_support import ServerThread

from offchain.platform.access import public
from offchain.platform.app import create_service_app
from offchain.platform.service import Dependency, ServiceSpec
from offchain.platform.settings import Settings

SPEC = ServiceSpec("errorsvc", 18998, "a service that fails", frozenset({Dependency.DATABASE}))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _router() -> APIRouter:
    # no identity in the way: the test is about what a 500 does to the log and the connection
    router = APIRouter(dependencies=[Depends(public("a test service's own routes"))])

    @router.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("database password is hunter2")

    @router.get("/v1/port")
    async def port(request: Request) -> dict[str, int]:
        # the client's port: the same one on two requests means the same TCP connection
        assert request.client is not None
        return {"port": request.client.port}

    return router


@pytest.fixture
def server(settings: Settings, free_port):  # type: ignore[no-untyped-def]
    app = create_service_app(SPEC, settings, routers=[_router()])
    with ServerThread(app, free_port()) as running:
        yield running


def _lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def test_500__logged_once_with_ids__keep_alive_survives(server, capsys) -> None:
    # One plain HTTP/1.1 connection (http.client keeps its socket and never reconnects by
    # itself, and, unlike httpx here, is not instrumented to replace our traceparent).
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)

    def get(path: str, **headers: str) -> Answer:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)

    try:
        before = get("/v1/port").json()["port"]
        boom = get("/v1/boom", traceparent=TRACEPARENT)
        after = get("/v1/port")  # ECONNRESET / RemoteDisconnected here before the fix
        again = get("/v1/boom")
        last = get("/v1/port")
    finally:
        connection.close()

    assert boom.status == 500 and again.status == 500
    assert boom.headers["content-type"] == "application/problem+json"
    assert b"hunter2" not in boom.body
    request_id = boom.json()["request_id"]
    assert request_id == boom.headers["x-request-id"]
    # the same connection served every request: nothing was closed under the client
    assert after.status == 200 and after.json()["port"] == before
    assert last.json()["port"] == before

    out = capsys.readouterr().out
    errors = [line for line in _lines(out) if line.get("level") in ("error", "critical")]
    # one line per failed request, ours, with both ids; nothing from uvicorn
    assert [line["event"] for line in errors] == ["http.unhandled_exception"] * 2, errors
    assert "Exception in ASGI application" not in out
    traced = errors[0]
    assert traced["request_id"] == request_id
    assert traced["trace_id"] == TRACE_ID
    assert "RuntimeError" in traced["exception"]
    assert errors[1]["request_id"] == again.json()["request_id"]
    # the access line of the failure says 500 under the same request id
    access = [line for line in _lines(out) if line.get("event") == "http.request" and line["status"] == 500]
    assert {line["request_id"] for line in access} == {request_id, again.json()["request_id"]}
