"""The simulator's ASGI app: SME platform + Paystack, and the control endpoints that drive scenarios.

Run it with `caas simulator` (port 8100, outside the service map); `caas up` starts it too.

Control endpoints (not part of any real API; they stand for what happens in the world):

    POST /simulate/charge                 {"amount", "currency", "loan_id"?, "account_number"?,
                                           "reference"?, "metadata"?, "email"?,
                                           "bearer"?: merchant|customer,
                                           "metadata_format"?: object|string|empty|zero|null|absent}
                                          a payment arrives (charge.success follows)
    POST /simulate/transactions           {"transaction": <Paystack verify data>, "deliver"?: bool}
                                          a transaction kept verbatim (e.g. a documented sample)
    POST /simulate/sme/kyc-verified       {"user_id", "partner_id"?}            sme.kyc.verified
    POST /simulate/sme/payment            {"amount", "currency", "reference"?, "method",
                                           "loan_id"?, "user_id"?}              sme.payment.received
    GET  /simulate/sme/notifications      what the backend told the SME platform
    POST /simulate/auth/rotate            {"retire_previous"?: bool}  new SME signing key
    POST /simulate/scenario               {"transfers": [rule...], "webhooks": [rule...]}
         transfer rule: {"outcome": success|failed|reversed|stall, "otp"?, "delay_s"?, "times"?,
                         "reference"?}
         webhook rule:  {"fault": duplicate|reorder|delay|drop, "channel"?: paystack|sme,
                         "event"?, "times"?, "copies"?, "delay_s"?, "hold_s"?}
    GET|DELETE /simulate/scenario         pending rules / clear them
    POST /simulate/transfers/{reference}/resolve   {"outcome"}  settle a stalled transfer now
    GET  /simulate/webhooks               delivery log (?channel=&event=&reference=)
    POST /simulate/webhooks/{id}/redeliver
    GET  /simulate/idle                   wait until no delivery is in flight (?timeout_s=)
    GET|POST /simulate/config             delays, OTP, duplicate references, retry policy, where
                                          deliveries go, balances
    POST /simulate/reset                  forget accounts, transfers, charges, rules and logs
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from offchain.platform.logging import get_logger
from offchain.rails.simulator.config import SimulatorConfig
from offchain.rails.simulator.delivery import Dispatcher, FaultRule
from offchain.rails.simulator.paystack import PaystackSim
from offchain.rails.simulator.paystack_common import PaystackApiError
from offchain.rails.simulator.paystack_routes import paystack_router, rule_view, transfer_rule
from offchain.rails.simulator.sme import SmeSim, sme_router

log = get_logger(__name__)

_ADJUSTABLE: dict[str, type | tuple[type, ...]] = {
    "gateway_url": str,
    "paystack_webhook_url": (str, type(None)),
    "sme_events_url": (str, type(None)),
    "transfer_delay_s": (int, float),
    "otp_required": bool,
    "duplicate_reference": str,
    "webhook_attempts": int,
    "webhook_backoff_s": (int, float),
    "webhook_max_backoff_s": (int, float),
    "webhook_timeout_s": (int, float),
}


class Simulator:
    """The whole simulated world: one instance per app."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.dispatcher = Dispatcher(config)
        self.paystack = PaystackSim(config, self.dispatcher)
        self.sme = SmeSim(config, self.dispatcher)
        self.paystack.on_change = self.changed
        self._save_pending = False

    def changed(self) -> None:
        """Persist soon: at most one write per second, however busy (a full snapshot each time)."""
        if self.config.state_file is None or self._save_pending:
            return
        self._save_pending = True
        self.dispatcher.spawn(self._save_later())

    async def _save_later(self) -> None:
        try:
            await asyncio.sleep(1.0)
        finally:
            self._save_pending = False
            self.save()

    def load(self) -> None:
        path = self.config.state_file
        if path is None or not path.is_file():
            return
        data = json.loads(path.read_text())
        self.paystack.restore(data.get("paystack", {}))
        self.sme.restore(data.get("sme", {}))
        log.info("simulator.state_loaded", path=str(path), transfers=len(self.paystack.transfers))

    def save(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # the file holds the SME signing keys: owner-only
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"paystack": self.paystack.snapshot(), "sme": self.sme.snapshot()}, handle)
        tmp.replace(path)


