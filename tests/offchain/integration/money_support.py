"""The money stack for tests: the gateway on a real port (the simulator's webhooks reach it), the
simulator, and underwriting, orchestration, disbursement and repayment in the test's event loop,
on a fresh database, Redis and Anvil."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import httpx
import pytest
from journey_support import chain_settings
from simulator_support import PAYSTACK_SECRET, SME_SECRET, ServerThread

from offchain.platform import auth
from offchain.platform.settings import Settings
from offchain.rails.simulator.app import create_app as simulator_app
from offchain.rails.simulator.config import SimulatorConfig
from offchain.services.disbursement.app import create_app as disbursement_app
from offchain.services.gateway.app import create_app as gateway_app
from offchain.services.orchestration.app import create_app as orchestration_app
from offchain.services.repayment.app import create_app as repayment_app
from offchain.services.underwriting.app import create_app as underwriting_app

__all__ = ["_charge", "_partner_headers", "money_settings", "running_stack"]


@pytest.fixture
def money_settings(make_database, redis_url, stream_prefix, anvil_url, tmp_path: Path) -> Settings:
    settings = chain_settings(
        database_url=make_database(),
        redis_url=redis_url,
        stream_prefix=f"{stream_prefix}-money-{uuid.uuid4().hex[:6]}",
        anvil_url=anvil_url,
        out_dir=tmp_path,
    )
    return settings.model_copy(
        update={
            "money": settings.money.model_copy(
                update={"payout_retry_base_s": 0.2, "payout_verify_after_s": 2.0, "worker_poll_s": 0.1}
            )
        }
    )


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, free_port):  # type: ignore[no-untyped-def]
    gateway_port = free_port()
    config = SimulatorConfig(
        paystack_secret_key=PAYSTACK_SECRET,
        sme_events_secret=SME_SECRET,
        gateway_url=f"http://127.0.0.1:{gateway_port}",
    )
    with ServerThread(simulator_app(config), free_port()) as simulator:
        settings = settings.model_copy(
            update={"rails": settings.rails.model_copy(update={"simulator_url": simulator.url})}
        )
        with ServerThread(gateway_app(settings), gateway_port) as gateway:
            apps = [
                underwriting_app(settings),
                orchestration_app(settings),
                disbursement_app(settings),
                repayment_app(settings),
            ]
            async with contextlib.AsyncExitStack() as stack:
                for app in apps:
                    await stack.enter_async_context(app.router.lifespan_context(app))
                client = await stack.enter_async_context(httpx.AsyncClient(base_url=gateway.url, timeout=30))
                sim = await stack.enter_async_context(httpx.AsyncClient(base_url=simulator.url, timeout=30))
                yield settings, client, sim


def _partner_headers(settings: Settings) -> dict[str, str]:
    secret = settings.auth.jwt_secret.get_secret_value()
    return {"Authorization": "Bearer " + auth.issue_token(secret, partner_id=uuid.uuid4())}


async def _charge(sim: httpx.AsyncClient, **body) -> dict:  # type: ignore[no-untyped-def]
    answer = await sim.post("/simulate/charge", json={"currency": "NGN", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()
