"""Use cases of the partner API. Routes stay thin: they authenticate, then call these.

Sessions passed in are partner-scoped (row-level security), so another partner's resource is
simply not found: a 404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

import json
import uuid
import weakref
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import bindparam, func, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.domain.loan_book import LoanState
from offchain.domain.money import from_iso_numeric
from offchain.domain.offers.agreement import borrower_ref as keyed_borrower_ref
from offchain.domain.offers.agreement import partner_ref as keyed_partner_ref
from offchain.eventbus.outbox import publish
from offchain.persistence.credit import Application, Offer, Origination
from offchain.persistence.models import ChainEvent, Loan, Partner
from offchain.platform.auth import Principal
from offchain.platform.db import Database
from offchain.platform.pagination import MAX_LIMIT, decode_cursor, encode_cursor
from offchain.platform.problems import Problem, not_found
from offchain.services.gateway import schemas

DUPLICATE = "urn:caas:problem:duplicate-external-id"


# Partners known to exist, per database engine: the upsert is a round trip on every submission
# otherwise. A partner goes in only once its row was found committed (the insert conflicted),
# and partner rows are never deleted, so an entry cannot be stale.
_PROVISIONED: weakref.WeakKeyDictionary[Any, set[uuid.UUID]] = weakref.WeakKeyDictionary()
_PROVISIONED_MAX = 100_000


async def ensure_partner(session: AsyncSession, principal: Principal, ref_secret: str) -> None:
    """Partners are provisioned on first use: the SME platform's token is the source of truth."""
    known = _PROVISIONED.setdefault(session.get_bind(), set())
    if principal.partner_id in known:
        return
    inserted = await session.execute(
        insert(Partner)
        .values(
            id=principal.partner_id,
            name=f"partner {principal.partner_id}",
            chain_ref="0x" + keyed_partner_ref(ref_secret, str(principal.partner_id)).hex(),
        )
        .on_conflict_do_nothing()
        .returning(Partner.id)
    )
    if inserted.first() is None:
        if len(known) >= _PROVISIONED_MAX:
            known.clear()
        known.add(principal.partner_id)


# -- applications ------------------------------------------------------------------------------


# Hot-path statements are built once with bind parameters: SQLAlchemy reuses their cache key and
# compiled form (rebuilding them with literal values per request was a visible share of a request).
_INSERT_APPLICATION = (
    insert(Application)
    .values(
        partner_id=bindparam("partner_id"),
        external_id=bindparam("external_id"),
        sme_user_id=bindparam("sme_user_id"),
        borrower_ref=bindparam("borrower_ref"),
        amount=bindparam("amount"),
        currency=bindparam("currency"),
        tenor_months=bindparam("tenor_months"),
        purpose=bindparam("purpose"),
        status="submitted",
    )
    .on_conflict_do_nothing(index_elements=["partner_id", "external_id"])
    .returning(Application)
)


async def submit_application(
    *, session: AsyncSession, principal: Principal, body: schemas.ApplicationIn, ref_secret: str
) -> schemas.ApplicationOut:
    await ensure_partner(session, principal, ref_secret)
    inserted = await session.execute(
        _INSERT_APPLICATION,
        {
            "partner_id": principal.partner_id,
            "external_id": body.external_id,
            "sme_user_id": body.borrower.sme_user_id,
            "borrower_ref": "0x" + keyed_borrower_ref(ref_secret, body.borrower.sme_user_id).hex(),
            "amount": body.amount.value,
            "currency": body.amount.currency,
            "tenor_months": body.tenor_months,
            "purpose": body.purpose,
        },
    )
    application = inserted.scalar_one_or_none()
    if application is None:
        existing = await _application_by_external_id(session, body.external_id)
        raise Problem(
            409,
            DUPLICATE,
            title="Application already exists",
            detail=f"external_id {body.external_id!r} was already submitted",
            errors=[{"field": "external_id", "reason": "already used by application " + str(existing.id)}],
            existing_id=str(existing.id),
        )
    view = application_view(application, [])
    await publish(
        session,
        "credit.application.submitted",
        {
            "application": view.model_dump(mode="json"),
            # what underwriting needs beyond the public view
            "partner_claims": {"creditLimit": principal.credit_limit, "riskRating": principal.risk_rating},
        },
        key=str(application.id),
        partner_id=principal.partner_id,
    )
    return view


async def _application_by_external_id(session: AsyncSession, external_id: str) -> Application:
    return (
        await session.execute(select(Application).where(Application.external_id == external_id))
    ).scalar_one()


async def get_application(*, session: AsyncSession, application_id: uuid.UUID) -> schemas.ApplicationOut:
    application = await session.get(Application, application_id)
    if application is None:
        raise not_found("application", application_id)
    offers = (
        (
            await session.execute(
                select(Offer).where(Offer.application_id == application_id).order_by(Offer.amount.desc())
            )
        )
        .scalars()
        .all()
    )
    return application_view(application, list(offers))


