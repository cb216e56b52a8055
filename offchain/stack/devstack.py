"""`caas up`: bring the dependencies up (embedded where no URL is given), deploy, migrate,
write `.caas/dev.env`, then serve all eleven services; Ctrl-C stops everything it started.

Each of DATABASE_URL / REDIS_URL / CHAIN_RPC_URL that is set is used as is; each that is not is
replaced by its embedded twin under the state directory. With none set this is DESIGN's
embedded default. Contracts are deployed only to a local dev chain (chain id 31337) and only
when the deployment file is missing or its addresses hold no code.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from offchain.platform.devkeys import dev_roles
from offchain.platform.logging import configure_logging, get_logger
from offchain.platform.settings import Settings
from offchain.stack.embedded import (
    EmbeddedAnvil,
    EmbeddedError,
    EmbeddedPostgres,
    EmbeddedRedis,
    port_is_free,
    rpc_call,
)

log = get_logger(__name__)

ANVIL_CHAIN_ID = 31337
# DESIGN §5, in this order; then what `caas serve` and scripts also need.
DEV_ENV_KEYS = (
    "GATEWAY_URL",
    "CHAIN_RPC_URL",
    "DEPLOYMENT_FILE",
    "DATABASE_URL",
    "REDIS_URL",
    "PAYSTACK_SECRET_KEY",
    "SME_EVENTS_SECRET",
    "DEMO_PARTNER_TOKEN",
    "SIGNER_KEYS",
    "SIMULATOR_URL",
)
EXTRA_DEV_ENV_KEYS = ("CAAS_ENV", "SENDER_PRIVATE_KEY", "JWT_SECRET", "SERVICE_KEY", "DEMO_OPERATOR_TOKEN")


@dataclass
class StackOptions:
    state_dir: Path
    deployment_file: Path
    host: str = "127.0.0.1"
    processes: bool = False
    anvil_port: int = 8545
    block_time: float | None = None
    # the SME platform + Paystack simulator, unless SIMULATOR_URL names one already running
    simulator: bool = True
    simulator_port: int = 8100


# The demo partner of the embedded default: a fixed id so tokens survive restarts.
DEV_PARTNER_ID = "00000000-0000-4000-8000-00000000d3e0"


def dev_service_key() -> str:
    """A fresh service key for one `caas up` (dev- marked: production refuses it)."""
    import secrets

    return "dev-service-key-" + secrets.token_hex(24)


def dev_operator_token(settings: Settings) -> str:
    """An HS256 operator token (caas:operations:read and manage) for the local stack."""
    from offchain.platform.auth import issue_operator_token

    return issue_operator_token(settings.auth.jwt_secret.get_secret_value())


def dev_partner_token(settings: Settings) -> str:
    """An HS256 partner token with every credit permission, as the SME auth service would issue."""
    from offchain.platform.auth import issue_token

    return issue_token(settings.auth.jwt_secret.get_secret_value(), partner_id=DEV_PARTNER_ID)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def load_env_file_defaults(path: Path) -> list[str]:
    """Fill unset environment variables from a KEY=VALUE file; explicit env always wins."""
    if not path.is_file():
        return []
    loaded = []
    for key, value in read_env_file(path).items():
        if key not in os.environ:
            os.environ[key] = value
            loaded.append(key)
    return loaded


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `caas up` for scripts and people driving the local stack. Dev keys only."]
    lines += [f"{key}={values.get(key, '')}" for key in DEV_ENV_KEYS]
    lines += ["", "# also read by `caas serve` / `caas migrate` when present"]
    lines += [f"{key}={values.get(key, '')}" for key in EXTRA_DEV_ENV_KEYS]
    tmp = path.with_suffix(".tmp")
    # it holds private keys: owner-only from the first byte
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    tmp.replace(path)


def _has_code(rpc_url: str, address: str) -> bool:
    return rpc_call(rpc_url, "eth_getCode", [address, "latest"]) not in ("0x", "0x0", None)


def deployment_is_live(rpc_url: str, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
        if data.get("chain_id") != int(rpc_call(rpc_url, "eth_chainId"), 16):
            return False
        return all(_has_code(rpc_url, c["address"]) for c in data["contracts"].values())
    except (KeyError, ValueError, TypeError):
        return False


def ensure_contracts_deployed(rpc_url: str, path: Path) -> str:
    """Deploy LoanBook + DisbursementCommittee with the dev roles unless `path` is live."""
    if deployment_is_live(rpc_url, path):
        return "reused"
    chain_id = int(rpc_call(rpc_url, "eth_chainId"), 16)
    if chain_id != ANVIL_CHAIN_ID:
        raise RuntimeError(
            f"{path} is missing or stale and chain {chain_id} is not a local dev chain: "
            "deploy with scripts/deploy.py and set DEPLOYMENT_FILE"
        )
    from offchain.chain.deployment import deploy  # web3 + vyper: only when deploying

    roles = dev_roles()
    deploy(
        rpc_url=rpc_url,
        deployer_key=roles.deployer.private_key,
        signers=[signer.address for signer in roles.signers],
        threshold=roles.threshold,
        backend_address=roles.sender.address,
        network=path.stem,
        out_dir=path.parent,
    )
    return "deployed"


def _public_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104


def _deployment_path(options: StackOptions) -> Path:
    return Path(os.environ.get("DEPLOYMENT_FILE") or options.deployment_file).resolve()


@dataclass
class DevStack:
    options: StackOptions
    _stoppers: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    # set by prepare() when this stack runs the simulator itself
    simulator_url: str | None = None

    async def prepare(self) -> dict[str, str]:
        """Dependencies up, contracts deployed, schema migrated; returns the stack's env."""
        opts = self.options
        env: dict[str, str] = {}
        given = {
            key: os.environ.get(key, "").strip() for key in ("DATABASE_URL", "REDIS_URL", "CHAIN_RPC_URL")
        }

        # PostgreSQL initialises in a thread while the main thread spawns Redis and Anvil:
        # children that must die with us are spawned from the main thread (PDEATHSIG is per
        # thread), and pg_ctl daemonises PostgreSQL anyway.
        pg_task: asyncio.Future[str] | None = None
        if not given["DATABASE_URL"]:
            postgres = EmbeddedPostgres(opts.state_dir / "pg")
            self._stoppers.append(("postgres", postgres.stop))
            pg_task = asyncio.ensure_future(asyncio.to_thread(postgres.start))
        try:
            if not given["REDIS_URL"]:
                redis = EmbeddedRedis(opts.state_dir / "redis")
                self._stoppers.append(("redis", redis.stop))
                env["REDIS_URL"] = redis.start()
            if not given["CHAIN_RPC_URL"]:
                anvil = EmbeddedAnvil(opts.state_dir, port=opts.anvil_port, block_time=opts.block_time)
                self._stoppers.append(("anvil", anvil.stop))
                env["CHAIN_RPC_URL"] = anvil.start()
        finally:
            if pg_task is not None:
                env["DATABASE_URL"] = await pg_task
        env = {**{k: v for k, v in given.items() if v}, **env}
        if opts.simulator and not os.environ.get("SIMULATOR_URL", "").strip():
            self.simulator_url = f"http://{_public_host(opts.host)}:{opts.simulator_port}"
            env["SIMULATOR_URL"] = self.simulator_url

        roles = dev_roles()
        # the services' key for service identity: generated per stack unless given
        os.environ.setdefault("SERVICE_KEY", dev_service_key())
        os.environ.setdefault("SENDER_PRIVATE_KEY", roles.sender.private_key)
        os.environ.setdefault("SIGNER_KEYS", ",".join(s.private_key for s in roles.signers))
        deployment_file = _deployment_path(opts)
        env["DEPLOYMENT_FILE"] = str(deployment_file)

        from offchain.persistence.migrate import upgrade

        started = time.monotonic()
        deployed, _ = await asyncio.gather(
            asyncio.to_thread(ensure_contracts_deployed, env["CHAIN_RPC_URL"], deployment_file),
            asyncio.to_thread(upgrade, env["DATABASE_URL"]),
        )
        log.info(
            "stack.prepared", contracts=deployed, migrated=True, seconds=round(time.monotonic() - started, 2)
        )
        os.environ.update(env)
        return env

    def write_dev_env(self, settings: Settings) -> Path:
        public_host = _public_host(self.options.host)
        values = {
            "GATEWAY_URL": f"http://{public_host}:8000",
            "CHAIN_RPC_URL": settings.chain.rpc_url or "",
            "DEPLOYMENT_FILE": str(settings.chain.deployment_file or ""),
            "DATABASE_URL": settings.database.url or "",
            "REDIS_URL": settings.redis.url or "",
            "PAYSTACK_SECRET_KEY": settings.rails.paystack_secret_key.get_secret_value(),
            "SME_EVENTS_SECRET": settings.rails.sme_events_secret.get_secret_value(),
            "DEMO_PARTNER_TOKEN": os.environ.get("DEMO_PARTNER_TOKEN") or dev_partner_token(settings),
            "SIGNER_KEYS": ",".join(k.get_secret_value() for k in settings.chain.signer_keys),
            "SIMULATOR_URL": settings.rails.simulator_url or "",
            "CAAS_ENV": settings.env.value,
            "SENDER_PRIVATE_KEY": (
                settings.chain.sender_private_key.get_secret_value()
                if settings.chain.sender_private_key
                else ""
            ),
            "JWT_SECRET": settings.auth.jwt_secret.get_secret_value(),
            "SERVICE_KEY": settings.internal.service_key.get_secret_value()
            if settings.internal.service_key
            else "",
            "DEMO_OPERATOR_TOKEN": os.environ.get("DEMO_OPERATOR_TOKEN") or dev_operator_token(settings),
        }
        path = self.options.state_dir / "dev.env"
        write_env_file(path, values)
        return path

    def stop_dependencies(self) -> None:
        for name, stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:
                log.exception("stack.stop_failed", component=name)
        self._stoppers.clear()


