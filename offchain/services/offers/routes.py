"""offers:8002 routes (internal: called by the gateway and the application flow, not by partners)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from offchain.domain.offers import PricingPolicy
from offchain.services.offers import usecases
from offchain.services.offers.schemas import PricingOut, QuoteRequest, QuoteResponse

router = APIRouter(prefix="/v1", tags=["offers"])


def get_pricing(request: Request) -> PricingPolicy:
    policy: PricingPolicy = request.app.state.pricing
    return policy


PricingDep = Annotated[PricingPolicy, Depends(get_pricing)]


@router.post("/quotes", response_model=QuoteResponse)
async def post_quote(body: QuoteRequest, policy: PricingDep) -> dict[str, Any]:
    """Price a request for a risk rating: offers with full schedules, or the reasons for none."""
    return usecases.quote_offers(policy=policy, request=body, now=datetime.now(UTC))


@router.get("/pricing", response_model=PricingOut)
async def get_pricing_table(policy: PricingDep) -> dict[str, Any]:
    """The pricing policy in force: APR and fees per rating, late-fee cap, grace, offer validity."""
    return usecases.pricing_table(policy=policy)
