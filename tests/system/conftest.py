"""The whole stack for the system tests: `caas up` on its embedded default, in a scratch directory.

One stack per session (its first start compiles, deploys and migrates, which is most of the
cost). It is the real command in a subprocess: embedded PostgreSQL, Redis and Anvil under
<tmp>/.caas, the simulator on :8100 and the eleven services on 8000-8010, exactly what
`make run` starts, with two settings changed for the clock of a test:

- MONEY__PAYOUT_RETRY_BASE_S=1: a failed payout is retried after 1 s instead of 60 s;
- COLLECTIONS__SCHEDULE_ENABLED=false: the tests choose the business dates they close (the
  daily job would otherwise close the wall clock's date while the chain's clock is months ahead).

Tests that move the chain's clock (`@pytest.mark.time_travel`) run last: approval deadlines
are wall-clock times, and after months of evm_increaseTime a new loan's signatures would be
expired on chain.

    pytest -p no:ape_test -p no:cacheprovider tests/system -m stack -s
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from system_support import Stack

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
TEST_SETTINGS = {"MONEY__PAYOUT_RETRY_BASE_S": "1", "COLLECTIONS__SCHEDULE_ENABLED": "false"}
START_TIMEOUT_S = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stack: starts the whole `caas up` stack in a subprocess (slow; ports 8000-8010)"
    )
    config.addinivalue_line("markers", "time_travel: moves the stack's chain clock forward (runs last)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("time_travel") is not None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _processes_under(directory: Path) -> list[psutil.Process]:
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


def _wait_ready(process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [*PORTS, SIMULATOR_PORT]
    with httpx.Client(timeout=2) as client:
        while pending:
            if process.poll() is not None:
                pytest.fail(f"caas up exited ({process.returncode}):\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {timeout}s: {pending}\n{log.read_text()[-4000:]}")
            still = []
            for port in pending:
                try:
                    if client.get(f"http://127.0.0.1:{port}/health/ready").status_code != 200:
                        still.append(port)
                except httpx.HTTPError:
                    still.append(port)
            pending = still
            if pending:
                time.sleep(0.3)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    busy = [port for port in [*PORTS, SIMULATOR_PORT] if not port_is_free("127.0.0.1", port)]
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the other stack (`caas up`) before the system tests")
    cwd = tmp_path_factory.mktemp("system")
    anvil_port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED} | TEST_SETTINGS
    log = cwd / "caas-up.log"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "offchain.cli", "up", "--anvil-port", str(anvil_port)],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = None
    try:
        _wait_ready(process, log, START_TIMEOUT_S)
        print(f"\nsystem stack ready in {time.monotonic() - started:.1f}s ({cwd})")
        stack = Stack.connect(cwd=cwd, env=env, dev_env=read_env_file(cwd / ".caas" / "dev.env"), log=log)
        yield stack
    finally:
        if stack is not None:
            stack.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.5)  # postmaster's last children exit just after pg_ctl returns
        for proc in _processes_under(cwd):
            proc.kill()
        busy = [port for port in [*PORTS, SIMULATOR_PORT, anvil_port] if not port_is_free("127.0.0.1", port)]
        assert busy == [], f"ports still bound after the stack stopped: {busy}"