async def _wait_live(urls: list[str], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        pending = list(urls)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not live after {within_s:.0f}s: {', '.join(pending)}")
            results = await asyncio.gather(
                *(http.get(f"{u}/health/live") for u in pending), return_exceptions=True
            )
            pending = [
                u
                for u, r in zip(pending, results, strict=True)
                if not (isinstance(r, httpx.Response) and r.status_code == 200)
            ]
            if pending:
                await asyncio.sleep(0.2)


def _simulator_app(settings: Settings, options: StackOptions) -> Any:
    from offchain.rails.simulator.app import create_app, default_state_file
    from offchain.rails.simulator.config import SimulatorConfig
    from offchain.services.registry import SERVICES

    gateway = os.environ.get("CAAS_GATEWAY_URL") or (
        f"http://{_public_host(options.host)}:{SERVICES['gateway'].port}"
    )
    config = SimulatorConfig.from_env(
        settings, gateway_url=gateway, state_file=default_state_file(options.state_dir)
    )
    return create_app(config)


def ready_summary(options: StackOptions, settings: Settings, env: dict[str, str], dev_env: Path) -> str:
    """The one screen a person at a terminal reads once the stack is up: where everything is."""
    host = _public_host(options.host)
    gateway = f"http://{host}:8000"
    rows = [
        ("partner API", f"{gateway}/v1   (OpenAPI: {gateway}/docs)"),
        ("health", f"http://{host}:8010/v1/health"),
        ("consoles", f"{gateway}/console/signer  /console/auditor  /console/operator"),
        ("chain", env["CHAIN_RPC_URL"]),
    ]
    try:
        contracts = json.loads(Path(env["DEPLOYMENT_FILE"]).read_text())["contracts"]
        rows += [(f"  {name}", str(entry["address"])) for name, entry in contracts.items()]
    except (OSError, ValueError, KeyError, TypeError):
        rows.append(("  contracts", env["DEPLOYMENT_FILE"]))
    if settings.rails.simulator_url:
        rows.append(("simulator", settings.rails.simulator_url))
    rows += [
        ("dev env", f"{dev_env}  (DEMO_PARTNER_TOKEN, SIGNER_KEYS, ...)"),
        ("try", "caas demo   (one loan end to end, in another terminal)"),
        ("logs", "warnings and errors below; LOG_LEVEL=INFO or LOG_FORMAT=json for everything"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def _say(message: str) -> None:
    # A human line on stderr; stdout carries the JSON logs.
    print(f"caas: {message}", file=sys.stderr, flush=True)


async def run_stack(options: StackOptions) -> int:
    """The body of `caas up`; returns the process exit code."""
    from offchain.services.registry import SERVICES
    from offchain.stack.composition import create_app
    from offchain.stack.runner import (
        InProcessServers,
        NamedApp,
        PortInUseError,
        ProcessSupervisor,
    )

    started = time.monotonic()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0
    servers: InProcessServers | None = None
    stack = DevStack(options)

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1 and servers is not None:
            servers.request_stop(force=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    supervisor: ProcessSupervisor | None = None
    simulator: InProcessServers | None = None
    try:
        twins = (("PostgreSQL", "DATABASE_URL"), ("Redis", "REDIS_URL"), ("Anvil", "CHAIN_RPC_URL"))
        embedded = [name for name, key in twins if not os.environ.get(key, "").strip()]
        _say(
            "starting"
            + (f": embedded {', '.join(embedded)} under {options.state_dir}" if embedded else "")
            + "; contracts and migrations next"
        )
        env = await stack.prepare()
        if stop.is_set():
            return 130
        settings = Settings()
        configure_logging(settings.log.level, settings.log.format)
        dev_env = stack.write_dev_env(settings)
        if stack.simulator_url is not None:
            # first, so the services' SME probes and the first webhooks find it
            simulator = InProcessServers(
                [NamedApp("simulator", _simulator_app(settings, options), options.simulator_port)],
                host=options.host,
            )
            await simulator.start()
            log.info("stack.simulator_ready", url=stack.simulator_url)

        if options.processes:
            # a child that cannot bind would only crash-loop: say which port, up front
            for spec in SERVICES.values():
                if not port_is_free(options.host, spec.port):
                    raise PortInUseError(f"cannot listen on {options.host}:{spec.port}: in use")
            supervisor = ProcessSupervisor(list(SERVICES), env={**os.environ, "CAAS_BIND_HOST": options.host})
            await supervisor.start()
            await _wait_live([f"http://127.0.0.1:{s.port}" for s in SERVICES.values()], within_s=90)
        else:
            apps = [NamedApp(name, create_app(name, settings), spec.port) for name, spec in SERVICES.items()]
            servers = InProcessServers(apps, host=options.host)
            await servers.start()

        elapsed = round(time.monotonic() - started, 2)
        log.info(
            "stack.ready",
            startup_s=elapsed,
            services=len(SERVICES),
            processes=options.processes,
            dev_env=str(dev_env),
        )
        _say(
            f"{len(SERVICES)} services up in {elapsed}s on ports 8000-8010 ({env['CHAIN_RPC_URL']}); "
            f"wrote {dev_env}; Ctrl-C stops everything"
        )
        if settings.log.format == "console":
            print(ready_summary(options, settings, env, dev_env), file=sys.stderr, flush=True)

        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if servers is not None:
            waiters.append(asyncio.ensure_future(servers.wait()))
        if supervisor is not None:
            waiters.append(asyncio.ensure_future(supervisor.failed.wait()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        return 0 if stop.is_set() else 1
    except (PortInUseError, EmbeddedError) as exc:
        # expected operator errors: one clear line, no traceback
        log.error("stack.failed", error=str(exc))
        _say(f"error: {exc}")
        return 1
    finally:
        _say("stopping")
        if servers is not None:
            await servers.stop()
        if supervisor is not None:
            await supervisor.stop()
        if simulator is not None:
            await simulator.stop()
        stack.stop_dependencies()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        _say("stopped")
