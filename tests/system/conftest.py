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
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import launcher
import pytest
from eventually import eventually
from system_support import Stack

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

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"hardhat node exited:\n{(cwd / 'hardhat.log').read_text()[-2000:]}")
        payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        return httpx.post(url, json=payload, timeout=2).status_code == 200

    eventually(
        answers,
        what="hardhat node answering eth_chainId",
        within_s=60,
        every=0.3,
        retry_on=(httpx.HTTPError,),
    )
    return process, url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, stack_chain: str) -> Iterator[Stack]:
    busy = launcher.busy_ports()
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the other stack (`caas up`) before the system tests")
    option = CHAINS[stack_chain]
    cwd = tmp_path_factory.mktemp(f"system-{option.name}")
    anvil_port = launcher.free_port()
    overrides = TEST_SETTINGS | option.settings
    hardhat: subprocess.Popen[bytes] | None = None
    if option.hardhat:
        hardhat, overrides["CHAIN_RPC_URL"] = _start_hardhat(cwd, anvil_port)
    up = launcher.start(
        cwd, *option.up_args, anvil_port=anvil_port, env_overrides=overrides, log=cwd / "caas-up.log"
    )
    stack = None
    try:
        try:
            ready_s = up.wait_ready(START_TIMEOUT_S)
        except launcher.LaunchError as error:
            pytest.fail(str(error))
        print(f"\nsystem stack on {option.name} ready in {ready_s:.1f}s ({cwd})")
        stack = Stack.connect(cwd=cwd, env=up.env, dev_env=up.dev_env, log=up.log)
        yield stack
    finally:
        if stack is not None:
            stack.close()
        up.stop()
        if hardhat is not None:
            os.killpg(hardhat.pid, signal.SIGTERM)
            hardhat.wait(30)
        up.reap()
        busy = launcher.busy_ports([*launcher.PORTS, launcher.SIMULATOR_PORT, up.anvil_port])
        assert busy == [], f"ports still bound after the stack stopped: {busy}"
