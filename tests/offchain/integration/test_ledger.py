"""The ledger on real PostgreSQL: idempotency, two-phase holds, reversals, and the invariants
the database itself refuses to break (unbalanced postings, edited entries, forged balances)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict

import pytest
from eventually import eventually_async
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from offchain.domain import ledger as L
from offchain.domain.ledger import Posting, credit, debit
from offchain.persistence import ledger
from offchain.persistence.ledger import LedgerConflict, PostingNotFound, PostingStateError
from offchain.platform.db import Database

pytestmark = pytest.mark.asyncio


def _ids() -> tuple[str, str, str]:
    """A fresh loan, partner and posting prefix: tests share the session's database."""
    return f"0x{uuid.uuid4().hex * 2}", str(uuid.uuid4()), uuid.uuid4().hex[:10]


def disbursement(
    loan: str, partner: str, posting_id: str, principal: int = 100_000, fees: int = 10_000
) -> Posting:
    return Posting(
        posting_id,
        (
            debit(L.loan_receivable(loan), principal + fees, "NGN"),
            credit(L.partner_funding(partner), principal, "NGN"),
            credit(L.loan_unearned_income(loan), fees, "NGN"),
        ),
        "disbursement",
        {"loan_id": loan, "partner_id": partner},
    )


def repayment(loan: str, posting_id: str, amount: int) -> Posting:
    return Posting(
        posting_id,
        (debit(L.rail_clearing("paystack"), amount, "NGN"), credit(L.loan_receivable(loan), amount, "NGN")),
        "repayment",
        {"loan_id": loan},
    )


async def test_post_is_idempotent_and_moves_balances(db: Database) -> None:
    loan, partner, p = _ids()
    posting = disbursement(loan, partner, f"{p}:disbursement")
    async with db.worker_session() as session:
        assert await ledger.post(session, posting) is True
    async with db.worker_session() as session:
        assert await ledger.post(session, posting) is False
        # the same legs in another order are the same posting
        shuffled = Posting(posting.posting_id, posting.legs[::-1], "retried", posting.metadata)
        assert await ledger.post(session, shuffled) is False
        receivable = await ledger.balance(session, L.loan_receivable(loan), "NGN")
        funding = await ledger.balance(session, L.partner_funding(partner), "NGN")
        record = await ledger.get_posting(session, posting.posting_id)
        rows = (
            await session.execute(
                text("SELECT count(*) FROM caas_ledger_postings WHERE posting_id = :id"),
                {"id": posting.posting_id},
            )
        ).scalar_one()
    assert rows == 1
    assert receivable == ledger.Balance(110_000, 0, 0, 110_000, 0)
    assert funding.posted == 100_000  # credit-normal: shown positive
    assert record is not None and record.status == "posted" and record.legs == posting.legs
    assert record.metadata == {"loan_id": loan, "partner_id": partner}
    assert record.posted_at is not None


async def test_same_id_with_other_legs_is_a_conflict_and_leaves_the_transaction_usable(db: Database) -> None:
    loan, _partner, p = _ids()
    async with db.worker_session() as session:
        await ledger.post(session, repayment(loan, f"{p}:r1", 5_000))
    async with db.worker_session() as session:
        with pytest.raises(LedgerConflict, match="different legs"):
            await ledger.post(session, repayment(loan, f"{p}:r1", 5_001))
        # nothing failed in the database: the caller may go on and commit other work
        assert await ledger.post(session, repayment(loan, f"{p}:r2", 7)) is True
    async with db.worker_session() as session:
        assert (await ledger.balance(session, L.loan_receivable(loan), "NGN")).posted == -5_007


async def test_hold_then_post(db: Database) -> None:
    loan, partner, p = _ids()
    held = disbursement(loan, partner, f"{p}:hold")
    async with db.worker_session() as session:
        assert await ledger.hold(session, held) is True
        assert await ledger.hold(session, held) is False
        pending = await ledger.balance(session, L.loan_receivable(loan), "NGN")
        assert await ledger.post(session, repayment(loan, f"{p}:other", 1)) is True
        with pytest.raises(LedgerConflict, match="post_pending"):
            await ledger.post(session, held)
    assert pending == ledger.Balance(0, 110_000, 0)
    async with db.worker_session() as session:
        assert await ledger.post_pending(session, held.posting_id) is True
    async with db.worker_session() as session:
        assert await ledger.post_pending(session, held.posting_id) is False
        assert await ledger.hold(session, held) is False  # a retried hold after it was posted
        assert await ledger.post(session, held) is False
        posted = await ledger.balance(session, L.loan_receivable(loan), "NGN")
        with pytest.raises(PostingStateError):
            await ledger.void_pending(session, held.posting_id)
    assert posted == ledger.Balance(110_000 - 1, 0, 0, 110_000, 1)


