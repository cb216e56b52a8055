"""`caas up` end to end on its embedded default, in a scratch directory.

Starts the real command in a subprocess (embedded PostgreSQL, Redis and Anvil under
<tmp>/.caas, contracts deployed, migrations applied), waits until all eleven services are
ready, checks /v1/health, stops it with SIGINT, and proves nothing is left behind. A second
`caas up` reuses the state. Prints startup time and RSS.

    pytest -p no:ape_test tests/offchain -m stack -s
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import launcher
import psutil
import pytest

from offchain.services.registry import SERVICES
from offchain.stack.devstack import DEV_ENV_KEYS, read_env_file

pytestmark = pytest.mark.stack

PORTS = launcher.PORTS
# the terminal test wants the log format `caas up` picks by itself
STRIPPED = (*launcher.STRIPPED, "LOG_FORMAT", "LOG_LEVEL")
Run = launcher.Launched


@dataclass
class Scratch:
    cwd: Path
    anvil_port: int
    runs: list[Run]

    def start(self, *extra: str, tty: bool = False) -> Run:
        run = launcher.start(self.cwd, *extra, anvil_port=self.anvil_port, strip=STRIPPED, tty=tty)
        self.runs.append(run)
        return run


@pytest.fixture
def scratch(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Scratch]:
    busy = launcher.busy_ports(PORTS)
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the other stack before running -m stack")
    state = Scratch(tmp_path, free_port(), [])
    yield state
    # only does something when a test failed half-way
    for run in state.runs:
        run.stop()
    for proc in launcher.processes_under(tmp_path):
        proc.kill()


def _wait_ready(run: Run, timeout: float) -> float:
    try:
        return run.wait_ready(timeout, ports=PORTS)
    except launcher.LaunchError as error:
        pytest.fail(str(error))


def _stop(run: Run, cwd: Path, anvil_port: int) -> None:
    code = run.stop(60)
    if code is None:
        pytest.fail("caas up did not stop within 60 s of SIGINT")
    assert code == 0, run.log_tail()
    assert run.leftovers() == [], "processes left behind"
    busy = launcher.busy_ports([*PORTS, anvil_port])
    assert busy == [], f"ports still bound: {busy}"


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _operator(cwd: Path) -> dict[str, str]:
    """health:8010 answers services and operators: the stack's dev operator token."""
    return {"Authorization": f"Bearer {read_env_file(cwd / '.caas' / 'dev.env')['DEMO_OPERATOR_TOKEN']}"}


def _check_platform_health(cwd: Path) -> None:
    response = httpx.get("http://127.0.0.1:8010/v1/health", headers=_operator(cwd), timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["caasServices"]) == set(SERVICES)
    assert {entry["status"] for entry in body["caasServices"].values()} == {"healthy"}, body
    assert {entry["status"] for entry in body["dependencies"].values()} == {"healthy"}, body


def test_caas_up_embedded_default_then_reuse(scratch: Scratch) -> None:
    cwd, anvil_port = scratch.cwd, scratch.anvil_port

    first = scratch.start()
    first_ready = _wait_ready(first, timeout=240)
    _check_platform_health(cwd)
    rss_ready = _rss_mb(first.process.pid)
    for _ in range(20):
        httpx.get("http://127.0.0.1:8010/v1/health", headers=_operator(cwd), timeout=10)
    rss_after_traffic = _rss_mb(first.process.pid)

    dev_env = read_env_file(cwd / ".caas" / "dev.env")
    assert set(DEV_ENV_KEYS) <= set(dev_env)
    assert dev_env["GATEWAY_URL"] == "http://127.0.0.1:8000"
    assert dev_env["CHAIN_RPC_URL"] == f"http://127.0.0.1:{anvil_port}"
    assert len(dev_env["SIGNER_KEYS"].split(",")) == 3
    assert Path(dev_env["DEPLOYMENT_FILE"]).is_file()
    assert oct((cwd / ".caas" / "dev.env").stat().st_mode & 0o777) == "0o600"
    _stop(first, cwd, anvil_port)

    second = scratch.start()
    second_ready = _wait_ready(second, timeout=120)
    _check_platform_health(cwd)
    rss_second = _rss_mb(second.process.pid)
    _stop(second, cwd, anvil_port)
    log = second.log.read_text()
    assert '"contracts": "reused"' in log and '"reused_state": true' in log

    # at a terminal: one screen of URLs, then only warnings and errors, and no JSON lines
    on_terminal = scratch.start(tty=True)
    _wait_ready(on_terminal, timeout=120)
    _stop(on_terminal, cwd, anvil_port)
    screen = on_terminal.log.read_text()
    assert "partner API" in screen and "http://127.0.0.1:8000/v1" in screen, screen
    assert "LoanBook" in screen and "caas demo" in screen, screen
    assert not [line for line in screen.splitlines() if line.lstrip().startswith("{")], screen

    print(
        f"\ncaas up (one process, 11 services): first start {first_ready:.1f}s "
        f"(initdb + compile + deploy + migrate), second start {second_ready:.1f}s; "
        f"RSS {rss_ready:.0f} MB when ready, {rss_after_traffic:.0f} MB after 20 /v1/health, "
        f"{rss_second:.0f} MB on the second start"
    )


def test_caas_up_processes_mode(scratch: Scratch) -> None:
    run = scratch.start("--processes")
    ready = _wait_ready(run, timeout=300)
    _check_platform_health(scratch.cwd)
    children = psutil.Process(run.process.pid).children()
    services = [c for c in children if "offchain.cli serve" in " ".join(c.cmdline())]
    assert len(services) == len(SERVICES)
    total_rss = sum(_rss_mb(c.pid) for c in services) + _rss_mb(run.process.pid)
    _stop(run, scratch.cwd, scratch.anvil_port)
    print(f"\ncaas up --processes: ready in {ready:.1f}s; RSS of the 12 python processes {total_rss:.0f} MB")
