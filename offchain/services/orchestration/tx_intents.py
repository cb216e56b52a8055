"""orchestration:8008 transaction intents (internal: other services, with a service identity).

POST /v1/tx-intents             record an intent (idempotent on its key); 201 new, 200 existing
GET  /v1/tx-intents/{key}       where it stands: nonce, hashes, block, revert reason

Both need a service token for orchestration (offchain.platform.service_auth) of a service that
may record intents at all; the intent is recorded under that service and only if
offchain.chain.allowlist lets it ask for that call over HTTP (403 otherwise, nothing recorded,
nothing ever signed). A service reads only the intents it recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from offchain.chain.allowlist import CALLERS, CallNotAllowed
from offchain.chain.client import chain_of
from offchain.chain.contracts import Deployment
from offchain.chain.sender import IdempotencyConflict, get_intent, submit_intent
from offchain.persistence.models import TxIntent
from offchain.platform.access import service_only
from offchain.platform.deps import DatabaseDep
from offchain.platform.inputs import NO_NUL, WHOLE, Hex
from offchain.platform.problems import Problem
from offchain.platform.service_auth import ServiceIdentity

router = APIRouter(prefix="/v1/tx-intents", tags=["transactions"])
Caller = Annotated[ServiceIdentity, Depends(service_only(*sorted(CALLERS)))]

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
Key = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


class TxIntentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idempotency_key: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, examples=["record_repayment:0x1234…"]
    )
    to: str = Field(pattern=ADDRESS)
    data: Hex = Field(description="ABI-encoded calldata")
    value: Annotated[int, Field(strict=True, ge=0, le=2**256 - 1, description="wei"), WHOLE] = 0
    sender: str | None = Field(default=None, pattern=ADDRESS, description="pin a sending key")


class TxIntentOut(BaseModel):
    id: str
    idempotency_key: str
    caller: str
    status: str
    chain_id: int | None
    sender: str | None
    to: str
    data: str
    value: int
    nonce: int | None
    gas_limit: int | None
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    tx_hash: str | None
    previous_tx_hashes: list[str]
    block_number: int | None
    block_hash: str | None
    gas_used: int | None
    effective_gas_price: int | None
    revert_reason: str | None
    last_error: str | None
    attempts: int
    fee_bumps: int
    created_at: datetime
    signed_at: datetime | None
    broadcast_at: datetime | None
    confirmed_at: datetime | None

    @classmethod
    def of(cls, intent: TxIntent) -> TxIntentOut:
        return cls(
            id=str(intent.id),
            idempotency_key=intent.idempotency_key,
            caller=intent.caller,
            status=intent.status,
            chain_id=intent.chain_id,
            sender=intent.from_address,
            to=intent.to_address,
            data=intent.data,
            value=intent.value,
            nonce=intent.nonce,
            gas_limit=intent.gas_limit,
            max_fee_per_gas=intent.max_fee_per_gas,
            max_priority_fee_per_gas=intent.max_priority_fee_per_gas,
            tx_hash=intent.tx_hash,
            previous_tx_hashes=list(intent.previous_tx_hashes or []),
            block_number=intent.block_number,
            block_hash=intent.block_hash,
            gas_used=intent.gas_used,
            effective_gas_price=intent.effective_gas_price,
            revert_reason=intent.revert_reason,
            last_error=intent.last_error,
            attempts=intent.attempts,
            fee_bumps=intent.fee_bumps,
            created_at=intent.created_at,
            signed_at=intent.signed_at,
            broadcast_at=intent.broadcast_at,
            confirmed_at=intent.confirmed_at,
        )


def _deployment(request: Request) -> Deployment:
    path = request.app.state.settings.chain.deployment_file
    if not path:
        raise Problem(503, "urn:caas:problem:dependency-unavailable", title="Chain not configured")
    return chain_of(request.app.state.resources).deployment  # loaded once per app


@router.post(
    "",
    response_model=TxIntentOut,
    status_code=201,
    responses={
        200: {"description": "the key names an intent already recorded: that one", "model": TxIntentOut},
        409: {"description": "the key names an intent with a different call", **PROBLEM},
    },
)
async def post_tx_intent(
    body: TxIntentIn, caller: Caller, db: DatabaseDep, response: Response, request: Request
) -> TxIntentOut:
    """Record the intent; the same key again returns the recorded one (200), never a second tx."""
    deployment = _deployment(request)
    async with db.worker_session() as session:
        try:
            intent, created = await submit_intent(
                session,
                caller=caller.name,
                deployment=deployment,
                idempotency_key=body.idempotency_key,
                to=body.to,
                data=body.data,
                value=body.value,
                sender=body.sender,
                http=True,
            )
        except CallNotAllowed as refusal:
            raise Problem(
                403,
                "urn:caas:problem:call-not-allowed",
                title="Call not allowed",
                detail=str(refusal),
                errors=[{"field": "body.data", "reason": str(refusal)}],
            ) from refusal
        except IdempotencyConflict as exc:
            if exc.existing.caller != caller.name:
                raise Problem(
                    409, "urn:caas:problem:idempotency-conflict", title="Idempotency key already used"
                ) from exc
            raise Problem(
                409,
                "urn:caas:problem:idempotency-conflict",
                title="Idempotency key already used",
                detail="this idempotency key already names a transaction with a different call",
                existing=TxIntentOut.of(exc.existing).model_dump(mode="json"),
            ) from exc
        out = TxIntentOut.of(intent)
    if not created:
        response.status_code = 200
    return out


@router.get(
    "/{key}",
    response_model=TxIntentOut,
    responses={404: {"description": "no intent under this key", **PROBLEM}},
)
async def get_tx_intent(key: Key, caller: Caller, db: DatabaseDep) -> TxIntentOut:
    async with db.worker_session() as session:
        intent = await get_intent(session, key)
    if intent is None or intent.caller != caller.name:
        raise Problem(404, "urn:caas:problem:tx-intent-not-found", title="No such transaction intent")
    return TxIntentOut.of(intent)
