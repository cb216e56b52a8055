"""A real HTTP server speaking the SME KYC wire format, for adapter and route tests.

It follows the simulator's id conventions (DESIGN §4): `kyc-pending-*` / `kyc-rejected-*` are
pending / rejected, `thin-file-*` has no bank history, `unknown-*` is not known (404), anything else
is verified with a healthy six-month statement. Extra ids for policy paths: `aml-review-*` (risk
score 60), `sanctioned-*` (risk score 95), `listed-*` (a hit on the AML screen, low risk score),
`unscreened-*` (no AML screen on record). `Behaviour` lets a test make every request slow or fail.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

NAIRA = 100


@dataclass
class Behaviour:
    fail_next: int = 0  # answer 503 to this many requests
    fail_status: int = 503
    delay_s: float = 0.0  # before answering
    calls: int = 0
    request_ids: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.fail_next, self.fail_status, self.delay_s, self.calls = 0, 503, 0.0, 0
        self.request_ids.clear()


def healthy_statement(start: date = date(2025, 1, 1), months: int = 6) -> list[dict[str, Any]]:
    """Sales in, costs and a loan repayment out; balances stay well above a month's outflow."""
    balance = 1_500_000 * NAIRA
    rows: list[dict[str, Any]] = []

    def add(day: date, amount: int, description: str) -> None:
        nonlocal balance
        balance += amount
        rows.append(
            {"date": day.isoformat(), "amount": amount, "balance": balance, "description": description}
        )

    for month in range(months):
        first = date(start.year + (start.month - 1 + month) // 12, (start.month - 1 + month) % 12 + 1, 1)
        for week in range(4):
            add(first + timedelta(days=2 + 7 * week), 500_000 * NAIRA, "POS SETTLEMENT")
        add(first + timedelta(days=4), -600_000 * NAIRA, "SUPPLIER PAYMENT")
        add(first + timedelta(days=9), -100_000 * NAIRA, "CARBON LOAN REPAYMENT")
        add(first + timedelta(days=14), -400_000 * NAIRA, "SALARIES")
        add(first + timedelta(days=20), -300_000 * NAIRA, "RENT AND UTILITIES")
    return rows


def kyc_record(user_id: str) -> dict[str, Any] | None:
    if user_id.startswith("unknown-"):
        return None
    status = "verified"
    if user_id.startswith("kyc-pending-"):
        status = "pending"
    elif user_id.startswith("kyc-rejected-"):
        status = "rejected"
    risk = 95 if user_id.startswith("sanctioned-") else 60 if user_id.startswith("aml-review-") else 10
    return {
        "userId": user_id,
        "kycStatus": status,
        "documents": [
            {"type": "cac_certificate", "status": "verified"},
            {"type": "bvn", "status": "verified"},
        ],
        "verificationDate": "2025-01-02T10:00:00Z" if status == "verified" else None,
        "riskScore": risk,
        "creditScore": 700,
        "employmentVerification": {"verified": status == "verified", "yearsInBusiness": 5},
        "incomeVerification": {"verified": status == "verified"},
        "bankStatementAnalysis": None,
    }


def create_app(behaviour: Behaviour) -> FastAPI:
    app = FastAPI()

    async def misbehave(request: Request) -> JSONResponse | None:
        behaviour.calls += 1
        behaviour.request_ids.append(request.headers.get("x-request-id", ""))
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            return JSONResponse({"error": "unavailable"}, status_code=behaviour.fail_status)
        return None

    @app.get("/sme/kyc/{user_id}")
    async def get_kyc(user_id: str, request: Request) -> Any:
        if (failed := await misbehave(request)) is not None:
            return failed
        record = kyc_record(user_id)
        if record is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return record

    @app.get("/sme/kyc/{user_id}/bank-statement")
    async def get_statement(user_id: str, request: Request) -> Any:
        if (failed := await misbehave(request)) is not None:
            return failed
        if user_id.startswith(("unknown-", "thin-file-")):
            return JSONResponse({"error": "no bank history"}, status_code=404)
        return {"userId": user_id, "currency": "NGN", "transactions": healthy_statement()}

    @app.get("/sme/aml/{user_id}")
    async def get_aml(user_id: str, request: Request) -> Any:
        if (failed := await misbehave(request)) is not None:
            return failed
        if user_id.startswith("unscreened-"):
            return JSONResponse({"error": "no screen"}, status_code=404)
        hit = user_id.startswith("listed-")
        lists = [{"list": "OFAC SDN", "matchedName": "A N OTHER", "matchScore": 97}] if hit else []
        return {
            "userId": user_id,
            "status": "hit" if hit else "clear",
            "lists": lists,
            "screenedAt": "2025-01-02T10:00:00Z",
        }

    return app


class ThreadedServer:
    """uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, app: FastAPI, *, lifespan: str = "off") -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            # uvicorn's own dictConfig would replace the process's logging set-up for good
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test KYC server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
