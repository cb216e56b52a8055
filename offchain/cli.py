"""`caas`: the command line of the platform (DESIGN §5).

    caas up [--processes]      the whole stack: dependencies (embedded by default), contracts,
                               migrations, `.caas/dev.env`, all eleven services
    caas serve <service>       one service on its port
    caas migrate               apply the caas_ migrations (alembic upgrade head)
    caas simulator             the SME platform + Paystack simulator on :8100 (`caas up` runs it too)
    caas index [--once]        index chain events into the caas_ tables (the orchestration
                               service runs the same indexer in the background)
    caas demo                  one loan end to end against the running stack, printed step by
                               step with its transaction hashes

`caas serve` and `caas migrate` read `.caas/dev.env` when it exists, for the variables not set
in the environment, so they find a stack started by `caas up`. `caas up` never reads it: it
decides from the real environment what to embed, then writes the file.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from offchain.stack.runner import InProcessServers

STATE_DIR = Path(".caas")


def _run(coro: object) -> int:
    try:
        import uvloop  # uvicorn[standard] ships it; the eleven servers share one fast loop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def _load_dev_env(state_dir: Path) -> None:
    from offchain.stack.devstack import load_env_file_defaults

    load_env_file_defaults(state_dir / "dev.env")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Credit-as-a-Service: run and operate the platform."""


@main.command()
@click.option("--processes", is_flag=True, help="One process per service instead of one for all.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the services bind.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=STATE_DIR,
    show_default=True,
    help="Where embedded PostgreSQL, Redis and Anvil keep their state, and dev.env.",
)
@click.option(
    "--deployment-file",
    type=click.Path(path_type=Path),
    default=Path("deployments/local.json"),
    show_default=True,
    help="Contract deployment to use or create (DEPLOYMENT_FILE wins).",
)
@click.option("--anvil-port", type=int, default=8545, show_default=True)
@click.option(
    "--block-time", type=float, default=None, help="Anvil block time in seconds (default: automine)."
)
@click.option(
    "--simulator/--no-simulator",
    default=True,
    show_default=True,
    help="Serve the SME platform + Paystack simulator (skipped when SIMULATOR_URL is set).",
)
@click.option("--simulator-port", type=int, default=8100, show_default=True)
def up(
    processes: bool,
    host: str,
    state_dir: Path,
    deployment_file: Path,
    anvil_port: int,
    block_time: float | None,
    simulator: bool,
    simulator_port: int,
) -> None:
    """Start the whole stack; embedded PostgreSQL/Redis/Anvil for whichever URL is not set."""
    from offchain.platform.logging import configure_logging
    from offchain.platform.settings import Settings
    from offchain.stack.devstack import StackOptions, run_stack

    if Settings().log.format == "console":
        # people at a terminal get one screen of URLs, then warnings and errors; the per-request
        # and per-step INFO lines are for log shippers (LOG_LEVEL=INFO or LOG_FORMAT=json)
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        os.environ.setdefault("LOG_ACCESS", "false")
    settings = Settings()
    configure_logging(settings.log.level, settings.log.format)
    options = StackOptions(
        state_dir=state_dir.resolve(),
        deployment_file=deployment_file,
        host=host,
        processes=processes,
        anvil_port=anvil_port,
        block_time=block_time,
        simulator=simulator,
        simulator_port=simulator_port,
    )
    sys.exit(_run(run_stack(options)))


