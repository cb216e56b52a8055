"""Early money on real PostgreSQL: a charge for a loan that is not repayable yet is held, applied
once (its own payment_ref) when the loan becomes ACTIVE, sent to review when it is cancelled;
a charge for a closed loan goes to review; redelivered events, the sweep, a crash before commit
and intake racing the activation all end in exactly one effect. The ledger's cash accounts
(clearing, suspense, held) agree with the payment records at every step.

The chain's part (the indexer's LoanDisbursed, RepaymentRecorded) is played by writing the
projection and calling the handlers the repayment service runs on those events; the stack test
in test_early_money_stack.py does the same with the real chain, indexer and rail.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import pytest_asyncio
from eventually import eventually_async
from offline_deployment import OFFLINE_DEPLOYMENT
from sqlalchemy import select, text, update

from offchain.domain import ledger as accounts
from offchain.domain import money_movement as mm
from offchain.persistence import ledger as journal
from offchain.persistence.migrate import upgrade
from offchain.persistence.models import Loan, Partner
from offchain.persistence.money import Payment
from offchain.platform.db import Database
from offchain.platform.settings import RailsSettings, Settings
from offchain.services.ledger.rail_checks import RailCheck
from offchain.services.repayment import chain_events, early_money, locks, receiving

pytestmark = pytest.mark.asyncio

PARTNER = uuid.UUID("00000000-0000-4000-8000-00000000e00a")
OTHER_PARTNER = uuid.UUID("00000000-0000-4000-8000-00000000e00b")
PRINCIPAL, TOTAL_DUE = 200_00, 250_00
DEPLOYMENT = OFFLINE_DEPLOYMENT


def _chain_id(loan_id: uuid.UUID) -> str:
    return "0x" + loan_id.hex * 2


@pytest_asyncio.fixture
async def db(make_database):  # type: ignore[no-untyped-def]
    url = make_database()
    upgrade(url)
    database = Database.from_settings(Settings(database={"url": url}).database)
    async with database.worker_session() as session:
        session.add_all([Partner(id=PARTNER, name="early"), Partner(id=OTHER_PARTNER, name="other")])
    yield database
    await database.dispose()


async def _loan(
    db: Database, state: int, *, on_chain: bool = True, partner: uuid.UUID = PARTNER
) -> uuid.UUID:
    loan_id = uuid.uuid4()
    async with db.worker_session() as session:
        session.add(
            Loan(
                id=loan_id,
                partner_id=partner,
                chain_loan_id=_chain_id(loan_id),
                borrower_ref="0x" + "0b" * 32,
                # a loan accepted but not yet seen on chain has no terms in the projection
                currency=566 if on_chain else None,
                principal=PRINCIPAL if on_chain else None,
                total_due=TOTAL_DUE if on_chain else None,
                chain_state=state,
            )
        )
        if state in (3, 4, 5):
            await session.flush()
            await _paid_out(session, loan_id)
    return loan_id


async def _paid_out(session: Any, loan_id: uuid.UUID) -> None:
    await journal.post(
        session,
        mm.payout_posting(
            posting_id=f"payout:{loan_id}",
            loan_id=loan_id,
            partner_id=PARTNER,
            principal=PRINCIPAL,
            total_due=TOTAL_DUE,
            currency="NGN",
        ),
    )


async def _becomes_active(db: Database, loan_id: uuid.UUID) -> None:
    """What the payout and the indexer leave behind: the payout posted, the projection ACTIVE
    with its terms (the indexer commits the state with the LoanDisbursed event it publishes)."""
    async with db.worker_session() as session:
        await _paid_out(session, loan_id)
        await session.execute(
            update(Loan)
            .where(Loan.id == loan_id)
            .values(chain_state=3, currency=566, principal=PRINCIPAL, total_due=TOTAL_DUE)
        )


async def _set_state(db: Database, loan_id: uuid.UUID, state: int) -> None:
    async with db.worker_session() as session:
        await session.execute(update(Loan).where(Loan.id == loan_id).values(chain_state=state))


def _charge(reference: str, amount: int, loan: uuid.UUID) -> receiving.Verified:
    return receiving.Verified(
        mm.IncomingPayment(
            provider=mm.PAYSTACK,
            reference=reference,
            amount=amount,
            currency="NGN",
            metadata_loan_id=str(loan),
        ),
        {"reference": reference, "amount": amount},
        "card",
    )


async def _take_in(db: Database, *items: receiving.Verified) -> list[receiving.Intake]:
    async with db.worker_session() as session:
        return await receiving.receive_many(session, list(items), deployment=DEPLOYMENT)


async def _settle(db: Database, *loan_ids: uuid.UUID) -> int:
    """What the repayment service does on chain.LoanDisbursed / chain.LoanCancelled."""
    async with db.worker_session() as session:
        return await early_money.settle_loan_events(
            session, [_chain_id(loan_id) for loan_id in loan_ids], deployment=DEPLOYMENT
        )


async def _lock_waiters(db: Database) -> int:
    """Sessions of this test's database waiting for a lock (a row, table or advisory lock).

    pg_locks, not pg_stat_activity's wait_event: the latter is hidden from a role not the waiter's.
    """
    async with db.worker_session() as session:
        return await session.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN"
                " (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
            )
        )


async def _row(db: Database, reference: str) -> Payment:
    async with db.worker_session() as session:
        row = (
            await session.execute(select(Payment).where(Payment.provider_reference == reference))
        ).scalar_one()
        session.expunge(row)
        return row


async def _balance(db: Database, account: str) -> journal.Balance:
    async with db.worker_session() as session:
        return await journal.balance(session, account, "NGN")


async def _intents(db: Database) -> dict[str, tuple[str, str]]:
    async with db.worker_session() as session:
        rows = await session.execute(text("SELECT idempotency_key, data, status FROM caas_tx_intents"))
        return {key: (data, status) for key, data, status in rows.all()}


async def _effects(db: Database) -> tuple[Any, ...]:
    async with db.worker_session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT provider_reference, status, loan_id, applied, excess, held_posting, "
                    "applied_posting FROM caas_payments ORDER BY provider_reference"
                )
            )
        ).all()
        postings = (
            await session.execute(text("SELECT posting_id, status FROM caas_ledger_postings ORDER BY 1"))
        ).all()
    return tuple(rows), tuple(postings), tuple(sorted((await _intents(db)).items()))


async def _cash_mismatches(db: Database) -> list[dict[str, Any]]:
    """The reconciliation's ledger-vs-payment-records checks (clearing, suspense, held)."""
    async with db.worker_session() as session:
        found = await RailCheck(RailsSettings())._cash_accounts(session)
    return [m.as_dict() for m in found]


