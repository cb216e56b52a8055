"""A real HTTP server on a free port that records what it is sent (webhook and SMS tests).

Each path has a behaviour: `respond(path, count)` returns the status for the `count`-th request
(1-based) to that path, so tests describe flaky or dead endpoints without mocks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


Behaviour = Callable[[str, int], tuple[int, dict[str, Any] | None]]


def default_behaviour(path: str, count: int) -> tuple[int, dict[str, Any] | None]:
    """/ok/...: 200; /down/...: 500 always; /flaky/<n>/...: 500 for the first n, then 200."""
    parts = path.strip("/").split("/")
    if parts[0] == "down":
        return 500, {"error": "down"}
    if parts[0] == "flaky":
        return (503, None) if count <= int(parts[1]) else (200, {"ok": True})
    if parts[0] == "bad":
        return 400, {"error": "rejected"}
    return 200, {"ok": True, "message_id": f"msg-{count}"}


@contextmanager
def receiver(behaviour: Behaviour = default_behaviour) -> Iterator[Receiver]:
    counts: dict[str, int] = {}
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            rec = state["receiver"]
            with rec.lock:
                counts[self.path] = counts.get(self.path, 0) + 1
                count = counts[self.path]
                rec.requests.append(Received(self.path, dict(self.headers.items()), body, time.time()))
            status, answer = behaviour(self.path, count)
            raw = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["receiver"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
