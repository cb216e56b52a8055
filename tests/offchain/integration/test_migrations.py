"""Migrations run both ways, match the models, and row-level security isolates partners."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg2
import pytest
from sqlalchemy import Column, Integer, MetaData, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from offchain.persistence.migrate import VERSION_TABLE, downgrade, heads, schema_diff, upgrade
from offchain.persistence.models import PARTNER_SCOPED, AuditLogEntry, Base, Loan, Partner
from offchain.persistence.security import APP_ROLE, WORKER_ROLE
from offchain.platform.db import Database

pytestmark = pytest.mark.asyncio


def _fetch(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _caas_tables(url: str) -> set[str]:
    rows = _fetch(url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'caas\\_%%'")
    return {str(row[0]) for row in rows} - {VERSION_TABLE}


def test_migrations_have_one_head() -> None:
    # a migration written beside another one revises the same parent: chain it after the other
    assert len(heads()) == 1, f"alembic has several heads {heads()}: revise the newest instead"


async def test_upgrade_downgrade_upgrade(make_database: Callable[[], str]) -> None:
    url = make_database()

    upgrade(url)
    assert _caas_tables(url) == set(Base.metadata.tables)

    downgrade(url, "base")
    assert _caas_tables(url) == set()
    assert _fetch(url, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'caas\\_%%'") == [(0,)]

    upgrade(url)
    assert _caas_tables(url) == set(Base.metadata.tables)
    assert schema_diff(url) == []


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    diff = schema_diff(database_url)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


async def test_schema_check_notices_a_model_change_without_migration(database_url: str) -> None:
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["caas_loans"].append_column(Column("new_field", Integer))

    diff = schema_diff(database_url, drifted)
    assert [d[0] for d in diff] == ["add_column"]
    assert diff[0][3].name == "new_field"


async def test_every_partner_table_has_forced_rls_and_both_policies(database_url: str) -> None:
    with_partner_column = {
        str(table)
        for (table,) in _fetch(
            database_url,
            "SELECT table_name FROM information_schema.columns "
            "WHERE column_name = 'partner_id' AND table_name LIKE 'caas\\_%%'",
        )
    }
    assert with_partner_column <= set(PARTNER_SCOPED), "a partner-owned table lacks RLS"

    rows = _fetch(
        database_url,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
        "       array_agg(p.polname ORDER BY p.polname) "
        "FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid "
        "WHERE c.relname = ANY(%s) GROUP BY c.relname, c.relrowsecurity, c.relforcerowsecurity",
        list(PARTNER_SCOPED),
    )
    assert {row[0] for row in rows} == set(PARTNER_SCOPED)
    for name, enabled, forced, policies in rows:
        assert enabled and forced, name
        assert policies == ["partner_isolation", "worker_all"], name


async def _seed_two_partners(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    a, b = uuid.uuid4(), uuid.uuid4()
    async with db.worker_session() as session:
        await session.execute(insert(Partner), [{"id": a, "name": "A"}, {"id": b, "name": "B"}])
        await session.execute(
            insert(Loan),
            [
                {"partner_id": a, "chain_loan_id": "0x" + uuid.uuid4().hex * 2},
                {"partner_id": a, "chain_loan_id": "0x" + uuid.uuid4().hex * 2},
                {"partner_id": b, "chain_loan_id": "0x" + uuid.uuid4().hex * 2},
            ],
        )
    return a, b


async def test_partner_a_never_sees_partner_b(db: Database) -> None:
    a, b = await _seed_two_partners(db)
    ours = Loan.partner_id.in_([a, b])

    async with db.partner_session(a) as session:
        loans_a = (await session.execute(select(Loan.partner_id).where(ours))).scalars().all()
        partners_a = (await session.execute(select(Partner.id))).scalars().all()
        # even asking for B's rows by id returns nothing
        b_by_id = (await session.execute(select(Loan).where(Loan.partner_id == b))).all()
    async with db.partner_session(b) as session:
        loans_b = (await session.execute(select(Loan.partner_id).where(ours))).scalars().all()

    assert loans_a == [a, a] and partners_a == [a] and b_by_id == []
    assert loans_b == [b]


async def test_no_partner_scope_sees_nothing(db: Database) -> None:
    a, _ = await _seed_two_partners(db)
    async with db.partner_session(a):
        pass  # leaves caas.partner_id = '' behind on the pooled connection
    async with db.sessionmaker() as session, session.begin():
        leftover = await session.execute(text("SELECT current_setting('caas.partner_id', true)"))
        assert leftover.scalar_one() == ""
        assert (await session.execute(select(func.count()).select_from(Loan))).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(Partner))).scalar_one() == 0
        assert (await session.execute(text("SELECT current_user"))).scalar_one() == APP_ROLE


async def test_partner_cannot_write_rows_of_another_partner(db: Database) -> None:
    a, b = await _seed_two_partners(db)
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.partner_session(a) as session:
            await session.execute(insert(Loan).values(partner_id=b, chain_loan_id="0x" + "ab" * 32))

    async with db.partner_session(a) as session:
        moved = await session.execute(update(Loan).where(Loan.partner_id == b).values(repaid=1))
        assert moved.rowcount == 0  # type: ignore[attr-defined]


async def test_worker_sees_every_partner(db: Database) -> None:
    a, b = await _seed_two_partners(db)
    async with db.worker_session() as session:
        assert (await session.execute(text("SELECT current_user"))).scalar_one() == WORKER_ROLE
        seen = set(
            (await session.execute(select(Loan.partner_id).where(Loan.partner_id.in_([a, b])))).scalars()
        )
    assert seen == {a, b}
    async with db.sessionmaker() as session:  # the worker role ended with its transaction
        assert (await session.execute(text("SELECT current_user"))).scalar_one() == APP_ROLE


async def test_audit_log_is_append_only(db: Database, database_url: str) -> None:
    a, _ = await _seed_two_partners(db)
    async with db.partner_session(a) as session:
        await session.execute(
            insert(AuditLogEntry).values(
                partner_id=a, actor="tests", action="loan.viewed", subject_type="loan", subject_id="1"
            )
        )
    with pytest.raises(DBAPIError, match="permission denied"):
        async with db.partner_session(a) as session:
            await session.execute(update(AuditLogEntry).values(action="tampered"))
    # not even the table owner may rewrite history
    with pytest.raises(psycopg2.Error, match="append-only"):
        _fetch(database_url, "UPDATE caas_audit_log SET action = 'tampered' RETURNING id")