async def test_hold_then_void(db: Database) -> None:
    loan, partner, p = _ids()
    held = disbursement(loan, partner, f"{p}:hold")
    async with db.worker_session() as session:
        await ledger.hold(session, held)
    async with db.worker_session() as session:
        assert await ledger.void_pending(session, held.posting_id) is True
        assert await ledger.void_pending(session, held.posting_id) is False
        with pytest.raises(PostingStateError, match="voided"):
            await ledger.post_pending(session, held.posting_id)
        with pytest.raises(LedgerConflict, match="new posting id"):
            await ledger.hold(session, held)
        with pytest.raises(PostingNotFound):
            await ledger.void_pending(session, f"{p}:never")
        with pytest.raises(PostingNotFound):
            await ledger.post_pending(session, f"{p}:never")
        after = await ledger.balance(session, L.loan_receivable(loan), "NGN")
        record = await ledger.get_posting(session, held.posting_id)
    assert after == ledger.Balance(0, 0, 0)
    assert record is not None and record.status == "voided" and record.voided_at is not None


async def test_reversal(db: Database) -> None:
    loan, partner, p = _ids()
    async with db.worker_session() as session:
        await ledger.post(session, disbursement(loan, partner, f"{p}:d"))
        await ledger.post(session, repayment(loan, f"{p}:r", 30_000))
    async with db.worker_session() as session:
        assert (
            await ledger.reverse(session, f"{p}:r", reversal_id=f"{p}:r:chargeback", description="cb") is True
        )
        assert (
            await ledger.reverse(session, f"{p}:r", reversal_id=f"{p}:r:chargeback", description="cb")
            is False
        )
        with pytest.raises(LedgerConflict, match="already reversed"):
            await ledger.reverse(session, f"{p}:r", reversal_id=f"{p}:r:again", description="twice")
        with pytest.raises(PostingNotFound):
            await ledger.reverse(session, f"{p}:missing", reversal_id=f"{p}:x", description="x")
        await ledger.hold(session, repayment(loan, f"{p}:held", 5))
        with pytest.raises(PostingStateError, match="void"):
            await ledger.reverse(session, f"{p}:held", reversal_id=f"{p}:y", description="y")
        receivable = await ledger.balance(session, L.loan_receivable(loan), "NGN")
        clearing = await ledger.balance(session, L.rail_clearing("paystack"), "NGN")
        original = await ledger.get_posting(session, f"{p}:r")
        reversal = await ledger.get_posting(session, f"{p}:r:chargeback")
    assert receivable.posted == 110_000 and receivable.pending_credits == 5
    assert original is not None and original.reversed_by == f"{p}:r:chargeback"
    assert reversal is not None and reversal.reverses == f"{p}:r"
    assert [leg.side for leg in reversal.legs] == [leg.side.opposite for leg in original.legs]
    assert clearing.posted_debits >= 30_000 and clearing.posted_credits >= 30_000


async def test_concurrent_reversals_with_different_ids_yield_one(db: Database) -> None:
    loan, _partner, p = _ids()
    async with db.worker_session() as session:
        await ledger.post(session, repayment(loan, f"{p}:r", 900))

    async def attempt(n: int) -> bool | Exception:
        try:
            async with db.worker_session() as session:
                return await ledger.reverse(session, f"{p}:r", reversal_id=f"{p}:rev{n}", description="race")
        except LedgerConflict as error:
            return error

    outcomes = await asyncio.gather(*(attempt(n) for n in range(5)))
    assert outcomes.count(True) == 1
    assert all(isinstance(o, LedgerConflict) for o in outcomes if o is not True)
    async with db.worker_session() as session:
        assert (await ledger.balance(session, L.loan_receivable(loan), "NGN")).posted == 0


