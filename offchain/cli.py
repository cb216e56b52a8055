"""`caas`: the command line of the platform (DESIGN §5).

    caas up [--processes]      the whole stack: dependencies (embedded by default), contracts,
                               migrations, `.caas/dev.env`, all eleven services
    caas serve <service>       one service on its port
    caas migrate               apply the caas_ migrations (alembic upgrade head)

`caas serve` and `caas migrate` read `.caas/dev.env` when it exists, for the variables not set
in the environment, so they find a stack started by `caas up`. `caas up` never reads it: it
decides from the real environment what to embed, then writes the file.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

STATE_DIR = Path(".caas")


def _run(coro: object) -> int:
    try:
        import uvloop  # uvicorn[standard] ships it; the eleven servers share one fast loop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def _load_dev_env(state_dir: Path) -> None:
    from offchain.platform.devstack import load_env_file_defaults

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
def up(
    processes: bool,
    host: str,
    state_dir: Path,
    deployment_file: Path,
    anvil_port: int,
    block_time: float | None,
) -> None:
    """Start the whole stack; embedded PostgreSQL/Redis/Anvil for whichever URL is not set."""
    from offchain.platform.devstack import StackOptions, run_stack
    from offchain.platform.logging import configure_logging
    from offchain.platform.settings import Settings

    configure_logging(Settings().log.level)
    options = StackOptions(
        state_dir=state_dir.resolve(),
        deployment_file=deployment_file,
        host=host,
        processes=processes,
        anvil_port=anvil_port,
        block_time=block_time,
    )
    sys.exit(_run(run_stack(options)))


@main.command()
@click.argument("service")
@click.option("--host", default=None, help="Interface to bind (default: CAAS_BIND_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: the service's port in the map).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_DIR, show_default=True)
def serve(service: str, host: str | None, port: int | None, state_dir: Path) -> None:
    """Run one service (gateway, underwriting, ..., health)."""
    from offchain.services.registry import SERVICES

    if service not in SERVICES:
        raise click.BadParameter(f"unknown service; one of: {', '.join(SERVICES)}", param_hint="SERVICE")
    _load_dev_env(state_dir)
    sys.exit(_run(_serve_one(service, host, port)))


async def _serve_one(name: str, host: str | None, port: int | None) -> int:
    import signal

    from offchain.platform.runner import InProcessServers, NamedApp
    from offchain.platform.settings import get_settings
    from offchain.services.registry import SERVICES, create_app

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


if __name__ == "__main__":
    main()
