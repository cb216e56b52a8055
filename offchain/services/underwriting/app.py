"""underwriting service: POST /v1/assessments, POST /v1/pre-assessments,
POST /v1/bank-statements/analyze, GET /v1/models/current, and the application pipeline
(`credit.application.submitted` ⇒ decision ⇒ offers) as a background consumer."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from offchain.domain.offers.pricing import PricingPolicy
from offchain.domain.underwriting.policy import PolicyConfig
from offchain.domain.underwriting.scorecard import ScorecardModel
from offchain.platform.app import AppResources, create_service_app
from offchain.platform.settings import Settings
from offchain.services.registry import SERVICES
from offchain.services.underwriting.applications import run_application_worker
from offchain.services.underwriting.kyc_verified import run_kyc_verified_worker
from offchain.services.underwriting.model_store import load_current
from offchain.services.underwriting.routes import router


def create_app(
    settings: Settings | None = None,
    *,
    model: ScorecardModel | None = None,
    policy: PolicyConfig | None = None,
    pricing: PricingPolicy | None = None,
) -> FastAPI:
    # Loaded (and its content hash checked) at start-up: a bad artefact stops the service here.
    scorecard = model or load_current()
    config = policy or PolicyConfig()
    prices = pricing or PricingPolicy()

    async def applications(resources: AppResources, stop: asyncio.Event) -> None:
        resources.extras.update(scorecard=scorecard, policy=config, pricing=prices)
        await run_application_worker(resources, stop)

    async def pre_assessments(resources: AppResources, stop: asyncio.Event) -> None:
        resources.extras.update(scorecard=scorecard, policy=config, pricing=prices)
        await run_kyc_verified_worker(resources, stop)

    app = create_service_app(
        SERVICES["underwriting"],
        settings,
        routers=[router],
        background={"applications": applications, "pre_assessments": pre_assessments},
        # statements are uploads: LIMITS__MAX_UPLOAD_BYTES instead of the 1 MiB body limit
        upload_paths={"/v1/bank-statements/analyze"},
    )
    app.state.scorecard = scorecard
    app.state.policy = config
    return app