@main.command()
@click.argument("service")
@click.option("--host", default=None, help="Interface to bind (default: CAAS_BIND_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: the service's port in the map).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes sharing the port: one per core for the partner API (a Python process uses one).",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def serve(service: str, host: str | None, port: int | None, workers: int, state_dir: Path) -> None:
    """Run one service (gateway, underwriting, ..., health)."""
    from offchain.services.registry import SERVICES

    if service not in SERVICES:
        raise click.BadParameter(f"unknown service; one of: {', '.join(SERVICES)}", param_hint="SERVICE")
    _load_dev_env(state_dir)
    if workers > 1:
        _serve_workers(service, host, port, workers)
        return
    sys.exit(_run(_serve_one(service, host, port)))


_SERVED_SERVICE = "CAAS_SERVED_SERVICE"


def served_app() -> Any:
    """uvicorn's app factory in each worker process of `caas serve --workers N`."""
    from offchain.platform.logging import configure_logging
    from offchain.platform.settings import get_settings
    from offchain.stack.composition import create_app

    settings = get_settings()
    configure_logging(settings.log.level, settings.log.format)
    return create_app(os.environ[_SERVED_SERVICE], settings)


def _serve_workers(name: str, host: str | None, port: int | None, workers: int) -> None:
    """uvicorn's supervisor: binds the port once, runs `workers` processes on it, restarts one
    that dies. Each builds its own app (pools, clients) and runs its own background jobs, which
    share their streams through consumer groups as separate processes always do."""
    import uvicorn

    from offchain.platform.settings import get_settings
    from offchain.services.registry import SERVICES

    settings = get_settings()
    os.environ[_SERVED_SERVICE] = name
    uvicorn.run(
        "offchain.cli:served_app",
        factory=True,
        host=host or settings.services.bind_host,
        port=port or SERVICES[name].port,
        workers=workers,
        log_config=None,  # offchain.platform.logging owns the handlers
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


async def _serve_one(name: str, host: str | None, port: int | None) -> int:
    import signal

    from offchain.platform.settings import get_settings
    from offchain.services.registry import SERVICES
    from offchain.stack.composition import create_app
    from offchain.stack.runner import InProcessServers, NamedApp

    settings = get_settings()
    servers = InProcessServers(
        [NamedApp(name, create_app(name, settings), port or SERVICES[name].port)],
        host=host or settings.services.bind_host,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hits = 0

    def on_signal() -> None:
        nonlocal hits
        hits += 1
        stop.set()
        servers.request_stop(force=hits > 1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await servers.start()
    await servers.wait()
    await servers.stop()
    return 0 if stop.is_set() else 1


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def migrate(revision: str, state_dir: Path) -> None:
    """Apply the caas_ schema migrations to DATABASE_URL."""
    from offchain.persistence.migrate import upgrade
    from offchain.platform.db import redacted
    from offchain.platform.settings import Settings

    _load_dev_env(state_dir)
    url = Settings().database.url
    if not url:
        raise click.UsageError("DATABASE_URL is not set (and no .caas/dev.env provides it)")
    upgrade(url, revision)
    click.echo(f"migrated {redacted(url)} to {revision}")


@main.command()
@click.option("--host", default=None, help="Interface to bind (default: CAAS_BIND_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=8100, show_default=True)
@click.option(
    "--gateway-url",
    default=None,
    help="Where Paystack webhooks and SME events go (default: CAAS_GATEWAY_URL, GATEWAY_URL, :8000).",
)
@click.option("--transfer-delay", type=float, default=None, help="Seconds until a transfer settles (0.2).")
@click.option("--otp/--no-otp", "otp", default=None, help="Transfers wait for an OTP (123456).")
@click.option(
    "--state-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the simulated world in this JSON file across restarts (default: memory only).",
)
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def simulator(
    host: str | None,
    port: int,
    gateway_url: str | None,
    transfer_delay: float | None,
    otp: bool | None,
    state_file: Path | None,
    state_dir: Path,
) -> None:
    """Serve the SME platform + Paystack simulator (development and tests; outside the port map)."""
    from offchain.platform.logging import configure_logging
    from offchain.platform.settings import get_settings
    from offchain.rails.simulator.app import create_app
    from offchain.rails.simulator.config import SimulatorConfig
    from offchain.stack.runner import InProcessServers, NamedApp

    _load_dev_env(state_dir)
    settings = get_settings()
    configure_logging(settings.log.level, settings.log.format)
    config = SimulatorConfig.from_env(
        settings,
        gateway_url=gateway_url,
        transfer_delay_s=transfer_delay,
        otp_required=otp,
        state_file=state_file,
    )
    servers = InProcessServers(
        [NamedApp("simulator", create_app(config), port)], host=host or settings.services.bind_host
    )
    click.echo(f"caas: simulator on http://{host or settings.services.bind_host}:{port}", err=True)
    sys.exit(_run(_serve_until_signal(servers)))


async def _serve_until_signal(servers: InProcessServers) -> int:
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hits = 0

    def on_signal() -> None:
        nonlocal hits
        hits += 1
        stop.set()
        servers.request_stop(force=hits > 1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await servers.start()
    await servers.wait()
    await servers.stop()
    return 0 if stop.is_set() else 1


@main.command()
@click.option("--once", is_flag=True, help="One catch-up pass up to head - confirmations, then exit.")
@click.option(
    "--wait/--no-wait",
    "wait",
    default=None,
    help="If another indexer holds the chain's lock: wait for it, or exit at once "
    "(default: INDEXER__WAIT_FOR_LOCK).",
)
@click.option(
    "--confirmations", type=int, default=None, help="Blocks behind the head (INDEXER__CONFIRMATIONS)."
)
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def index(
    once: bool, wait: bool | None, confirmations: int | None, metrics_port: int | None, state_dir: Path
) -> None:
    """Index LoanBook and committee events into the caas_ tables (until Ctrl-C, or --once).

    Exit status: 0 done, 1 misconfigured, 2 reorg deeper than the window (re-index needed),
    3 another indexer holds the lock (with --no-wait).
    """
    _load_dev_env(state_dir)
    sys.exit(_run(_index(once=once, wait=wait, confirmations=confirmations, metrics_port=metrics_port)))


async def _index(
    *, once: bool, wait: bool | None, confirmations: int | None, metrics_port: int | None
) -> int:
    import signal

    from prometheus_client import CollectorRegistry, start_http_server

    from offchain.chain.indexer import IndexerError, IndexerLockHeldError, ReorgTooDeepError, run_indexer
    from offchain.chain.indexer.metrics import IndexerMetrics
    from offchain.chain.jsonrpc import RpcError
    from offchain.platform.logging import configure_logging
    from offchain.platform.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log.level, settings.log.format)
    overrides = {
        key: value
        for key, value in (("wait_for_lock", wait), ("confirmations", confirmations))
        if value is not None
    }
    if overrides:
        settings = settings.model_copy(update={"indexer": settings.indexer.model_copy(update=overrides)})
    metrics = IndexerMetrics()
    if metrics_port:
        registry = CollectorRegistry()
        metrics.register(registry)
        start_http_server(metrics_port, registry=registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        summary = await run_indexer(settings=settings, stop=stop, metrics=metrics, once=once)
    except ReorgTooDeepError as exc:
        click.echo(f"caas index: {exc}", err=True)
        return 2
    except IndexerLockHeldError as exc:
        click.echo(f"caas index: {exc}", err=True)
        return 3
    except IndexerError as exc:
        click.echo(f"caas index: {exc}", err=True)
        return 1
    except RpcError as exc:
        click.echo(f"caas index: the node at CHAIN_RPC_URL failed: {exc}", err=True)
        return 1
    if summary is not None:
        click.echo(
            f"indexed to block {summary.checkpoint}: {summary.inserted} new events in {summary.batches} "
            f"batches, {summary.reorgs} reorgs, {summary.seconds:.2f} s"
        )
    return 0


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds each step may take before failing.",
)
@click.option(
    "--amount", type=int, default=None, help="Principal asked for, in kobo (default NGN 500,000.00)."
)
@click.option("--tenor-months", type=int, default=None, help="Tenor asked for (default 3).")
@click.option("--sme-user-id", default=None, help="The borrower's SME user id (default acme-trading-ltd).")
def demo(
    state_dir: Path, timeout: float, amount: int | None, tenor_months: int | None, sme_user_id: str | None
) -> None:
    """One loan end to end against the running stack (`caas up`): application, decision, offer,
    acceptance, two signer signatures, payout, three repayments (one delivered twice), REPAID.

    Reads GATEWAY_URL, DEMO_PARTNER_TOKEN, SIGNER_KEYS, SIMULATOR_URL, CHAIN_RPC_URL and
    DEPLOYMENT_FILE from the environment or .caas/dev.env. Exit status 0 when the chain says REPAID,
    1 on any refusal, failure or timeout (with the step and the reason).
    """
    from offchain.demo import DemoConfig, DemoError, run_demo

    try:
        config = DemoConfig.from_env(
            state_dir / "dev.env",
            step_timeout_s=timeout,
            amount=amount,
            tenor_months=tenor_months,
            sme_user_id=sme_user_id,
        )
        run_demo(config, out=lambda line: click.echo(line))
    except DemoError as exc:
        click.echo(f"caas demo failed at {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("caas demo interrupted", err=True)
        sys.exit(130)


def _register_tools() -> None:
    from offchain.cli_tools import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_tools()


# last: `python -m offchain.cli` must see the tool commands registered above too
if __name__ == "__main__":
    main()
