"""Accepting an offer: the partner API route (served by the gateway, which mounts this router).

The offers service (8002) itself serves quotes and the pricing table (routes.py); acceptance is
partner API, so it is on the gateway's port, and the work is the offers service's
(acceptance.py).
"""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations.

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.client import chain_for_request
from offchain.platform import auth
from offchain.platform.audit_log import record_action
from offchain.platform.auth import Principal
from offchain.platform.deps import DatabaseDep
from offchain.platform.idempotency import run_idempotent
from offchain.platform.limits import limited
from offchain.platform.openapi_client import IdempotencyKey
from offchain.platform.partner_errors import BAD_BODY, CHAIN_UNAVAILABLE, COMMON_ERRORS, PROBLEM
from offchain.services.offers import acceptance, schemas

router = APIRouter(prefix="/v1")

AcceptOffers = Annotated[Principal, Depends(limited(auth.APPLICATION_CREATE, "write"))]


@router.post(
    "/offers/{offer_id}/accept",
    status_code=201,
    response_model=schemas.AcceptOfferOut,
    responses={
        **BAD_BODY,
        404: {"description": "no such offer for this partner", **PROBLEM},
        409: {"description": "the offer is no longer open, or expired", **PROBLEM},
        **CHAIN_UNAVAILABLE,
        **COMMON_ERRORS,
    },
    summary="Accept an offer: agreement hashed, loan created on chain (Idempotency-Key supported)",
)
async def accept_offer(
    request: Request,
    offer_id: uuid.UUID,
    body: schemas.AcceptOfferIn,
    principal: AcceptOffers,
    db: DatabaseDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    deployment, _ = chain_for_request(request)
    settings = request.app.state.settings

    async def handle(session: AsyncSession) -> tuple[int, Any]:
        accepted = await acceptance.accept_offer(
            session=session,
            principal=principal,
            offer_id=offer_id,
            body=body,
            ref_secret=settings.auth.ref_secret.get_secret_value(),
            deployment=deployment,
        )
        body_out = accepted.model_dump(mode="json")
        await record_action(
            session,
            actor=principal.subject,
            action="offer.accept",
            subject_type="offer",
            subject_id=offer_id,
            partner_id=principal.partner_id,
            before={"offer_status": "open"},
            after=body_out,
        )
        return 201, body_out

    return await run_idempotent(request, db=db, partner_id=principal.partner_id, in_transaction=handle)
