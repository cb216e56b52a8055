"""Accepting an offer: offer => canonical agreement => terms_hash => `create_loan` through the
sender, in the caller's one transaction (the loan row, its origination, the offer accepted and
its siblings withdrawn, the chain intent and credit.offer.accepted).

The session is partner-scoped (row-level security): another partner's offer is not found.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.contracts import Deployment
from offchain.chain.sender import submit
from offchain.domain.offers.agreement import AgreementError, PayoutAccount, build_agreement, to_chain_terms
from offchain.domain.offers.pricing import OfferTerms
from offchain.eventbus.outbox import publish
from offchain.persistence.credit import Application, Offer, Origination
from offchain.persistence.models import Loan
from offchain.platform.auth import Principal
from offchain.platform.problems import Problem, not_found
from offchain.services.offers import schemas


def _no_offer(offer_id: uuid.UUID) -> Problem:
    return not_found("offer", offer_id)


OFFER_NOT_OPEN = "urn:caas:problem:offer-not-open"
OFFER_EXPIRED = "urn:caas:problem:offer-expired"
INVALID_PAYOUT = "urn:caas:problem:invalid-payout"


async def accept_offer(
    *,
    session: AsyncSession,
    principal: Principal,
    offer_id: uuid.UUID,
    body: schemas.AcceptOfferIn,
    ref_secret: str,
    deployment: Deployment,
    now: datetime | None = None,
) -> schemas.AcceptOfferOut:
    """Offer ⇒ canonical agreement ⇒ terms_hash ⇒ `create_loan` through the sender, atomically."""
    now = now or datetime.now(UTC)
    offer = (
        await session.execute(select(Offer).where(Offer.id == offer_id).with_for_update())
    ).scalar_one_or_none()
    if offer is None:
        raise _no_offer(offer_id)
    if offer.status != "open":
        raise Problem(409, OFFER_NOT_OPEN, title="Offer is not open", detail=f"the offer is {offer.status}")
    if offer.expires_at <= now:
        offer.status = "expired"
        raise Problem(
            409, OFFER_EXPIRED, title="Offer expired", detail=f"the offer expired at {offer.expires_at}"
        )
    application = await session.get(Application, offer.application_id)
    assert application is not None  # foreign key
    try:
        payout = PayoutAccount.parse(
            body.payout.method, body.payout.bank_code or "", body.payout.account_number
        )
    except AgreementError as error:
        raise Problem(
            422,
            INVALID_PAYOUT,
            title="Invalid payout account",
            detail=str(error),
            errors=[{"field": "payout", "reason": str(error)}],
        ) from error

    loan_id = uuid.uuid4()
    agreement = build_agreement(
        loan_id=loan_id,
        offer_id=str(offer.id),
        offer=OfferTerms.from_json(offer.terms),
        borrower_id=application.sme_user_id,
        partner_id=str(principal.partner_id),
        ref_secret=ref_secret,
        payout=payout,
        created_at=now,
    )
    terms = to_chain_terms(agreement)
    chain_loan_id = "0x" + agreement.chain_loan_id.hex()
    session.add(
        Loan(
            id=loan_id,
            partner_id=principal.partner_id,
            chain_loan_id=chain_loan_id,
            borrower_ref="0x" + terms.borrower_ref.hex(),
            partner_ref="0x" + terms.partner_ref.hex(),
            currency=terms.currency,
            principal=terms.principal,
            total_due=terms.total_due,
            installment_count=terms.installment_count,
            installment_interval=terms.installment_interval,
            grace_period=terms.grace_period,
            max_late_fees=terms.max_late_fees,
            payout_ref="0x" + terms.payout_ref.hex(),
            terms_hash="0x" + terms.terms_hash.hex(),
            outstanding=terms.total_due,
        )
    )
    await session.flush()
    session.add(
        Origination(
            loan_id=loan_id,
            partner_id=principal.partner_id,
            application_id=application.id,
            offer_id=offer.id,
            payout_method=payout.method.value,
            payout_bank_code=payout.bank_code,
            payout_account_number=payout.account_number,
            agreement=agreement.document(),
            terms_hash="0x" + terms.terms_hash.hex(),
        )
    )
    offer.status = "accepted"
    application.status = "accepted"
    await session.execute(
        update(Offer)
        .where(Offer.application_id == application.id, Offer.id != offer.id, Offer.status == "open")
        .values(status="withdrawn")
    )
    calldata = deployment.loan_book_contract.create_loan(agreement.chain_loan_id, tuple(terms))
    await submit(
        session,
        caller="gateway",
        deployment=deployment,
        idempotency_key=f"create_loan:{chain_loan_id}",
        to=deployment.loan_book_address,
        data=calldata,
    )
    await publish(
        session,
        "credit.offer.accepted",
        {
            "application_id": str(application.id),
            "offer_id": str(offer.id),
            "loan_id": str(loan_id),
            "chain_loan_id": chain_loan_id,
            "terms_hash": "0x" + terms.terms_hash.hex(),
        },
        key=str(loan_id),
        partner_id=principal.partner_id,
    )
    return schemas.AcceptOfferOut(
        loan_id=loan_id,
        chain_loan_id=chain_loan_id,
        status="pending_approval",
        terms_hash="0x" + terms.terms_hash.hex(),
    )
