"""The simulated Paystack's REST routes (bearer-checked, `{status, message, data}` answers) and
the scenario rules' wire form."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from offchain.rails.simulator.paystack import PaystackSim
from offchain.rails.simulator.paystack_common import (
    PaystackApiError,
    TransferRule,
)


def paystack_router(sim: PaystackSim) -> APIRouter:
    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise PaystackApiError(401, "Authorization key not specified", code="unauthorized")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.strip().encode(), sim.config.paystack_secret_key.encode()
        ):
            raise PaystackApiError(401, "Invalid key", code="unauthorized")

    # every route takes Paystack's secret key, checked before anything of the request is read
    router = APIRouter(tags=["paystack"], dependencies=[Depends(authorize)])

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise PaystackApiError(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise PaystackApiError(400, "Request body must be a JSON object")
        return body

    def ok(message: str, data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse({"status": True, "message": message, "data": data}, status_code=status)

    @router.post("/transferrecipient")
    async def create_recipient(request: Request) -> JSONResponse:
        message, data = sim.create_recipient(await body_of(request))
        return ok(message, data, 201)

    @router.post("/transfer")
    async def initiate_transfer(request: Request) -> JSONResponse:
        message, data = sim.initiate_transfer(await body_of(request))
        return ok(message, data)

    @router.post("/transfer/finalize_transfer")
    async def finalize_transfer(request: Request) -> JSONResponse:
        message, data = sim.finalize_transfer(await body_of(request))
        return ok(message, data)

    @router.get("/transfer/verify/{reference}")
    async def verify_transfer(reference: str) -> JSONResponse:
        return ok("Transfer retrieved", sim.verify_transfer(reference))

    @router.get("/transfer/{id_or_code}")
    async def fetch_transfer(id_or_code: str) -> JSONResponse:
        return ok("Transfer retrieved", sim.fetch_transfer(id_or_code))

    @router.get("/transaction/verify/{reference}")
    async def verify_transaction(reference: str) -> JSONResponse:
        return ok("Verification successful", sim.verify_transaction(reference))

    @router.post("/customer")
    async def create_customer(request: Request) -> JSONResponse:
        message, data = sim.create_customer(await body_of(request))
        return ok(message, data)

    @router.post("/dedicated_account")
    async def create_dedicated_account(request: Request) -> JSONResponse:
        message, data = sim.create_dedicated_account(await body_of(request))
        return ok(message, data)

    @router.post("/dedicated_account/assign")
    async def assign_dedicated_account(request: Request) -> JSONResponse:
        message, _ = sim.assign_dedicated_account(await body_of(request))
        return JSONResponse({"status": True, "message": message})

    @router.get("/balance")
    async def balance() -> JSONResponse:
        data = [{"currency": c, "balance": b} for c, b in sim.balances.items()]
        return ok("Balances retrieved", data)

    return router


def transfer_rule(body: dict[str, Any]) -> TransferRule:
    outcome = body.get("outcome", "success")
    if outcome not in ("success", "failed", "reversed", "stall"):
        raise PaystackApiError(400, "transfer outcome must be success, failed, reversed or stall")
    times = body.get("times", 1)
    delay = body.get("delay_s")
    if not isinstance(times, int) or times < 1:
        raise PaystackApiError(400, "times must be a positive integer")
    if delay is not None and (not isinstance(delay, int | float) or delay < 0):
        raise PaystackApiError(400, "delay_s must be a non-negative number")
    return TransferRule(
        outcome=outcome,
        otp=bool(body.get("otp", False)),
        delay_s=float(delay) if delay is not None else None,
        times=times,
        reference=body.get("reference"),
    )


def rule_view(rule: TransferRule) -> dict[str, Any]:
    return asdict(rule)
