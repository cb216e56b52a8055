"""The whole stack for the system tests: `caas up` on its embedded default, in a scratch directory.

One stack per session (its first start compiles, deploys and migrates, which is most of the
cost). It is the real command in a subprocess: embedded PostgreSQL, Redis and Anvil under
<tmp>/.caas, the simulator on :8100 and the eleven services on 8000-8010, exactly what
`make run` starts, with two settings changed for the clock of a test:

- MONEY__PAYOUT_RETRY_BASE_S=1: a failed payout is retried after 1 s instead of 60 s;
- COLLECTIONS__SCHEDULE_ENABLED=false: the tests choose the business dates they close (the
  daily job would otherwise close the wall clock's date while the chain's clock is months ahead).

The stack runs on each chain of CHAINS (`CAAS_SYSTEM_CHAINS=anvil,hardhat` narrows the list):

- `anvil`: the embedded Anvil on automine, indexer depth 0, as `make run` (every journey);
- `hardhat`: Hardhat Network (npm `hardhat`, its own EVM; hardhat.config.js) with a block every
  2 s and indexer depth 2, passed to `caas up` as CHAIN_RPC_URL (journeys marked `all_chains`:
  demo, default + write-off, payout retry);
- `anvil-1s`: the embedded Anvil with `--block-time 1` and depth 2 (journeys marked `all_chains`).

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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from system_support import Stack

from offchain.platform.devstack import read_env_file
from offchain.platform.embedded import port_is_free
from offchain.services.registry import SERVICES

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
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ChainOption:
    name: str
    up_args: tuple[str, ...] = ()
    settings: dict[str, str] = field(default_factory=dict)
    hardhat: bool = False


CHAINS = {
    "anvil": ChainOption("anvil"),
    "hardhat": ChainOption("hardhat", settings={"INDEXER__CONFIRMATIONS": "2"}, hardhat=True),
    "anvil-1s": ChainOption("anvil-1s", ("--block-time", "1"), {"INDEXER__CONFIRMATIONS": "2"}),
}


def _selected_chains() -> list[str]:
    wanted = [c.strip() for c in os.environ.get("CAAS_SYSTEM_CHAINS", ",".join(CHAINS)).split(",")]
    return [c for c in wanted if c in CHAINS]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stack: starts the whole `caas up` stack in a subprocess (slow; ports 8000-8010)"
    )
    config.addinivalue_line("markers", "time_travel: moves the stack's chain clock forward (runs last)")
    config.addinivalue_line(
        "markers", "all_chains: also runs on Hardhat (2 s blocks) and Anvil --block-time 1 (depth 2)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack_chain" in metafunc.fixturenames:
        everywhere = metafunc.definition.get_closest_marker("all_chains") is not None
        chains = [c for c in _selected_chains() if everywhere or c == "anvil"]
        metafunc.parametrize("stack_chain", chains, scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # one stack per chain: the automine stack's tests first (time travel last), then the others
    def order(item: pytest.Item) -> tuple[int, bool]:
        callspec = getattr(item, "callspec", None)
        chain = callspec.params.get("stack_chain", "anvil") if callspec else "anvil"
        rank = list(CHAINS).index(chain) if chain in CHAINS else -1  # -1: skipped, no chain selected
        return rank, item.get_closest_marker("time_travel") is not None

    items.sort(key=order)


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


def _start_hardhat(cwd: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """`npx hardhat node` (hardhat.config.js: 2 s interval mining, the dev mnemonic)."""
    log = (cwd / "hardhat.log").open("wb")
    process = subprocess.Popen(
        [str(REPO / "node_modules" / ".bin" / "hardhat"), "node", "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.post(
                url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=2
            )
            return process, url
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"hardhat node did not start:\n{(cwd / 'hardhat.log').read_text()[-2000:]}")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_chain: str) -> Iterator[Stack]:
    busy = [port for port in [*PORTS, SIMULATOR_PORT] if not port_is_free("127.0.0.1", port)]
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the other stack (`caas up`) before the system tests")
    option = CHAINS[stack_chain]
    cwd = tmp_path_factory.mktemp(f"system-{option.name}")
    anvil_port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED} | TEST_SETTINGS | option.settings
    hardhat: subprocess.Popen[bytes] | None = None
    if option.hardhat:
        hardhat, env["CHAIN_RPC_URL"] = _start_hardhat(cwd, anvil_port)
    log = cwd / "caas-up.log"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "offchain.cli", "up", "--anvil-port", str(anvil_port), *option.up_args],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = None
    try:
        _wait_ready(process, log, START_TIMEOUT_S)
        print(f"\nsystem stack on {option.name} ready in {time.monotonic() - started:.1f}s ({cwd})")
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
        if hardhat is not None:
            os.killpg(hardhat.pid, signal.SIGTERM)
            hardhat.wait(30)
        time.sleep(0.5)  # postmaster's last children exit just after pg_ctl returns
        for proc in _processes_under(cwd):
            proc.kill()
        busy = [port for port in [*PORTS, SIMULATOR_PORT, anvil_port] if not port_is_free("127.0.0.1", port)]
        assert busy == [], f"ports still bound after the stack stopped: {busy}"