def _record_args(row: Payment, outstanding_after: int) -> dict[str, Any]:
    return {
        "payment_ref": row.payment_ref,
        "scheduled_part": row.applied,
        "outstanding_after": outstanding_after,
    }


async def test_held_while_pending__applied_once_when_active(db: Database) -> None:
    not_on_chain = await _loan(db, 0, on_chain=False)
    pending = await _loan(db, 1)
    await _take_in(db, _charge("early-0", 30_00, not_on_chain), _charge("early-1", 40_00, pending))
    await _take_in(db, _charge("early-2", 50_00, pending))
    await _take_in(db, _charge("early-1", 40_00, pending))  # the webhook again: nothing more
    for reference, loan in (("early-0", not_on_chain), ("early-1", pending), ("early-2", pending)):
        row = await _row(db, reference)
        assert (row.status, row.loan_id, row.applied, row.excess) == ("held", loan, 0, 0), reference
        assert "applied when it becomes ACTIVE" in (row.detail or "")
    assert (await _balance(db, accounts.loan_held(pending))).posted == 90_00
    assert (await _balance(db, accounts.loan_held(not_on_chain))).posted == 30_00
    assert await _intents(db) == {}  # nothing for the chain while the loan cannot take it
    assert await _cash_mismatches(db) == []

    # still APPROVED: the event of another loan, or an early sweep, leaves the money held
    await _set_state(db, pending, 2)
    assert await _settle(db, pending) == 0
    async with db.worker_session() as session:
        assert await early_money.sweep(session, deployment=DEPLOYMENT) == 0

    await _becomes_active(db, pending)
    assert await _settle(db, pending) == 2
    first, second = await _row(db, "early-1"), await _row(db, "early-2")
    assert (first.status, first.applied, second.status, second.applied) == (
        "pending_chain",
        40_00,
        "pending_chain",
        50_00,
    )
    intents = await _intents(db)
    for row in (first, second):
        # each applied under its own payment_ref, keyed as every first record is
        data, status = intents[f"repay:{row.payment_ref}"]
        assert status == "pending"
        assert (
            data
            == "0x"
            + DEPLOYMENT.loan_book_contract.record_repayment(
                bytes.fromhex(_chain_id(pending)[2:]), row.applied, bytes.fromhex(row.payment_ref[2:])
            ).hex()
        )
    receivable = await _balance(db, accounts.loan_receivable(pending))
    assert (receivable.posted, receivable.pending_credits) == (TOTAL_DUE, 90_00)
    assert await _cash_mismatches(db) == []

    # the event delivered again, and the sweep: no second effect
    settled = await _effects(db)
    assert await _settle(db, pending) == 0
    async with db.worker_session() as session:
        assert await early_money.sweep(session, deployment=DEPLOYMENT) == 0
    assert await _effects(db) == settled

    # the chain records both: posted from the held account, which ends empty
    async with db.worker_session() as session:
        await chain_events.on_repayments_recorded(
            session,
            [
                chain_events.Recorded(_record_args(first, TOTAL_DUE - 40_00), "0x" + "ab" * 32),
                chain_events.Recorded(_record_args(second, TOTAL_DUE - 90_00), "0x" + "ab" * 32),
            ],
        )
    assert {(await _row(db, r)).status for r in ("early-1", "early-2")} == {"recorded"}
    assert (await _balance(db, accounts.loan_held(pending))).posted == 0
    receivable = await _balance(db, accounts.loan_receivable(pending))
    assert (receivable.posted, receivable.pending_credits) == (TOTAL_DUE - 90_00, 0)
    assert (await _balance(db, accounts.rail_clearing(mm.PAYSTACK))).posted == 120_00
    assert await _cash_mismatches(db) == []

    # the loan that was not on chain yet becomes ACTIVE without its event reaching us: the sweep
    await _becomes_active(db, not_on_chain)
    async with db.worker_session() as session:
        assert await early_money.sweep(session, deployment=DEPLOYMENT) == 1
    assert (await _row(db, "early-0")).status == "pending_chain"