async def test_ten_concurrent_posts_of_one_id_create_one(db: Database) -> None:
    loan, partner, p = _ids()
    posting = disbursement(loan, partner, f"{p}:race")
    start = asyncio.Event()
    waiting: list[int] = []

    async def attempt() -> bool:
        async with db.worker_session() as session:
            waiting.append(1)
            await start.wait()
            created = await ledger.post(session, posting)
            await asyncio.sleep(0.01)  # hold the transaction open while the others wait on it
            return created

    tasks = [asyncio.create_task(attempt()) for _ in range(10)]
    await eventually_async(lambda: len(waiting) == 10, what="all ten sessions at the start line", every=0.01)
    start.set()
    outcomes = await asyncio.gather(*tasks)
    assert sorted(outcomes) == [False] * 9 + [True]
    async with db.worker_session() as session:
        entries = (
            await session.execute(
                text(
                    "SELECT count(*) FROM caas_ledger_entries e JOIN caas_ledger_postings p "
                    "ON p.seq = e.posting_seq WHERE p.posting_id = :id"
                ),
                {"id": posting.posting_id},
            )
        ).scalar_one()
        receivable = await ledger.balance(session, L.loan_receivable(loan), "NGN")
    assert entries == 3 and receivable.posted == 110_000


# --- what the database refuses, whoever writes ----------------------------------------------


async def _raw_posting(session, posting_id: str, legs: list[tuple[str, str, int]]) -> None:
    seq = (
        await session.execute(
            text(
                "INSERT INTO caas_ledger_postings (posting_id, status, description, legs, posted_at) "
                "VALUES (:id, 'posted', 'raw', :legs, now()) RETURNING seq"
            ),
            {"id": posting_id, "legs": max(len(legs), 2)},
        )
    ).scalar_one()
    for i, (account, side, amount) in enumerate(legs):
        await session.execute(
            text(
                "INSERT INTO caas_ledger_accounts (code, currency, kind, normal_side) "
                "VALUES (:a, 'NGN', 'suspense', 'credit') ON CONFLICT DO NOTHING"
            ),
            {"a": account},
        )
        await session.execute(
            text(
                "INSERT INTO caas_ledger_entries (posting_seq, leg, legs, account, currency, side, amount) "
                "VALUES (:seq, :leg, :legs, :a, 'NGN', :side, :amount)"
            ),
            {"seq": seq, "leg": i, "legs": max(len(legs), 2), "a": account, "side": side, "amount": amount},
        )


async def test_unbalanced_raw_insert_fails_at_commit(db: Database) -> None:
    p = uuid.uuid4().hex
    inserted = False
    with pytest.raises(DBAPIError, match="does not balance"):
        async with db.worker_session() as session:
            await _raw_posting(session, p, [(L.SUSPENSE, "debit", 100), (L.FEE_INCOME, "credit", 90)])
            inserted = True  # every statement succeeded: the check waits for COMMIT
    assert inserted
    with pytest.raises(DBAPIError, match="at least two"):
        async with db.worker_session() as session:
            await _raw_posting(session, f"{p}:none", [])
    with pytest.raises(DBAPIError, match="has 1 entries"):
        async with db.worker_session() as session:
            await _raw_posting(session, f"{p}:one", [(L.SUSPENSE, "debit", 0 + 5)])
    async with db.worker_session() as session:
        assert await ledger.get_posting(session, p) is None
        # a balanced raw posting goes through
        await _raw_posting(session, f"{p}:ok", [(L.SUSPENSE, "debit", 100), (L.FEE_INCOME, "credit", 100)])
    async with db.worker_session() as session:
        assert (await ledger.get_posting(session, f"{p}:ok")).status == "posted"  # type: ignore[union-attr]


async def test_no_entry_can_join_a_posting_later(db: Database) -> None:
    loan, _partner, p = _ids()
    async with db.worker_session() as session:
        await ledger.post(session, repayment(loan, f"{p}:r", 10))
        seq = (
            await session.execute(
                text("SELECT seq FROM caas_ledger_postings WHERE posting_id = :id"), {"id": f"{p}:r"}
            )
        ).scalar_one()
    attempts = [
        (2, 2, "leg_in_posting"),  # a third slot the posting never declared
        (1, 2, "pk_caas_ledger_entries"),  # a slot already filled
        (2, 3, "fk_caas_ledger_entries_posting_seq"),  # lying about the posting's size
    ]
    for leg, legs, reason in attempts:
        with pytest.raises(DBAPIError, match=reason):
            async with db.worker_session() as session:
                await session.execute(
                    text(
                        "INSERT INTO caas_ledger_entries (posting_seq, leg, legs, account, currency, side, amount) "
                        "VALUES (:seq, :leg, :legs, :a, 'NGN', 'debit', 5)"
                    ),
                    {"seq": seq, "leg": leg, "legs": legs, "a": L.loan_receivable(loan)},
                )


