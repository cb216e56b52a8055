"""Real HTTP servers for the rails tests: the simulator, and a receiver standing in for the gateway.

Each runs under uvicorn on a free port in a thread of its own (with its own event loop), so it
lives for a whole test module while every test keeps its own loop.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from eventually import eventually_async
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from offchain.rails.simulator.app import create_app
from offchain.rails.simulator.config import SimulatorConfig

PAYSTACK_SECRET = "sk_test_simulator_rails_tests_0001"
SME_SECRET = "whsec_simulator_rails_tests_0001"


class ServerThread:
    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn:{port}", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Records every POST; answers with the queued status codes first, then 200."""

    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def record(path: str, request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                self.requests.append(Received("/" + path, dict(request.headers), body, time.monotonic()))
                status = self.statuses.pop(0) if self.statuses else 200
            return JSONResponse({"received": True}, status_code=status)

        return app

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.statuses.clear()

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout_s: float = 5.0) -> list[Received]:
        return await eventually_async(
            lambda: self.on(path),
            what=f"{count} requests to {path}",
            within_s=timeout_s,
            every=0.01,
            accept=lambda received: len(received) >= count,
            describe=lambda received: f"{len(received)} of {count}",
        )


def simulator_config(receiver_url: str) -> SimulatorConfig:
    return SimulatorConfig(
        gateway_url=receiver_url,
        paystack_secret_key=PAYSTACK_SECRET,
        sme_events_secret=SME_SECRET,
        transfer_delay_s=0.05,
        webhook_attempts=4,
        webhook_backoff_s=0.05,
        webhook_max_backoff_s=0.2,
        webhook_timeout_s=2.0,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_simulator(receiver: Receiver) -> Iterator[tuple[str, str]]:
    """(simulator URL, receiver URL) while both servers run."""
    with ServerThread(receiver.app(), free_port()) as gateway:
        with ServerThread(create_app(simulator_config(gateway.url)), free_port()) as simulator:
            yield simulator.url, gateway.url