async def list_applications(
    *, session: AsyncSession, limit: int, cursor: str | None, status: str | None
) -> schemas.Page:
    query = (
        select(Application).order_by(Application.created_at.desc(), Application.id.desc()).limit(limit + 1)
    )
    if status:
        query = query.where(Application.status == status)
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(tuple_(Application.created_at, Application.id) < tuple_(created_at, row_id))
    rows = list((await session.execute(query)).scalars().all())
    page, more = rows[:limit], len(rows) > limit
    return schemas.Page(
        data=[application_view(row, []) for row in page],
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
    )


def application_view(application: Application, offers: list[Offer]) -> schemas.ApplicationOut:
    decision = application.decision or None
    return schemas.ApplicationOut(
        id=application.id,
        external_id=application.external_id,
        status=application.status,  # type: ignore[arg-type]
        borrower=schemas.Borrower(sme_user_id=application.sme_user_id),
        amount=schemas.Amount(value=application.amount, currency=application.currency),  # type: ignore[arg-type]
        tenor_months=application.tenor_months,
        purpose=application.purpose,
        decision=schemas.Decision.model_validate(decision) if decision else None,
        offers=[offer_view(offer) for offer in offers],
        created_at=application.created_at,
        decided_at=application.decided_at,
    )


def _value(money: dict[str, Any] | None) -> int | None:
    return None if money is None else int(money["value"])


def offer_view(offer: Offer) -> schemas.OfferOut:
    """The stored quote (offchain.domain.offers.pricing.OfferTerms.to_json) as the API shows it."""
    terms, currency = offer.terms, offer.currency
    installments = terms.get("schedule", {}).get("installments", [])
    return schemas.OfferOut(
        id=offer.id,
        amount=schemas.Amount(value=offer.amount, currency=currency),  # type: ignore[arg-type]
        tenor_months=offer.tenor_months,
        apr_bps=offer.apr_bps,
        total_due=schemas.Amount(value=offer.total_due, currency=currency),  # type: ignore[arg-type]
        fees=schemas.Amount(value=_value(terms["origination_fee"]), currency=currency)  # type: ignore[arg-type]
        if _value(terms.get("origination_fee"))
        else None,
        effective_annual_rate_bps=terms.get("ear_bps"),
        frequency=terms.get("frequency"),
        installment_count=terms.get("installment_count"),
        schedule=[
            schemas.ScheduleItem(
                installment=item["index"],
                due_offset_s=item["due_offset"],
                amount=int(item["amount"]["value"]),
                principal=_value(item["principal"]),
                interest=_value(item["interest"]),
            )
            for item in installments
        ],
        status=offer.status,
        expires_at=offer.expires_at,
    )


# -- loans -------------------------------------------------------------------------------------

_BACKEND_STATUS = {
    LoanState.NONE: "pending_creation",
    LoanState.PENDING: "pending_approval",
    LoanState.APPROVED: "approved",
    LoanState.ACTIVE: "active",
    LoanState.REPAID: "repaid",
    LoanState.DEFAULTED: "defaulted",
    LoanState.WRITTEN_OFF: "written_off",
    LoanState.CANCELLED: "cancelled",
}


def _money(value: int | None, currency: str) -> dict[str, Any] | None:
    return None if value is None else {"value": value, "currency": currency}


class LoanFields(Protocol):
    """What a loan view is made of: a `Loan` entity, or a `caas_partner_loan` row."""

    id: uuid.UUID
    chain_loan_id: str
    chain_state: int
    currency: int | None
    principal: int | None
    total_due: int | None
    outstanding: int
    repaid: int
    late_fees_assessed: int
    installment_count: int | None
    installment_interval: int | None
    grace_period: int | None
    disbursed_at: datetime | None
    event_chain: str | None
    event_chain_mismatch: bool


def loan_schedule(loan: LoanFields) -> list[dict[str, Any]]:
    """The schedule the chain enforces: n installments of total_due // n, the last takes the rest
    (as ScheduleItem fields)."""
    if not loan.total_due or not loan.installment_count or not loan.installment_interval:
        return []
    count, base = loan.installment_count, loan.total_due // loan.installment_count
    start = loan.disbursed_at.timestamp() if loan.disbursed_at else None
    items = []
    for index in range(1, count + 1):
        offset = index * loan.installment_interval
        items.append(
            {
                "installment": index,
                "due_offset_s": offset,
                "due_at": None if start is None else datetime.fromtimestamp(start + offset, tz=UTC),
                "amount": base if index < count else loan.total_due - base * (count - 1),
            }
        )
    return items