async def test_post_many_writes_a_batch_and_reports_replays(db: Database) -> None:
    loan, partner, p = _ids()
    first = repayment(loan, f"{p}:0", 1)
    async with db.worker_session() as session:
        assert await ledger.post(session, first) is True
    batch = [
        first,
        *(repayment(loan, f"{p}:{n}", n) for n in range(1, 50)),
        disbursement(loan, partner, f"{p}:d"),
    ]
    async with db.worker_session() as session:
        outcome = await ledger.post_many(session, batch)
        assert await ledger.post_many(session, []) == []
        with pytest.raises(ValueError, match="twice"):
            await ledger.post_many(session, [first, first])
    assert outcome == [False] + [True] * 50
    async with db.worker_session() as session:
        receivable = await ledger.balance(session, L.loan_receivable(loan), "NGN")
        with pytest.raises(LedgerConflict):
            await ledger.post_many(session, [repayment(loan, f"{p}:1", 2)])
    assert receivable.posted == 110_000 - 1 - sum(range(1, 50))


async def test_entries_and_postings_cannot_be_rewritten(db: Database) -> None:
    loan, _partner, p = _ids()
    async with db.worker_session() as session:
        await ledger.post(session, repayment(loan, f"{p}:r", 10))
        await ledger.hold(session, repayment(loan, f"{p}:h", 10))
    forbidden = [
        ("UPDATE caas_ledger_entries SET amount = 11 WHERE account = :loan", "permission denied|append-only"),
        ("DELETE FROM caas_ledger_entries WHERE account = :loan", "permission denied|append-only"),
        (
            "UPDATE caas_ledger_postings SET description = 'edited' WHERE posting_id = :r",
            "permission denied",
        ),
        (
            "UPDATE caas_ledger_postings SET status = 'pending', posted_at = NULL WHERE posting_id = :r",
            "only pending",
        ),
        ("DELETE FROM caas_ledger_postings WHERE posting_id = :h", "permission denied"),
        ("UPDATE caas_ledger_balances SET posted_debits = 0 WHERE account = :loan", "permission denied"),
        (
            "INSERT INTO caas_ledger_balances (account, currency, slot, posted_debits) VALUES (:loan, 'NGN', 0, 5)",
            "permission denied",
        ),
    ]
    for statement, reason in forbidden:
        with pytest.raises(DBAPIError, match=reason):
            async with db.worker_session() as session:
                await session.execute(
                    text(statement), {"loan": L.loan_receivable(loan), "r": f"{p}:r", "h": f"{p}:h"}
                )


def _owner_execute(url: str, statement: str, **params: object) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


async def test_even_the_table_owner_cannot_edit_history(db: Database, database_url: str) -> None:
    import psycopg2

    loan, _partner, p = _ids()
    async with db.worker_session() as session:
        await ledger.post(session, repayment(loan, f"{p}:r", 10))
    with pytest.raises(psycopg2.Error, match="append-only"):
        _owner_execute(
            database_url,
            "UPDATE caas_ledger_entries SET amount = 1 WHERE account = %(a)s",
            a=L.loan_receivable(loan),
        )
    with pytest.raises(psycopg2.Error, match="only pending"):
        _owner_execute(
            database_url,
            "UPDATE caas_ledger_postings SET description = 'x' WHERE posting_id = %(p)s",
            p=f"{p}:r",
        )
    with pytest.raises(psycopg2.Error, match="refused"):
        _owner_execute(database_url, "DELETE FROM caas_ledger_postings WHERE posting_id = %(p)s", p=f"{p}:r")
    with pytest.raises(psycopg2.Error, match="refused"):
        _owner_execute(database_url, "TRUNCATE caas_ledger_entries CASCADE")


