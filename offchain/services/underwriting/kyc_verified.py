"""`sme.kyc.verified` ⇒ a pre-assessment ⇒ tell the SME platform how much credit is available.

Consumes the gateway's outbox event; idempotent by event id (claimed in the handler's
transaction). The notification is sent before the transaction commits: if it fails the event is
retried, and a notification sent twice only repeats the same figure (the SME platform dedupes on
`event_id`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.offers.agreement import borrower_ref
from offchain.domain.underwriting.decision import Application as DecisionInput
from offchain.domain.underwriting.decision import DecisionStatus
from offchain.domain.underwriting.policy import Exposures, PartnerClaims, PolicyConfig
from offchain.domain.underwriting.scorecard import ScorecardModel
from offchain.eventbus.idempotent import idempotent
from offchain.eventbus.messages import Event
from offchain.eventbus.service import run_consumer
from offchain.platform.app import AppResources
from offchain.platform.logging import get_logger
from offchain.rails.sme.kyc import SmeKycClient
from offchain.services.underwriting.applications import chain_history
from offchain.services.underwriting.usecases import assess_applicant

log = get_logger(__name__)
TOPIC = "sme.kyc.verified"
GROUP = "underwriting.pre-assessments"
PRE_ASSESSMENT_TENOR_MONTHS = 6


async def pre_assess(
    session: AsyncSession,
    event: Event,
    *,
    kyc_client: SmeKycClient,
    model: ScorecardModel,
    policy: PolicyConfig,
    notify_url: str | None,
    http: httpx.AsyncClient,
    ref_secret: str,
) -> None:
    data = event.payload["data"]
    user_id = data["user_id"]
    decision = await assess_applicant(
        kyc_client=kyc_client,
        sme_user_id=user_id,
        application=DecisionInput(
            amount=policy.min_amount, currency=policy.currency, tenor_months=PRE_ASSESSMENT_TENOR_MONTHS
        ),
        transactions=None,
        chain_history=await chain_history(session, "0x" + borrower_ref(ref_secret, user_id).hex()),
        exposures=Exposures(),
        partner_claims=PartnerClaims(partner_id=data.get("partner_id") or "sme-platform"),
        model=model,
        as_of=datetime.now(UTC).date(),
        policy=policy,
    )
    available = decision.max_amount if decision.status == DecisionStatus.APPROVED else 0
    notification = {
        "event_id": event.payload["id"],
        "type": "credit.available" if available else "credit.unavailable",
        "user_id": user_id,
        "max_amount": {"value": available, "currency": policy.currency},
        "risk_rating": decision.risk_rating,
        "reasons": [r.code for r in decision.reasons][:5],
        "model_version": decision.model_version,
    }
    if notify_url:
        response = await http.post(notify_url, json=notification, timeout=5.0)
        response.raise_for_status()
    log.info("sme.pre_assessed", user_id=user_id, available=available, notified=bool(notify_url))


async def run_kyc_verified_worker(resources: AppResources, stop: asyncio.Event) -> None:
    if resources.db is None or resources.redis is None:
        await stop.wait()
        return
    settings = resources.settings
    base = settings.rails.sme_service_urls()["payments"] or settings.rails.simulator_url
    notify_url = f"{base.rstrip('/')}/sme/notifications" if base else None
    kyc_client = SmeKycClient.from_settings(settings.rails, http=resources.http)
    handler = idempotent(
        resources.db,
        GROUP,
        lambda session, event: pre_assess(
            session,
            event,
            kyc_client=kyc_client,
            model=resources.extras["scorecard"],
            policy=resources.extras["policy"],
            notify_url=notify_url,
            http=resources.http,
            ref_secret=settings.auth.ref_secret.get_secret_value(),
        ),
    )
    await run_consumer(resources, stop, group=GROUP, topics=[TOPIC], handler=handler)
