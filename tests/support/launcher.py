"""The one `caas up` launcher: start it in a scratch directory, wait for ready, read dev.env, stop.

Used by tests/system/conftest.py (one stack per session), tests/offchain/integration/test_stack.py
(start, stop and restart in one scratch directory) and the bench scripts (bench/stack.py,
bench/footprint.py, through bench/stack.py's sys.path). It is the real command in a subprocess
of its own session: embedded PostgreSQL, Redis and Anvil under <cwd>/.caas.

    with launched(cwd, env_overrides={"LOG__LEVEL": "WARNING"}) as up:
        up.dev_env["GATEWAY_URL"]
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from eventually import EventuallyTimeout, eventually

from offchain.services.registry import SERVICES
from offchain.stack.devstack import read_env_file
from offchain.stack.embedded import port_is_free

PORTS = [spec.port for spec in SERVICES.values()]
SIMULATOR_PORT = 8100
# What a developer's shell may carry that would point `caas up` away from its embedded default.
STRIPPED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CHAIN_RPC_URL",
    "DEPLOYMENT_FILE",
    "SIGNER_KEYS",
    "SENDER_PRIVATE_KEY",
    "CAAS_ENV",
    "PAYSTACK_SECRET_KEY",
    "SME_EVENTS_SECRET",
    "JWT_SECRET",
    "SIMULATOR_URL",
    "GATEWAY_URL",
    "DEMO_PARTNER_TOKEN",
)


class LaunchError(RuntimeError):
    """`caas up` exited, or was not ready in time; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def busy_ports(ports: Iterable[int] = (*PORTS, SIMULATOR_PORT)) -> list[int]:
    return [port for port in ports if not port_is_free("127.0.0.1", port)]


def processes_under(directory: Path) -> list[psutil.Process]:
    """Anything still running from the scratch directory (postgres, redis-server, anvil, caas)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if str(directory) in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


@dataclass
class Launched:
    """One `caas up` process and where it keeps its state."""

    cwd: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    anvil_port: int
    state_dir: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def dev_env(self) -> dict[str, str]:
        return read_env_file(self.state_dir / "dev.env")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(
        self,
        within_s: float = 300,
        ports: Iterable[int] = (*PORTS, SIMULATOR_PORT),
        probe: str = "/health/ready",
    ) -> float:
        """Wait until every port answers 200 on `probe`; the seconds since start. LaunchError if not."""
        pending = list(ports)
        with httpx.Client(timeout=2) as client:

            def still_pending() -> list[int]:
                if self.process.poll() is not None:
                    raise LaunchError(f"caas up exited ({self.process.returncode}):\n{self.log_tail()}")
                still = []
                for port in pending:
                    try:
                        if client.get(f"http://127.0.0.1:{port}{probe}").status_code != 200:
                            still.append(port)
                    except httpx.HTTPError:
                        still.append(port)
                pending[:] = still
                return still

            try:
                eventually(
                    still_pending,
                    what=f"caas up: {probe} on every port",
                    within_s=within_s,
                    every=0.3,
                    accept=lambda p: not p,
                )
            except EventuallyTimeout as timeout:
                raise LaunchError(f"{timeout}\n{self.log_tail()}") from None
        return time.monotonic() - self.started

    def stop(self, within_s: float = 60) -> int | None:
        """SIGINT, as Ctrl-C does; its session killed if it does not exit in time (then None)."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(within_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            return None

    def leftovers(self, within_s: float = 10) -> list[psutil.Process]:
        """What still runs from the scratch directory once the processes exiting by now have exited.

        The postmaster's last children exit just after pg_ctl returns: waited for, not slept for.
        """
        with contextlib.suppress(EventuallyTimeout):
            return eventually(
                lambda: processes_under(self.cwd), within_s=within_s, every=0.1, accept=lambda p: not p
            )
        return processes_under(self.cwd)

    def reap(self) -> None:
        """Kill anything left under the scratch directory."""
        for proc in self.leftovers():
            with contextlib.suppress(psutil.Error):
                proc.kill()


def start(
    cwd: Path,
    *args: str,
    anvil_port: int | None = None,
    env_overrides: Mapping[str, str] | None = None,
    strip: Iterable[str] = STRIPPED,
    state_dir: Path | None = None,
    tty: bool = False,
    log: Path | None = None,
) -> Launched:
    """`caas up --anvil-port <port> *args` in `cwd`; its output to `log` (through a pty when `tty`)."""
    anvil_port = anvil_port or free_port()
    stripped = set(strip)
    env = {k: v for k, v in os.environ.items() if k not in stripped} | dict(env_overrides or {})
    log = log or cwd / f"caas-up-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "offchain.cli", "up", "--anvil-port", str(anvil_port), *args]
    started = time.monotonic()
    if not tty:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
    else:
        process = _start_on_terminal(command, cwd, env, log)
    return Launched(cwd, process, log, env, anvil_port, state_dir or cwd / ".caas", started)


def _start_on_terminal(
    command: list[str], cwd: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """As a person at a terminal runs it: stdout and stderr are a pseudo-terminal, copied to the log."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)

    def copy() -> None:
        with log.open("wb") as sink:
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: every writer exited
                    break
                if not chunk:
                    break
                sink.write(chunk)
                sink.flush()
        os.close(controller)

    threading.Thread(target=copy, daemon=True).start()
    return process


@contextlib.contextmanager
def launched(
    cwd: Path, *args: str, ready_within_s: float = 300, stop_within_s: float = 60, **start_kw: object
) -> Iterator[Launched]:
    """Start, wait for ready, yield, stop and reap: a stack for the length of a `with` block."""
    busy = busy_ports()
    if busy:
        raise LaunchError(f"ports {busy} are in use: stop the other stack (`caas up`) first")
    up = start(cwd, *args, **start_kw)  # type: ignore[arg-type]
    try:
        up.wait_ready(ready_within_s)
        yield up
    finally:
        up.stop(stop_within_s)
        up.reap()
