"""The application pipeline: `credit.application.submitted` ⇒ decision ⇒ offers ⇒ partner event.

Runs as the underwriting service's consumer of the gateway's outbox event. Idempotent: the event
is claimed in the same transaction that writes the decision and offers, and an application that
already left `submitted` is left alone, so a redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.applications import ApplicationStatus
from offchain.domain.loan_book import LoanState
from offchain.domain.money import Money
from offchain.domain.offers.pricing import Affordability, PricingPolicy, quote
from offchain.domain.offers.schedule import Frequency
from offchain.domain.underwriting.decision import Application as DecisionInput
from offchain.domain.underwriting.decision import Decision, DecisionStatus
from offchain.domain.underwriting.history import ChainHistory, LoanEvent, record_from_events
from offchain.domain.underwriting.policy import Exposures, PartnerClaims, PolicyConfig
from offchain.domain.underwriting.scorecard import ScorecardModel
from offchain.eventbus.idempotent import idempotent
from offchain.eventbus.messages import Event
from offchain.eventbus.outbox import publish
from offchain.eventbus.service import run_consumer
from offchain.persistence.credit import Application, Offer
from offchain.persistence.models import ChainEvent, Loan
from offchain.platform.app import AppResources
from offchain.platform.logging import get_logger
from offchain.rails.sme.kyc import SmeKycClient
from offchain.services.underwriting.usecases import assess_applicant

log = get_logger(__name__)

TOPIC = "credit.application.submitted"
GROUP = "underwriting.applications"
# Committed and not yet paid off: what counts against exposure caps.
_EXPOSED = (LoanState.NONE, LoanState.PENDING, LoanState.APPROVED, LoanState.ACTIVE, LoanState.DEFAULTED)


async def chain_history(
    session: AsyncSession, borrower_ref: str, as_of: datetime | None = None
) -> ChainHistory:
    """The borrower's record on the loan book, from the indexed mirror of the chain.

    Counts come from the caas_loans projection; days past due (now, and the worst ever) from
    replaying each loan's indexed events (offchain.domain.underwriting.history).
    """
    rows = (
        await session.execute(
            select(Loan.chain_state, Loan.ever_defaulted, Loan.outstanding).where(
                Loan.borrower_ref == borrower_ref
            )
        )
    ).all()
    states = [LoanState(row.chain_state) for row in rows]
    events = (
        await session.execute(
            select(ChainEvent.loan_id, ChainEvent.event, ChainEvent.block_timestamp, ChainEvent.args)
            .join(Loan, Loan.chain_loan_id == ChainEvent.loan_id)
            .where(Loan.borrower_ref == borrower_ref)
            .order_by(ChainEvent.loan_id, ChainEvent.block_number, ChainEvent.log_index)
        )
    ).all()
    at = int((as_of or datetime.now(UTC)).timestamp())
    records = [
        record_from_events(
            (LoanEvent(row.event, int(row.block_timestamp or 0), row.args or {}) for row in loan_events), at
        )
        for _, loan_events in groupby(events, key=lambda row: row.loan_id)
    ]
    replayed = [record for record in records if record is not None]
    return ChainHistory(
        repaid_loans=states.count(LoanState.REPAID),
        active_loans=states.count(LoanState.ACTIVE),
        defaulted_loans=states.count(LoanState.DEFAULTED),
        written_off_loans=states.count(LoanState.WRITTEN_OFF),
        defaults_ever=sum(1 for row in rows if row.ever_defaulted),
        max_days_past_due=max((record.max_days_past_due for record in replayed), default=0),
        current_days_past_due=max((record.days_past_due for record in replayed), default=0),
        outstanding=sum(int(row.outstanding or 0) for row in rows if LoanState(row.chain_state) in _EXPOSED),
    )


async def exposures(session: AsyncSession, borrower_ref: str, partner_id: uuid.UUID) -> Exposures:
    exposed = Loan.chain_state.in_([int(s) for s in _EXPOSED])
    borrower = await session.scalar(
        select(func.coalesce(func.sum(Loan.outstanding), 0)).where(Loan.borrower_ref == borrower_ref, exposed)
    )
    partner = await session.scalar(
        select(func.coalesce(func.sum(Loan.outstanding), 0)).where(Loan.partner_id == partner_id, exposed)
    )
    return Exposures(borrower_outstanding=int(borrower or 0), partner_outstanding=int(partner or 0))


async def decide_application(
    session: AsyncSession,
    event: Event,
    *,
    kyc_client: SmeKycClient,
    model: ScorecardModel,
    policy: PolicyConfig,
    pricing: PricingPolicy,
    now: datetime | None = None,
) -> None:
    now = now or datetime.now(UTC)
    payload = event.payload
    application_id = uuid.UUID(payload["application"]["id"])
    application = (
        await session.execute(select(Application).where(Application.id == application_id).with_for_update())
    ).scalar_one_or_none()
    if application is None or application.status != ApplicationStatus.SUBMITTED:
        return
    application.status = ApplicationStatus.UNDERWRITING
    claims = payload.get("partner_claims") or {}
    decision = await assess_applicant(
        kyc_client=kyc_client,
        sme_user_id=application.sme_user_id,
        application=DecisionInput(
            amount=application.amount,
            currency=application.currency,
            tenor_months=application.tenor_months,
            purpose=application.purpose,
        ),
        transactions=None,
        chain_history=await chain_history(session, application.borrower_ref, now),
        exposures=await exposures(session, application.borrower_ref, application.partner_id),
        partner_claims=PartnerClaims(
            partner_id=str(application.partner_id),
            credit_limit=claims.get("creditLimit"),
            risk_rating=claims.get("riskRating"),
        ),
        model=model,
        as_of=now.date(),
        policy=policy,
    )
    offers = []
    if decision.status == DecisionStatus.APPROVED:
        offers = list(
            quote(
                pricing,
                rating=decision.risk_rating,
                amount=Money(application.amount, application.currency),
                tenor_months=application.tenor_months,
                frequency=Frequency.MONTHLY,
                now=now,
                # The exposure room, not max_amount (which already prices affordability at the
                # requested tenor): pricing then may offer the full amount over a longer tenor.
                affordability=Affordability(
                    max_amount=decision.features["affordability"]["exposure_room"],
                    max_monthly_installment=decision.max_monthly_installment,
                ),
            ).offers
        )
    for terms in offers:
        session.add(
            Offer(
                partner_id=application.partner_id,
                application_id=application.id,
                amount=terms.principal,
                currency=terms.currency,
                tenor_months=terms.tenor_months,
                apr_bps=terms.apr_bps,
                total_due=terms.total_due,
                terms=terms.to_json(),
                expires_at=terms.expires_at,
            )
        )
    application.decision = _decision_json(decision)
    application.decided_at = now
    if offers:
        application.status, topic = ApplicationStatus.OFFERED, "credit.application.approved"
    elif decision.status == DecisionStatus.REFER:
        application.status, topic = ApplicationStatus.REFERRED, "credit.application.referred"
    else:
        application.status, topic = ApplicationStatus.DECLINED, "credit.application.declined"
    await session.flush()
    await publish(
        session,
        topic,
        {
            "application_id": str(application.id),
            "external_id": application.external_id,
            "status": application.status,
            "decision": application.decision,
            "offer_ids": [str(o.id) for o in await _offer_ids(session, application.id)],
        },
        key=str(application.id),
        partner_id=application.partner_id,
    )
    log.info("application.decided", application_id=str(application.id), status=application.status)


async def _offer_ids(session: AsyncSession, application_id: uuid.UUID) -> list[Any]:
    return list(
        (await session.execute(select(Offer).where(Offer.application_id == application_id))).scalars()
    )


def _decision_json(decision: Decision) -> dict[str, Any]:
    full = decision.to_dict()
    return {
        "status": full["status"],
        "score": full["score"],
        "risk_rating": full["risk_rating"],
        "pd": full.get("pd"),
        "reasons": [{"code": r["code"], "message": r["message"]} for r in full.get("reasons", [])],
        "model_version": full["model_version"],
        "policy_version": full.get("policy_version"),
        "max_amount": full.get("max_amount"),
    }


async def run_application_worker(resources: AppResources, stop: asyncio.Event) -> None:
    """Background job of the underwriting service (see offchain.platform.app.BackgroundTask)."""
    if resources.db is None or resources.redis is None:
        await stop.wait()
        return
    settings = resources.settings
    model = resources.extras["scorecard"]
    policy = resources.extras["policy"]
    pricing = resources.extras.get("pricing") or PricingPolicy()
    kyc_client = SmeKycClient.from_settings(settings.rails, http=resources.http)
    handler = idempotent(
        resources.db,
        GROUP,
        lambda session, event: decide_application(
            session, event, kyc_client=kyc_client, model=model, policy=policy, pricing=pricing
        ),
    )
    await run_consumer(resources, stop, group=GROUP, topics=[TOPIC], handler=handler)
