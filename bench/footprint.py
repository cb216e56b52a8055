"""Memory footprint of the whole stack: `caas up` in one process, then with `--processes`.

Starts the real stack (embedded PostgreSQL, Redis and Anvil in a scratch state directory, all
eleven services on ports 8000-8010, the simulator), waits until every service is live and the
platform reports itself through /v1/health, lets it settle, then measures every process of the
stack: the caas process(es), redis-server, anvil and the PostgreSQL server processes (pg_ctl
daemonises them, so they are found by their data directory). RSS counts shared pages once per
process, so PSS (shared pages split between their users) is summed as well: PSS adds up to what
the stack really takes from the machine. The target server has 1 CPU and 4 GB for everything.

    python bench/footprint.py [--write]    # needs ports 8000-8010 free; stops what it started
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_section

from offchain.stack.devstack import read_env_file

ROOT = Path(__file__).resolve().parents[1]
PORTS = range(8000, 8011)
TARGET_BYTES = 4 * 1024**3
MiB = 1024**2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Measure:
    mode: str
    startup_s: float
    rows: dict[str, tuple[int, int, int]]  # component -> (processes, rss, pss)

    def total(self, index: int) -> int:
        return sum(row[index] for row in self.rows.values())


def _component(process: psutil.Process) -> str | None:
    try:
        cmdline = " ".join(process.cmdline())
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "redis-server" in cmdline:
        return "redis"
    if "anvil" in name:
        return "anvil"
    if "offchain.cli" in cmdline:
        return "caas services (python)"
    return "other"


def _measure(root: psutil.Process, state_dir: Path) -> dict[str, tuple[int, int, int]]:
    components: dict[int, tuple[psutil.Process, str | None]] = {}
    for process in psutil.process_iter(["name", "cmdline"]):  # the daemonised PostgreSQL
        if process.info["name"] and process.info["name"].startswith("postgres"):
            if str(state_dir) in " ".join(process.info["cmdline"] or []):
                # its backends and workers ("postgres: caas caas [local] idle") belong to it too
                for member in [process, *process.children(recursive=True)]:
                    components[member.pid] = (member, "postgresql")
    for member in [root, *root.children(recursive=True)]:
        components.setdefault(member.pid, (member, _component(member)))
    rows: dict[str, list[int]] = {}
    for process, component in components.values():
        if component is None:
            continue
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        row = rows.setdefault(component, [0, 0, 0])
        row[0] += 1
        row[1] += info.rss
        row[2] += getattr(info, "pss", info.rss)
    return {name: (row[0], row[1], row[2]) for name, row in sorted(rows.items())}


def _wait_live(process: subprocess.Popen[bytes], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"caas up exited with {process.returncode}")
            try:
                answers = [client.get(f"http://127.0.0.1:{port}/health/live") for port in PORTS]
                if all(answer.status_code == 200 for answer in answers):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"stack not live within {within_s}s")


def run(mode: str, *, settle_s: float) -> Measure:
    processes = mode == "processes"
    with tempfile.TemporaryDirectory(prefix="caas-footprint-") as scratch:
        state_dir = Path(scratch) / "state"
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "REDIS_URL", "CHAIN_RPC_URL", "DEPLOYMENT_FILE", "SIMULATOR_URL")
        }
        command = [
            sys.executable, "-m", "offchain.cli", "up",
            "--state-dir", str(state_dir),
            "--deployment-file", str(Path(scratch) / "deployments" / "local.json"),
            "--anvil-port", str(_free_port()),
            "--simulator-port", str(_free_port()),
        ] + (["--processes"] if processes else [])  # fmt: skip
        started = time.monotonic()
        with (Path(scratch) / "up.log").open("wb") as log:
            up = subprocess.Popen(
                command, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_live(up, within_s=240)
            startup = time.monotonic() - started
            # health:8010 answers services and operators: the stack's dev operator token
            token = read_env_file(state_dir / "dev.env")["DEMO_OPERATOR_TOKEN"]
            with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
                for _ in range(3):  # every service probed, the health monitor has run
                    client.get("http://127.0.0.1:8010/v1/health").raise_for_status()
            time.sleep(settle_s)
            rows = _measure(psutil.Process(up.pid), state_dir)
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
    return Measure(mode, startup, rows)


def render(results: list[Measure]) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} by `python bench/footprint.py --write` on this machine "
        f"({psutil.cpu_count()} CPUs shared with other work, "
        f"{psutil.virtual_memory().total / 1024**3:.1f} GB): "
        "the embedded default of `caas up`, idle after start-up and a few `/v1/health` rounds. "
        "PSS splits shared pages between the processes that share them, so its total is what the "
        "stack takes; RSS double-counts them.",
        "",
        "| mode | component | processes | RSS MiB | PSS MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for result in results:
        for component, (count, rss, pss) in result.rows.items():
            lines.append(f"| {result.mode} | {component} | {count} | {rss / MiB:.0f} | {pss / MiB:.0f} |")
        lines.append(
            f"| **{result.mode}** | **total** (start-up {result.startup_s:.0f} s) | "
            f"{sum(r[0] for r in result.rows.values())} | **{result.total(1) / MiB:.0f}** | "
            f"**{result.total(2) / MiB:.0f}** |"
        )
    lines += [""]
    for result in results:
        pss = result.total(2)
        lines.append(
            f"- {result.mode}: {pss / MiB:.0f} MiB PSS = {pss / TARGET_BYTES:.0%} of the target server's "
            f"4 GB, leaving {(TARGET_BYTES - pss) / MiB:.0f} MiB for PostgreSQL's cache, Redis and load."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the section of docs/BENCHMARKS.md")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle before measuring")
    parser.add_argument("--modes", default="one-process,processes")
    args = parser.parse_args()
    busy = [port for port in PORTS if _port_busy(port)]
    if busy:
        print(f"ports in use: {busy}; stop what listens there first", file=sys.stderr)
        return 1
    results = [run(mode, settle_s=args.settle) for mode in args.modes.split(",")]
    rendered = render(results)
    print(rendered)
    if args.write:
        write_section("footprint", "Footprint (`python bench/footprint.py --write`)", rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
