"""Batched repayment intake (`receiving.receive_many`) on real PostgreSQL: a batch has exactly the
effects of taking its payments one by one, in order -- rows, postings, holds, chain intents and
monitoring flags -- whatever it mixes (duplicates, several payments of one loan, overpayment, a
repaid loan, a reference route, unknown loans, another currency); a batch delivered again has no
effect; a batch that fails before its commit leaves nothing behind and can be taken in again.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, text

from offchain.chain.artifacts import compile_contract
from offchain.chain.contracts import Deployment
from offchain.domain import money_movement as mm
from offchain.domain.monitoring import MonitoringPolicy
from offchain.persistence import ledger as journal
from offchain.persistence.migrate import upgrade
from offchain.persistence.models import Loan, Partner
from offchain.persistence.money import Payment, PaymentRoute
from offchain.platform.db import Database
from offchain.platform.settings import Settings
from offchain.services.repayment import chain_events, receiving

pytestmark = pytest.mark.asyncio

PARTNER = uuid.UUID("00000000-0000-4000-8000-00000000000a")
ACTIVE_A = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
ACTIVE_B = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
REPAID = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
PENDING = uuid.UUID("00000000-0000-4000-8000-0000000000e1")  # not repayable yet: money held
NOT_OURS = uuid.UUID("00000000-0000-4000-8000-0000000000d1")  # no such loan
TOTAL_DUE = 250_00
# the loan book the intents call: never deployed here, its address and ABIs are what is read
# (the allowlist checks each intent against them)
DEPLOYMENT = Deployment(
    chain_id=31337,
    loan_book_address="0x" + "42" * 20,
    loan_book_abi=compile_contract("LoanBook").abi,
    loan_book_block=0,
    committee_address="0x" + "43" * 20,
    committee_abi=compile_contract("DisbursementCommittee").abi,
    committee_block=0,
)


def _chain_id(loan_id: uuid.UUID) -> str:
    return "0x" + loan_id.hex * 2


async def _seed(db: Database) -> None:
    async with db.worker_session() as session:
        session.add(Partner(id=PARTNER, name="batch partner"))
        await session.flush()
        for loan_id, state in ((ACTIVE_A, 3), (ACTIVE_B, 3), (REPAID, 4), (PENDING, 1)):
            session.add(
                Loan(
                    id=loan_id,
                    partner_id=PARTNER,
                    chain_loan_id=_chain_id(loan_id),
                    borrower_ref="0x" + "0b" * 32,
                    currency=566,
                    principal=200_00,
                    total_due=TOTAL_DUE,
                    chain_state=state,
                )
            )
        await session.flush()
        session.add(PaymentRoute(kind="reference", value="route-b-1", loan_id=ACTIVE_B, partner_id=PARTNER))
        for loan_id in (ACTIVE_A, ACTIVE_B):
            await journal.post(
                session,
                mm.payout_posting(
                    posting_id=f"payout:{loan_id}",
                    loan_id=loan_id,
                    partner_id=PARTNER,
                    principal=200_00,
                    total_due=TOTAL_DUE,
                    currency="NGN",
                ),
            )


def _paid(reference: str, amount: int, loan: uuid.UUID | None, currency: str = "NGN") -> receiving.Verified:
    return receiving.Verified(
        mm.IncomingPayment(
            provider=mm.PAYSTACK,
            reference=reference,
            amount=amount,
            currency=currency,
            metadata_loan_id=str(loan) if loan else None,
        ),
        {"reference": reference, "amount": amount, "metadata": {"user_id": "someone"}},
        "card",
    )


# stream order: what one-by-one intake would see, one after another
BATCH = [
    _paid("a-1", 100_00, ACTIVE_A),
    _paid("a-2", 100_00, ACTIVE_A),
    _paid("a-1", 100_00, ACTIVE_A),  # delivered twice within the batch
    _paid("b-1", 60_00, ACTIVE_B),
    _paid("a-3", 100_00, ACTIVE_A),  # 50_00 left to apply: the rest is the borrower's credit
    _paid("route-b-1", 10_00, None),  # the issued reference finds loan B
    _paid("gone-1", 5_00, NOT_OURS),  # no such loan: suspense
    _paid("usd-1", 5_00, ACTIVE_A, currency="USD"),  # another currency: suspense
    _paid("repaid-1", 7_00, REPAID),  # the loan is closed: operator review
    _paid("a-4", 1_00, ACTIVE_A),  # loan A fully spoken for: operator review
    _paid("early-1", 9_00, PENDING),  # held until the loan is ACTIVE
    _paid("nobody-1", 3_00, None),  # nothing matches: suspense
]


async def _effects(db: Database) -> dict[str, Any]:
    """Everything intake writes, without the ids and times that differ between databases."""
    async with db.worker_session() as session:
        rows = (await session.execute(select(Payment).order_by(Payment.provider_reference))).scalars().all()
        by_id = {row.id: row.provider_reference for row in rows}
        payment_rows = [
            (
                r.provider_reference,
                r.payment_ref,
                r.status,
                r.applied,
                r.excess,
                r.loan_id,
                r.partner_id,
                r.match_method,
                r.detail,
                r.channel,
                r.provider_record,
            )
            for r in rows
        ]
        postings = (
            await session.execute(
                text(
                    "SELECT p.posting_id, p.status, p.description, p.metadata, "
                    "array_agg(e.account || ' ' || e.side || ' ' || e.amount || ' ' || e.currency "
                    "ORDER BY e.leg) FROM caas_ledger_postings p "
                    "JOIN caas_ledger_entries e ON e.posting_seq = p.seq "
                    "GROUP BY p.seq ORDER BY p.posting_id"
                )
            )
        ).all()
        intents = (
            await session.execute(
                text(
                    "SELECT idempotency_key, to_address, data, value, status FROM caas_tx_intents "
                    "ORDER BY idempotency_key"
                )
            )
        ).all()
        flags = (
            await session.execute(
                text("SELECT subject_kind, subject_id, rule, detail, loan_id FROM caas_monitoring_flags")
            )
        ).all()
        balances = (
            await session.execute(
                text(
                    "SELECT account, currency, sum(posted_debits), sum(posted_credits), "
                    "sum(pending_debits), sum(pending_credits) FROM caas_ledger_balances "
                    "GROUP BY account, currency ORDER BY account, currency"
                )
            )
        ).all()
    return {
        "payments": payment_rows,
        "postings": [tuple(p) for p in postings],
        "intents": [tuple(i) for i in intents],
        "flags": sorted(
            (kind, by_id[uuid.UUID(subject)], rule, detail, loan)
            for kind, subject, rule, detail, loan in flags
        ),
        "balances": [tuple(b) for b in balances],
    }


@pytest_asyncio.fixture
async def two_databases(make_database):  # type: ignore[no-untyped-def]
    databases = []
    for _ in range(2):
        url = make_database()
        upgrade(url)
        database = Database.from_settings(Settings(database={"url": url}).database)
        await _seed(database)
        databases.append(database)
    yield databases
    for database in databases:
        await database.dispose()


async def test_a_batch_has_the_effects_of_one_by_one(two_databases) -> None:  # type: ignore[no-untyped-def]
    one_by_one, batched = two_databases
    singles = []
    for item in BATCH:
        async with one_by_one.worker_session() as session:
            singles.append(
                await receiving.receive(
                    session,
                    item.payment,
                    deployment=DEPLOYMENT,
                    provider_record=item.provider_record,
                    channel=item.channel,
                    paid_at=item.paid_at,
                )
            )
    async with batched.worker_session() as session:
        results = await receiving.receive_many(session, BATCH, deployment=DEPLOYMENT)

    assert [(r.status, r.created) for r in results] == [(r.status, r.created) for r in singles]
    assert [r.created for r in results] == [True, True, False] + [True] * 9
    assert results[2].payment_id == results[0].payment_id
    expected = await _effects(one_by_one)
    assert await _effects(batched) == expected
    statuses = {row[0]: (row[2], row[3], row[4]) for row in expected["payments"]}
    assert statuses == {
        "a-1": ("pending_chain", 100_00, 0),
        "a-2": ("pending_chain", 100_00, 0),
        "a-3": ("pending_chain", 50_00, 50_00),
        "a-4": ("review", 0, 0),
        "early-1": ("held", 0, 0),
        "b-1": ("pending_chain", 60_00, 0),
        "route-b-1": ("pending_chain", 10_00, 0),
        "gone-1": ("unmatched", 0, 0),
        "usd-1": ("unmatched", 0, 0),
        "repaid-1": ("review", 0, 0),
        "nobody-1": ("unmatched", 0, 0),
    }
    assert len(expected["intents"]) == 5

    # the same batch again (a redelivery after a crash between commit and ack): no effect
    async with batched.worker_session() as session:
        again = await receiving.receive_many(session, BATCH, deployment=DEPLOYMENT)
    assert [r.created for r in again] == [False] * len(BATCH)
    assert [r.payment_id for r in again] == [r.payment_id for r in results]
    assert await _effects(batched) == expected


async def test_velocity_flags_count_the_batch_as_one_by_one(two_databases) -> None:  # type: ignore[no-untyped-def]
    """More payments into one loan within the hour than the policy allows: the same ones flagged."""
    one_by_one, batched = two_databases
    limit = MonitoringPolicy().max_payments_per_loan_per_hour
    first = [_paid(f"v-{i:02d}", 1_00, ACTIVE_B) for i in range(limit - 2)]
    second = [_paid(f"w-{i:02d}", 1_00, ACTIVE_B) for i in range(5)]
    for item in first + second:
        async with one_by_one.worker_session() as session:
            await receiving.receive(
                session,
                item.payment,
                deployment=DEPLOYMENT,
                provider_record=item.provider_record,
                channel="card",
            )
    for batch in (first, second):  # the second batch counts what the first committed
        async with batched.worker_session() as session:
            await receiving.receive_many(session, batch, deployment=DEPLOYMENT)
    expected = await _effects(one_by_one)
    assert [(ref, rule) for _, ref, rule, _, _ in expected["flags"]] == [
        ("w-02", "payment_velocity"),
        ("w-03", "payment_velocity"),
        ("w-04", "payment_velocity"),
    ]
    assert await _effects(batched) == expected


async def test_a_batch_that_fails_before_commit_leaves_nothing(two_databases) -> None:  # type: ignore[no-untyped-def]
    _, batched = two_databases
    before = await _effects(batched)
    with pytest.raises(RuntimeError, match="crash"):
        async with batched.worker_session() as session:
            await receiving.receive_many(session, BATCH, deployment=DEPLOYMENT)
            raise RuntimeError("crash between the batch's writes and its commit")
    assert await _effects(batched) == before
    async with batched.worker_session() as session:
        results = await receiving.receive_many(session, BATCH, deployment=DEPLOYMENT)
    assert sum(r.created for r in results) == 11


async def _outbox(db: Database) -> list[tuple[Any, ...]]:
    async with db.worker_session() as session:
        rows = await session.execute(
            text("SELECT topic, key, payload, partner_id FROM caas_outbox ORDER BY id")
        )
        return [
            (topic, key, {k: v for k, v in payload.items() if k != "payment_id"}, partner)
            for topic, key, payload, partner in rows.all()
        ]


async def test_recorded_repayments_in_a_batch_as_one_by_one(two_databases) -> None:  # type: ignore[no-untyped-def]
    """The chain's RepaymentRecorded for the batch's payments, one repeated, one unknown: the same
    holds posted, interest earned (the loan's last payment earns what is left), partner events."""
    one_by_one, batched = two_databases
    for database in two_databases:
        async with database.worker_session() as session:
            await receiving.receive_many(session, BATCH, deployment=DEPLOYMENT)
    outstanding = {ACTIVE_A: TOTAL_DUE, ACTIVE_B: TOTAL_DUE}
    events = []
    async with batched.worker_session() as session:
        pending = (
            (
                await session.execute(
                    select(Payment)
                    .where(Payment.status == "pending_chain")
                    .order_by(Payment.provider_reference)
                )
            )
            .scalars()
            .all()
        )
        for row in pending:
            outstanding[row.loan_id] -= row.applied
            events.append(
                {
                    "payment_ref": row.payment_ref,
                    "scheduled_part": row.applied,
                    "outstanding_after": outstanding[row.loan_id],
                }
            )
    assert outstanding[ACTIVE_A] == 0  # loan A closes: its last payment earns the rest
    events.insert(2, dict(events[0]))  # indexed twice
    events.append({"payment_ref": "0x" + "ee" * 32, "scheduled_part": 1, "outstanding_after": 1})

    for args in events:
        async with one_by_one.worker_session() as session:
            await chain_events.on_repayment_recorded(session, args, tx_hash="0x" + "ab" * 32)
    async with batched.worker_session() as session:
        await chain_events.on_repayments_recorded(
            session, [chain_events.Recorded(args, "0x" + "ab" * 32) for args in events]
        )

    expected = await _effects(one_by_one)
    assert await _effects(batched) == expected
    assert await _outbox(batched) == await _outbox(one_by_one)
    assert {row[2] for row in expected["payments"]} == {"recorded", "review", "unmatched", "held"}
    assert any(p[0].startswith("interest:") for p in expected["postings"])

    # indexed again after a crash between commit and ack: nothing more
    async with batched.worker_session() as session:
        await chain_events.on_repayments_recorded(session, [chain_events.Recorded(args) for args in events])
    assert await _effects(batched) == expected
    assert len(await _outbox(batched)) == len(await _outbox(one_by_one))
