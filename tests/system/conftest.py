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

from collections.abc import Iterator

import launcher
import pytest
from system_support import Stack

TEST_SETTINGS = {"MONEY__PAYOUT_RETRY_BASE_S": "1", "COLLECTIONS__SCHEDULE_ENABLED": "false"}
START_TIMEOUT_S = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stack: starts the whole `caas up` stack in a subprocess (slow; ports 8000-8010)"
    )
    config.addinivalue_line("markers", "time_travel: moves the stack's chain clock forward (runs last)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("time_travel") is not None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    busy = launcher.busy_ports()
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the other stack (`caas up`) before the system tests")
    cwd = tmp_path_factory.mktemp("system")
    up = launcher.start(cwd, env_overrides=TEST_SETTINGS, log=cwd / "caas-up.log")
    stack = None
    try:
        try:
            ready_s = up.wait_ready(START_TIMEOUT_S)
        except launcher.LaunchError as error:
            pytest.fail(str(error))
        print(f"\nsystem stack ready in {ready_s:.1f}s ({cwd})")
        stack = Stack.connect(cwd=cwd, env=up.env, dev_env=up.dev_env, log=up.log)
        yield stack
    finally:
        if stack is not None:
            stack.close()
        up.stop()
        up.reap()
        busy = launcher.busy_ports([*launcher.PORTS, launcher.SIMULATOR_PORT, up.anvil_port])
        assert busy == [], f"ports still bound after the stack stopped: {busy}"