async def test_held_money_beyond_what_is_owed(db: Database) -> None:
    """Held payments are applied in the order they came; what the loan does not owe is the
    borrower's credit (part of a payment) or for review (a whole payment)."""
    loan = await _loan(db, 2)
    await _take_in(db, _charge("big-1", 200_00, loan))
    await _take_in(db, _charge("big-2", 100_00, loan))
    await _take_in(db, _charge("big-3", 10_00, loan))
    await _becomes_active(db, loan)
    await _settle(db, loan)
    rows = [await _row(db, f"big-{i}") for i in (1, 2, 3)]
    assert [(r.status, r.applied, r.excess) for r in rows] == [
        ("pending_chain", 200_00, 0),
        ("pending_chain", 50_00, 50_00),
        ("review", 0, 0),
    ]
    assert "owed nothing more" in (rows[2].detail or "")
    assert len(await _intents(db)) == 2
    assert await _cash_mismatches(db) == []


async def test_crash_mid_way__nothing_then_exactly_once(db: Database) -> None:
    loan = await _loan(db, 2)
    await _take_in(db, _charge("crash-1", 60_00, loan))
    await _becomes_active(db, loan)
    before = await _effects(db)
    with pytest.raises(RuntimeError, match="crash"):
        async with db.worker_session() as session:
            await early_money.settle_loan_events(session, [_chain_id(loan)], deployment=DEPLOYMENT)
            raise RuntimeError("crash after the application's writes, before its commit")
    assert await _effects(db) == before  # the event is redelivered: as if it had never run
    assert (await _row(db, "crash-1")).status == "held"
    assert await _settle(db, loan) == 1
    assert await _settle(db, loan) == 0
    assert list(await _intents(db)) == [f"repay:{(await _row(db, 'crash-1')).payment_ref}"]


async def test_intake_racing_the_activation__applied_exactly_once(db: Database) -> None:
    """The charge is taken in while the projection still says APPROVED, and the indexer's
    commit of ACTIVE and the LoanDisbursed handler run before intake commits: the handler waits
    for intake's loan lock, then applies the money it held."""
    for round_ in range(3):
        loan = await _loan(db, 2)
        intake_in = asyncio.Event()
        release = asyncio.Event()

        async def intake(loan: uuid.UUID = loan, round_: int = round_) -> None:
            async with db.worker_session() as session:
                await receiving.receive_many(
                    session, [_charge(f"race-{round_}", 70_00, loan)], deployment=DEPLOYMENT
                )
                intake_in.set()
                await release.wait()  # the loan lock is held until this commit

        task = asyncio.create_task(intake())
        await intake_in.wait()
        await _becomes_active(db, loan)  # the indexer does not take the loan lock
        settling = asyncio.create_task(_settle(db, loan))
        # PostgreSQL shows the handler's session waiting on a lock: it got as far as intake's lock
        await eventually_async(lambda: _lock_waiters(db), what="the handler waiting on a lock", every=0.02)
        assert not settling.done()  # waiting for intake's lock
        release.set()
        await task
        assert await settling == 1
        row = await _row(db, f"race-{round_}")
        assert (row.status, row.applied) == ("pending_chain", 70_00)
        assert f"repay:{row.payment_ref}" in await _intents(db)
    assert await _cash_mismatches(db) == []


