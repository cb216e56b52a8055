"""`caas up` end to end on its embedded default, in a scratch directory.

Starts the real command in a subprocess (embedded PostgreSQL, Redis and Anvil under
<tmp>/.caas, contracts deployed, migrations applied), waits until all eleven services are
ready, checks /v1/health, stops it with SIGINT, and proves nothing is left behind. A second
`caas up` reuses the state. Prints startup time and RSS.

    pytest -p no:ape_test tests/offchain -m stack -s
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from offchain.services.registry import SERVICES
from offchain.stack.devstack import DEV_ENV_KEYS, read_env_file
from offchain.stack.embedded import port_is_free

pytestmark = pytest.mark.stack

PORTS = [spec.port for spec in SERVICES.values()]
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
)


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    started: float
    log: Path


def _processes_under(directory: Path) -> list[psutil.Process]:
    """Anything still running from the scratch directory (postgres, redis-server, anvil, caas)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(directory) in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


@dataclass
class Scratch:
    cwd: Path
    anvil_port: int
    runs: list[Run]

    def start(self, *extra: str, tty: bool = False) -> Run:
        run = _start(self.cwd, self.anvil_port, *extra, tty=tty)
        self.runs.append(run)
        return run


@pytest.fixture
def scratch(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Scratch]:
    busy = [port for port in PORTS if not port_is_free("127.0.0.1", port)]
    if busy:
        pytest.fail(f"ports {busy} are in use: stop the other stack before running -m stack")
    state = Scratch(tmp_path, free_port(), [])
    yield state
    # only does something when a test failed half-way
    for run in state.runs:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            try:
                run.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(run.process.pid, signal.SIGKILL)
    for proc in _processes_under(tmp_path):
        proc.kill()


def _start(cwd: Path, anvil_port: int, *extra: str, tty: bool = False) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in (*STRIPPED, "LOG_FORMAT", "LOG_LEVEL")}
    log = cwd / f"caas-up-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "offchain.cli", "up", "--anvil-port", str(anvil_port), *extra]
    if not tty:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        return Run(process, time.monotonic(), log)
    # as a person at a terminal runs it: stdout and stderr are a pseudo-terminal, copied to the log
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
    return Run(process, time.monotonic(), log)


def _wait_ready(run: Run, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        pending = list(PORTS)
        while pending:
            if run.process.poll() is not None:
                pytest.fail(f"caas up exited ({run.process.returncode}):\n{run.log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {timeout}s: {pending}\n{run.log.read_text()[-4000:]}")
            still = []
            for port in pending:
                try:
                    if client.get(f"http://127.0.0.1:{port}/health/ready").status_code != 200:
                        still.append(port)
                except httpx.HTTPError:
                    still.append(port)
            pending = still
            if pending:
                time.sleep(0.2)
    return time.monotonic() - run.started


def _stop(run: Run, cwd: Path, anvil_port: int) -> None:
    run.process.send_signal(signal.SIGINT)
    try:
        code = run.process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(run.process.pid, signal.SIGKILL)
        pytest.fail("caas up did not stop within 60 s of SIGINT")
    assert code == 0, run.log.read_text()[-4000:]
    time.sleep(0.5)  # postmaster's last children exit just after pg_ctl returns
    assert _processes_under(cwd) == [], "processes left behind"
    busy = [port for port in [*PORTS, anvil_port] if not port_is_free("127.0.0.1", port)]
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