async def test_partner_sessions_see_only_their_own_accounts(db: Database) -> None:
    loan, partner, p = _ids()
    other = str(uuid.uuid4())
    async with db.worker_session() as session:
        await ledger.post(session, disbursement(loan, partner, f"{p}:d"))
        await ledger.post(session, disbursement(f"0x{uuid.uuid4().hex * 2}", other, f"{p}:d2"))
    async with db.partner_session(partner) as session:
        codes = set(
            (
                await session.execute(
                    text("SELECT code FROM caas_ledger_accounts WHERE partner_id IS NOT NULL")
                )
            ).scalars()
        )
        with pytest.raises(DBAPIError, match="permission denied"):
            await session.execute(text("SELECT count(*) FROM caas_ledger_entries"))
    assert codes == {L.partner_funding(partner), L.loan_receivable(loan), L.loan_unearned_income(loan)}


# --- a random run ---------------------------------------------------------------------------


async def test_random_run_keeps_the_books_balanced(db: Database) -> None:
    rng = random.Random(20261128)
    _, partner, p = _ids()
    loans = [f"0x{uuid.uuid4().hex * 2}" for _ in range(8)]
    model: dict[tuple[str, str], int] = defaultdict(int)  # (account, currency) -> posted debits - credits
    held: list[Posting] = []
    posted: list[Posting] = []

    shared = [
        (a, c)
        for a in (L.FEE_INCOME, L.SUSPENSE, L.rail_clearing("paystack"), L.rail_clearing("sme"))
        for c in ("NGN", "USD")
    ]
    async with db.worker_session() as session:
        # other tests post to the platform accounts too: compare what this run added
        for account, currency in shared:
            before = await ledger.balance(session, account, currency)
            model[(account, currency)] = before.posted_debits - before.posted_credits

    def apply(posting: Posting, sign: int = 1) -> None:
        for leg in posting.legs:
            model[(leg.account, leg.currency)] += sign * (
                leg.amount if leg.side is L.Side.DEBIT else -leg.amount
            )

    for n in range(300):
        loan = rng.choice(loans)
        currency = rng.choice(["NGN", "NGN", "USD"])
        amount = rng.randrange(1, 1_000_000)
        action = rng.random()
        async with db.worker_session() as session:
            if action < 0.35:
                posting = Posting(
                    f"{p}:{n}",
                    (
                        debit(L.rail_clearing(rng.choice(["paystack", "sme"])), amount, currency),
                        credit(L.loan_receivable(loan), amount - amount // 3, currency),
                        credit(L.FEE_INCOME, amount // 3, currency),
                    )
                    if amount >= 3
                    else (debit(L.SUSPENSE, amount, currency), credit(L.FEE_INCOME, amount, currency)),
                    "repayment",
                )
                if await ledger.post(session, posting):
                    apply(posting)
                    posted.append(posting)
            elif action < 0.6:
                posting = disbursement(loan, partner, f"{p}:{n}", amount, amount // 10 + 1)
                await ledger.hold(session, posting)
                held.append(posting)
            elif action < 0.75 and held:
                posting = held.pop(rng.randrange(len(held)))
                if rng.random() < 0.6:
                    await ledger.post_pending(session, posting.posting_id)
                    apply(posting)
                    posted.append(posting)
                else:
                    await ledger.void_pending(session, posting.posting_id)
            elif action < 0.85 and posted:
                posting = posted.pop(rng.randrange(len(posted)))
                if await ledger.reverse(
                    session, posting.posting_id, reversal_id=f"{p}:{n}:rev", description="r"
                ):
                    apply(posting, -1)
            else:  # a retry of something already done changes nothing
                if posted:
                    assert await ledger.post(session, rng.choice(posted)) is False

    async with db.worker_session() as session:
        for (account, currency), net in model.items():
            got = await ledger.balance(session, account, currency)
            assert got.posted_debits - got.posted_credits == net, account
        pending = 0
        for loan in loans:
            for currency in ("NGN", "USD"):
                pending += (await ledger.balance(session, L.loan_receivable(loan), currency)).pending_debits
        lines = await ledger.trial_balance(session)
        drift = await ledger.balance_drift(session)
    assert pending == sum(posting.legs[0].amount for posting in held)  # the receivable leg
    assert lines and all(line.balanced for line in lines), lines
    assert drift == []