def _fault_rule(body: Any) -> FaultRule:
    if not isinstance(body, dict) or body.get("fault") not in ("duplicate", "reorder", "delay", "drop"):
        raise HTTPException(400, "webhook rule needs fault: duplicate | reorder | delay | drop")
    known = {f.name for f in fields(FaultRule)}
    unknown = set(body) - known
    if unknown:
        raise HTTPException(400, f"unknown webhook rule fields: {', '.join(sorted(unknown))}")
    numbers = ("delay_s", "hold_s")
    if any(not isinstance(body.get(n, 0), int | float) or isinstance(body.get(n), bool) for n in numbers):
        raise HTTPException(400, "delay_s and hold_s must be numbers of seconds")
    rule = FaultRule(**body)
    if rule.channel not in (None, "paystack", "sme"):
        raise HTTPException(400, "channel must be paystack or sme")
    if (
        not isinstance(rule.times, int)
        or rule.times < 1
        or not isinstance(rule.copies, int)
        or rule.copies < 1
    ):
        raise HTTPException(400, "times and copies must be positive integers")
    if rule.copies > 100 or rule.delay_s < 0 or rule.hold_s < 0:
        raise HTTPException(400, "copies at most 100; delays non-negative")
    return rule


class _Persist:
    """After every request that may change state (not a GET): the simulator saves soon."""

    def __init__(self, app: Any, *, sim: Simulator) -> None:
        self.app, self.sim = app, sim

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["method"] != "GET":
            self.sim.changed()


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    config = config or SimulatorConfig.from_env()
    sim = Simulator(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sim.load()
        try:
            yield
        finally:
            sim.save()
            await sim.dispatcher.aclose()

    app = FastAPI(
        title="CaaS simulator: SME platform and Paystack",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.simulator = sim

    @app.exception_handler(PaystackApiError)
    async def paystack_error(_: Request, exc: PaystackApiError) -> JSONResponse:
        return exc.response()

    # plain ASGI: @app.middleware("http") runs every request in a task group of its own, which
    # under a burst cost the simulator more than the charges themselves
    app.add_middleware(_Persist, sim=sim)

    app.include_router(paystack_router(sim.paystack))
    app.include_router(sme_router(sim.sme))

    @app.get("/", tags=["simulator"])
    async def root() -> dict[str, Any]:
        return {
            "service": "caas-simulator",
            "paystack": {"transfers": len(sim.paystack.transfers), "charges": len(sim.paystack.transactions)},
            "sme": {"signing_keys": [k.kid for k in sim.sme.keys]},
            "deliveries": len(sim.dispatcher.log),
        }

    @app.get("/health/live", tags=["simulator"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["simulator"])
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    # -- control: Paystack ----------------------------------------------------------------------

    @app.post("/simulate/charge", status_code=201, tags=["simulate"])
    async def charge(request: Request) -> dict[str, Any]:
        return sim.paystack.record_charge(await _object(request))

    @app.post("/simulate/transactions", status_code=201, tags=["simulate"])
    async def transaction(request: Request) -> dict[str, Any]:
        return sim.paystack.store_transaction(await _object(request))

    @app.get("/simulate/transfers", tags=["simulate"])
    async def transfers() -> list[dict[str, Any]]:
        return [sim.paystack.verify_transfer(ref) for ref in sim.paystack.transfers]

    @app.post("/simulate/transfers/{reference}/resolve", tags=["simulate"])
    async def resolve(reference: str, request: Request) -> dict[str, Any]:
        body = await _object(request)
        outcome = body.get("outcome", "success")
        if outcome not in ("success", "failed", "reversed"):
            raise HTTPException(400, "outcome must be success, failed or reversed")
        return sim.paystack.resolve_transfer(reference, outcome)

    @app.post("/simulate/scenario", tags=["simulate"])
    async def scenario(request: Request) -> dict[str, Any]:
        body = await _object(request)
        transfer_rules = body.get("transfers", []) + ([body["transfer"]] if "transfer" in body else [])
        webhook_rules = body.get("webhooks", []) + ([body["webhook"]] if "webhook" in body else [])
        if not transfer_rules and not webhook_rules:
            raise HTTPException(400, "give transfers: [...] and/or webhooks: [...]")
        new_transfers = [transfer_rule(r if isinstance(r, dict) else {}) for r in transfer_rules]
        new_webhooks = [_fault_rule(r) for r in webhook_rules]
        sim.paystack.rules.extend(new_transfers)
        sim.dispatcher.rules.extend(new_webhooks)
        return _scenario_view(sim)

    @app.get("/simulate/scenario", tags=["simulate"])
    async def scenario_view() -> dict[str, Any]:
        return _scenario_view(sim)

    @app.delete("/simulate/scenario", tags=["simulate"])
    async def scenario_clear() -> dict[str, Any]:
        sim.paystack.rules.clear()
        sim.dispatcher.rules.clear()
        return _scenario_view(sim)

    # -- control: deliveries --------------------------------------------------------------------

    @app.get("/simulate/webhooks", tags=["simulate"])
    async def deliveries(
        channel: str | None = None, event: str | None = None, reference: str | None = None
    ) -> list[dict[str, Any]]:
        return sim.dispatcher.entries(channel=channel, event=event, reference=reference)

    @app.post("/simulate/webhooks/{delivery_id}/redeliver", status_code=202, tags=["simulate"])
    async def redeliver(delivery_id: str) -> dict[str, Any]:
        again = sim.dispatcher.redeliver(delivery_id)
        if again is None:
            raise HTTPException(404, "no such delivery")
        return again.as_dict()

    @app.get("/simulate/idle", tags=["simulate"])
    async def idle(timeout_s: float = 10.0) -> dict[str, bool]:
        return {"idle": await sim.dispatcher.idle(min(timeout_s, 60.0))}

    # -- control: SME ---------------------------------------------------------------------------

    @app.post("/simulate/auth/rotate", tags=["simulate"])
    async def rotate(request: Request) -> dict[str, Any]:
        body = await _object(request, allow_empty=True)
        key = sim.sme.rotate(retire_previous=bool(body.get("retire_previous", False)))
        return {"kid": key.kid, "published": [k.kid for k in sim.sme.keys]}

    @app.post("/simulate/sme/kyc-verified", status_code=202, tags=["simulate"])
    async def kyc_verified(request: Request) -> dict[str, Any]:
        sent = sim.sme.kyc_verified(await _object(request))
        return {"deliveries": [d.id for d in sent], "event": sent[0].as_dict()["payload"]}

    @app.post("/simulate/sme/payment", status_code=202, tags=["simulate"])
    async def sme_payment(request: Request) -> dict[str, Any]:
        sent = sim.sme.payment(await _object(request))
        return {"deliveries": [d.id for d in sent], "event": sent[0].as_dict()["payload"]}

    @app.get("/simulate/sme/notifications", tags=["simulate"])
    async def notifications() -> list[dict[str, Any]]:
        return sim.sme.notifications

    # -- control: the simulator itself ----------------------------------------------------------

    @app.get("/simulate/config", tags=["simulate"])
    async def get_config() -> dict[str, Any]:
        return {**config.public(), "balances": sim.paystack.balances}

    @app.post("/simulate/config", tags=["simulate"])
    async def set_config(request: Request) -> dict[str, Any]:
        body = await _object(request)
        balances = body.pop("balances", None)
        for name, value in body.items():
            kinds = _ADJUSTABLE.get(name)
            if kinds is None:
                raise HTTPException(400, f"{name} cannot be changed; one of {', '.join(_ADJUSTABLE)}")
            if (isinstance(value, bool) and kinds is not bool) or not isinstance(value, kinds):
                raise HTTPException(400, f"{name} has the wrong type")
        if body.get("duplicate_reference", "return") not in ("return", "reject"):
            raise HTTPException(400, "duplicate_reference must be return or reject")
        for name, value in body.items():
            setattr(config, name, value)
        if balances is not None:
            if not isinstance(balances, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in balances.values()
            ):
                raise HTTPException(400, "balances: {currency: non-negative integer minor units}")
            sim.paystack.balances.update(balances)
        return {**config.public(), "balances": sim.paystack.balances}

    @app.post("/simulate/reset", tags=["simulate"])
    async def reset() -> dict[str, str]:
        sim.dispatcher.reset()
        sim.paystack.reset()
        sim.sme.notifications.clear()
        return {"status": "reset"}

    return app


def _scenario_view(sim: Simulator) -> dict[str, Any]:
    return {
        "transfers": [rule_view(r) for r in sim.paystack.rules],
        "webhooks": [asdict(r) for r in sim.dispatcher.rules],
    }


async def _object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw and allow_empty:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise HTTPException(400, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body


def default_state_file(state_dir: Path) -> Path:
    return state_dir / "simulator.json"