# The loan's indexed events as one JSON array, in chain order: fetched with the loan in one query
# (the read path's round trips were most of its latency).
_TRANSACTIONS = (
    select(
        func.coalesce(
            func.jsonb_agg(
                aggregate_order_by(
                    func.jsonb_build_object(
                        "event",
                        ChainEvent.event,
                        "block_number",
                        ChainEvent.block_number,
                        "tx_hash",
                        ChainEvent.tx_hash,
                        "log_index",
                        ChainEvent.log_index,
                        "args",
                        ChainEvent.args,
                    ),
                    ChainEvent.block_number,
                    ChainEvent.log_index,
                )
            ),
            literal_column("'[]'::jsonb"),
        )
    )
    .where(ChainEvent.loan_id == Loan.chain_loan_id)
    .scalar_subquery()
)


_LOAN_WITH_TRANSACTIONS = select(Loan, _TRANSACTIONS).where(Loan.id == bindparam("loan_id"))


# One round trip: the function sets the partner scope and reads inside one statement (0009).
_PARTNER_LOAN = "SELECT * FROM caas_partner_loan($1, $2)"
_AMOUNT_COLUMNS = ("principal", "total_due", "outstanding", "repaid", "late_fees_assessed")


async def read_loan(db: Database, *, partner_id: uuid.UUID, loan_id: uuid.UUID) -> schemas.LoanOut:
    """GET /v1/loans/{id}: the loan and its events, as row-level security lets the partner see them."""
    row = await db.fetch_one(_PARTNER_LOAN, partner_id, loan_id)
    if row is None:
        raise not_found("loan", loan_id)
    fields = dict(row.items())
    for name in _AMOUNT_COLUMNS:  # NUMERIC(78, 0) arrives as Decimal; amounts are integers
        value = fields[name]
        fields[name] = None if value is None else int(value)
    return loan_view(SimpleNamespace(**fields), json.loads(fields.pop("transactions")))


async def get_loan(
    *, session: AsyncSession, loan_id: uuid.UUID, with_transactions: bool = True
) -> schemas.LoanOut:
    if not with_transactions:
        loan = await session.get(Loan, loan_id)
        if loan is None:
            raise not_found("loan", loan_id)
        return loan_view(loan, [])
    row = (await session.execute(_LOAN_WITH_TRANSACTIONS, {"loan_id": loan_id})).first()
    if row is None:
        raise not_found("loan", loan_id)
    loan, events = row
    return loan_view(loan, events)


def loan_view(loan: LoanFields, transactions: list[dict[str, Any]]) -> schemas.LoanOut:
    """The loan's answer, validated in one call (its amounts, schedule and events included: one
    pass through pydantic's validator instead of one per nested object)."""
    currency = from_iso_numeric(loan.currency) if loan.currency else "NGN"
    state = LoanState(loan.chain_state)
    return schemas.LoanOut.model_validate(
        {
            "id": loan.id,
            "chain_loan_id": loan.chain_loan_id,
            "status": _BACKEND_STATUS[state],
            "chain_state": state.name,
            "principal": _money(loan.principal, currency),
            "total_due": _money(loan.total_due, currency),
            "outstanding": _money(loan.outstanding if loan.chain_state else loan.total_due, currency),
            "repaid": _money(loan.repaid, currency),
            "late_fees_assessed": _money(loan.late_fees_assessed, currency),
            "installment_count": loan.installment_count,
            "installment_interval_s": loan.installment_interval,
            "grace_period_s": loan.grace_period,
            "disbursed_at": loan.disbursed_at,
            "schedule": loan_schedule(loan),
            "transactions": transactions,
            "event_chain_verified": None if loan.event_chain is None else not loan.event_chain_mismatch,
        }
    )


async def list_loans(
    *, session: AsyncSession, limit: int, cursor: str | None, status: str | None
) -> schemas.Page:
    limit = min(limit, MAX_LIMIT)
    # Only loans the backend originated for a partner: partner_id set (RLS also enforces it).
    query = select(Loan).where(Loan.partner_id.is_not(None)).order_by(Loan.created_at.desc(), Loan.id.desc())
    if status:
        states = [state for state, name in _BACKEND_STATUS.items() if name == status]
        query = query.where(Loan.chain_state.in_([int(s) for s in states]))
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(tuple_(Loan.created_at, Loan.id) < tuple_(created_at, row_id))
    rows = list((await session.execute(query.limit(limit + 1))).scalars().all())
    page, more = rows[:limit], len(rows) > limit
    return schemas.Page(
        data=[loan_view(row, []) for row in page],
        next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more and page else None,
    )


async def origination_of(session: AsyncSession, loan_id: uuid.UUID) -> Origination | None:
    return await session.get(Origination, loan_id)