async def test_cancelled_and_closed_loans__review__matched_by_their_partner(db: Database) -> None:
    cancelled = await _loan(db, 1)
    repaid = await _loan(db, 4)
    target = await _loan(db, 3)
    await _take_in(db, _charge("cxl-1", 25_00, cancelled))
    await _set_state(db, cancelled, 7)  # LoanCancelled
    assert await _settle(db, cancelled) == 1
    await _take_in(db, _charge("after-repaid-1", 15_00, repaid))
    for reference, loan in (("cxl-1", cancelled), ("after-repaid-1", repaid)):
        row = await _row(db, reference)
        assert (row.status, row.loan_id, row.applied) == ("review", loan, 0), reference
    assert "CANCELLED" in ((await _row(db, "cxl-1")).detail or "")
    assert "REPAID" in ((await _row(db, "after-repaid-1")).detail or "")
    assert (await _balance(db, accounts.loan_held(cancelled))).posted == 25_00
    assert (await _balance(db, accounts.loan_held(repaid))).posted == 15_00
    assert await _intents(db) == {}
    assert await _cash_mismatches(db) == []

    async def match(reference: str, loan_id: uuid.UUID) -> Payment:
        async with db.worker_session() as session:
            loan = await locks.lock_loan(session, loan_id)
            row = (
                await session.execute(
                    select(Payment).where(Payment.provider_reference == reference).with_for_update()
                )
            ).scalar_one()
            assert loan is not None
            await early_money.match_reviewed(session, row, loan, deployment=DEPLOYMENT)
            session.expunge(row)
            return row

    with pytest.raises(ValueError, match="not repayable"):
        await match("cxl-1", repaid)
    matched = await match("cxl-1", target)
    assert (matched.status, matched.loan_id, matched.applied, matched.match_method) == (
        "pending_chain",
        target,
        25_00,
        "manual",
    )
    key = early_money.current_intent_key(matched)
    assert key is not None and key.startswith(f"repay:{matched.payment_ref}:m")
    assert key in await _intents(db)
    assert await _cash_mismatches(db) == []

    # the chain refuses it: back in the held account, for review again; a late answer to it changes nothing
    async with db.worker_session() as session:
        await chain_events.on_intent_refused(session, key, "loan_book: amount exceeds outstanding")
    refused = await _row(db, "cxl-1")
    assert (refused.status, refused.detail) == (
        "review",
        "for review: the chain refused the repayment: loan_book: amount exceeds outstanding",
    )
    assert (await _balance(db, accounts.loan_held(cancelled))).posted == 25_00
    assert await _cash_mismatches(db) == []
    again = await match("cxl-1", target)
    async with db.worker_session() as session:
        await chain_events.on_intent_refused(session, key, "late answer to the first attempt")
    assert (await _row(db, "cxl-1")).status == "pending_chain"
    assert early_money.current_intent_key(again) != key


async def test_chargeback_of_applied_held_money(db: Database) -> None:
    loan = await _loan(db, 1)
    await _take_in(db, _charge("cb-1", 80_00, loan))
    await _becomes_active(db, loan)
    await _settle(db, loan)
    row = await _row(db, "cb-1")
    async with db.worker_session() as session:
        await chain_events.on_repayments_recorded(
            session, [chain_events.Recorded(_record_args(row, TOTAL_DUE - 80_00))]
        )
    async with db.worker_session() as session:
        await chain_events.on_repayment_reversed(session, {"payment_ref": row.payment_ref})
    assert (await _row(db, "cb-1")).status == "reversed"
    assert (await _balance(db, accounts.loan_held(loan))).posted == 0
    assert (await _balance(db, accounts.loan_receivable(loan))).posted == TOTAL_DUE
    assert (await _balance(db, accounts.rail_clearing(mm.PAYSTACK))).posted == 0
    assert await _cash_mismatches(db) == []


async def test_money_held_too_long_on_a_loan_left_pending__review(db: Database) -> None:
    left = await _loan(db, 1)
    await _take_in(db, _charge("stale-1", 12_00, left))
    await _take_in(db, _charge("fresh-1", 13_00, left))
    async with db.worker_session() as session:
        await session.execute(
            text(
                "UPDATE caas_payments SET created_at = now() - interval '31 days' WHERE provider_reference = 'stale-1'"
            )
        )
    async with db.worker_session() as session:
        assert await early_money.sweep(session, deployment=DEPLOYMENT) == 1
    stale, fresh = await _row(db, "stale-1"), await _row(db, "fresh-1")
    assert (stale.status, fresh.status) == ("review", "held")
    assert "held 30 days" in (stale.detail or "")
    assert (await _balance(db, accounts.loan_held(left))).posted == 25_00  # still there, for review
    assert await _cash_mismatches(db) == []
