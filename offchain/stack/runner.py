"""Serving services: several uvicorn servers in one event loop, or one supervised process each.

In-process (`caas up`, `caas serve`): every port is bound before anything starts, so a busy
port fails fast with its number; signals are handled once, here, for all servers (uvicorn's
per-server handlers would each replace the previous one).

Processes (`caas up --processes`): one `caas serve <name>` child per service, each in its own
session so Ctrl-C reaches only us; we stop them in order, restart crashed ones with backoff,
and give up (stopping everything) if one keeps crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import structlog
import uvicorn
from fastapi import FastAPI

from offchain.platform.logging import get_logger
from offchain.stack.embedded import die_with_parent

log = get_logger(__name__)


class PortInUseError(RuntimeError):
    pass


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the runner owns signal handling


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket, service: str) -> None:
    # uvicorn's own lines (startup, shutdown, errors) carry the service they belong to
    structlog.contextvars.bind_contextvars(service=service)
    await server.serve(sockets=[sock])


@dataclass
class NamedApp:
    name: str
    app: FastAPI
    port: int


@dataclass
class InProcessServers:
    apps: Sequence[NamedApp]
    host: str = "127.0.0.1"
    _servers: list[_Server] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)

    async def start(self, within_s: float = 60) -> None:
        """Bind all ports, start all servers, return once every one is accepting."""
        try:
            for named in self.apps:
                self._sockets.append(bind(self.host, named.port))
        except PortInUseError:
            self._close_sockets()
            raise
        for named, sock in zip(self.apps, self._sockets, strict=True):
            config = uvicorn.Config(
                named.app,
                host=self.host,
                port=named.port,
                log_config=None,  # offchain.platform.logging owns the handlers
                access_log=False,
                server_header=False,
                lifespan="on",
                timeout_graceful_shutdown=10,
            )
            server = _Server(config)
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(_serve(server, sock, named.name), name=named.name))
        deadline = time.monotonic() + within_s
        while not all(server.started for server in self._servers):
            failed = [task.get_name() for task in self._tasks if task.done()]
            if failed:
                await self.stop()
                raise RuntimeError(f"service(s) failed to start: {', '.join(failed)}")
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError("services did not start in time")
            await asyncio.sleep(0.02)

    async def wait(self) -> None:
        """Return when any server stops by itself (a lifespan failure, for instance)."""
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    def request_stop(self, *, force: bool = False) -> None:
        for server in self._servers:
            server.should_exit = True
            server.force_exit = server.force_exit or force

    async def stop(self) -> None:
        self.request_stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


@dataclass
class ProcessSupervisor:
    """Runs `command(name)` per service; restarts with backoff; gives up after a crash loop."""

    names: Sequence[str]
    env: dict[str, str]
    max_restarts: int = 5
    window_s: float = 60.0
    stop_timeout_s: float = 15.0
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    _processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    @staticmethod
    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "offchain.cli", "serve", name]

    async def start(self) -> None:
        for name in self.names:
            self._tasks.append(asyncio.create_task(self._keep_running(name), name=f"supervise:{name}"))

    async def _spawn(self, name: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self.command(name),
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._processes[name] = process
        log.info("supervisor.started", child=name, pid=process.pid)
        return process

    async def _keep_running(self, name: str) -> None:
        crashes: list[float] = []
        while not self._stopping:
            process = await self._spawn(name)
            code = await process.wait()
            if self._stopping:
                return
            now = time.monotonic()
            crashes = [t for t in crashes if now - t < self.window_s] + [now]
            log.error("supervisor.child_exited", child=name, code=code, recent_crashes=len(crashes))
            if len(crashes) > self.max_restarts:
                log.error("supervisor.giving_up", child=name)
                self.failed.set()
                return
            await asyncio.sleep(min(2 ** (len(crashes) - 1), 30))

    async def stop(self) -> None:
        self._stopping = True
        # Cancel the watchers first so none spawns a replacement while we are stopping.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for name, process in self._processes.items():
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout_s)
            except TimeoutError:
                log.warning("supervisor.kill", child=name)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
