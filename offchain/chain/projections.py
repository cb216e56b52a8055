"""`caas_loans` as a projection of `caas_chain_events`: load, save and rebuild loan mirrors.

The fold itself is pure (offchain.domain.loan_projection); this module moves mirrors between it
and PostgreSQL in set-based statements (one round trip per batch, whatever the batch size).

Only the chain-derived columns are written: `id`, `partner_id` and `created_at` belong to the
backend, which may create a loan's row (and link its partner) before the chain has seen it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.decoding import LOAN_BOOK
from offchain.domain.event_chain import GENESIS
from offchain.domain.loan_projection import TERMS, LoanMirror, StoredEvent, replay

# persisted column -> PostgreSQL array element type used to ship it in bulk
_COLUMNS: dict[str, str] = {
    "chain_loan_id": "text",
    "borrower_ref": "text",
    "partner_ref": "text",
    "currency": "integer",
    "principal": "numeric",
    "total_due": "numeric",
    "installment_count": "integer",
    "installment_interval": "bigint",
    "grace_period": "bigint",
    "max_late_fees": "numeric",
    "payout_ref": "text",
    "terms_hash": "text",
    "chain_state": "smallint",
    "ever_defaulted": "boolean",
    "scheduled_repaid": "numeric",
    "late_fees_assessed": "numeric",
    "late_fees_paid": "numeric",
    "repaid": "numeric",
    "outstanding": "numeric",
    "created_on_chain_at": "timestamptz",
    "approved_at": "timestamptz",
    "disbursed_at": "timestamptz",
    "closed_at": "timestamptz",
    "event_chain": "text",
    "event_count": "integer",
    "last_block_number": "bigint",
    "last_log_index": "integer",
    "event_chain_mismatch": "boolean",
    "event_chain_checked_block": "bigint",
}
_TIMESTAMPS = frozenset(name for name, kind in _COLUMNS.items() if kind == "timestamptz")
# derived by LoanMirror, or bookkeeping of the event-chain check: not fields to set on a mirror
_NOT_MIRROR_FIELDS = frozenset({"repaid", "outstanding", "event_chain_mismatch", "event_chain_checked_block"})
# the mirror's fields, in the order `caas_loans` shows them to a reader
MIRROR_COLUMNS = tuple(name for name in _COLUMNS if name not in _NOT_MIRROR_FIELDS)


# The statements below splice only the constant column names of _COLUMNS, never input.
def _upsert_sql() -> str:
    names = list(_COLUMNS)
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _COLUMNS.items())
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names if name != "chain_loan_id")
    return (
        f"INSERT INTO caas_loans ({', '.join(names)}) "  # noqa: S608
        f"SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (chain_loan_id) DO UPDATE SET {updates}, updated_at = now()"
    )


_UPSERT = text(_upsert_sql())
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM caas_loans WHERE chain_loan_id = ANY(CAST(:ids AS text[]))"  # noqa: S608
# the indexer is the only writer of these columns, but a backend linking the partner must not
# interleave with a batch that is about to rewrite the row
_SELECT_FOR_UPDATE = text(_SELECT + " FOR UPDATE")
_SELECT_SHARED = text(_SELECT)


def _to_datetime(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _to_unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


@dataclass
class TrackedLoan:
    """A mirror plus the verdict of its last comparison with LoanBook.event_chain."""

    mirror: LoanMirror
    mismatch: bool = False
    checked_block: int | None = None
    persisted: bool = True  # False: no caas_loans row yet

    def row(self) -> dict[str, Any]:
        values = self.mirror.columns()
        # NULL until the chain has said anything about the loan, as the backend creates it
        values["event_chain"] = "0x" + values["event_chain"].hex() if self.mirror.event_count else None
        for name in _TIMESTAMPS:
            values[name] = _to_datetime(values[name])
        values["event_chain_mismatch"] = self.mismatch
        values["event_chain_checked_block"] = self.checked_block
        return values


def _from_row(row: Any) -> TrackedLoan:
    # a RowMapping (column name -> value) of _COLUMNS
    values = {name: row[name] for name in MIRROR_COLUMNS}
    for name in _TIMESTAMPS:
        values[name] = _to_unix(values[name])
    for name in (
        "principal",
        "total_due",
        "max_late_fees",
        "scheduled_repaid",
        "late_fees_assessed",
        "late_fees_paid",
    ):
        if values[name] is not None:
            values[name] = int(values[name])  # NUMERIC arrives as Decimal
    chain = values["event_chain"]
    values["event_chain"] = bytes.fromhex(chain[2:]) if chain else GENESIS
    return TrackedLoan(
        mirror=LoanMirror(**values),
        mismatch=bool(row["event_chain_mismatch"]),
        checked_block=row["event_chain_checked_block"],
    )


async def load_loans(
    session: AsyncSession, loan_ids: Iterable[str], *, lock: bool = True
) -> dict[str, TrackedLoan]:
    """Current mirrors of these loans (locked for the rest of the transaction unless `lock` is
    False); loans without a row come back empty, `persisted=False`."""
    ids = sorted(set(loan_ids))
    if not ids:
        return {}
    statement = _SELECT_FOR_UPDATE if lock else _SELECT_SHARED
    rows = (await session.execute(statement, {"ids": ids})).mappings().all()
    loans = {str(row["chain_loan_id"]): _from_row(row) for row in rows}
    for loan_id in ids:
        loans.setdefault(loan_id, TrackedLoan(LoanMirror(chain_loan_id=loan_id), persisted=False))
    return loans


async def save_loans(session: AsyncSession, loans: Iterable[TrackedLoan]) -> None:
    rows = [loan.row() for loan in loans]
    if not rows:
        return
    await session.execute(_UPSERT, {name: [row[name] for row in rows] for name in _COLUMNS})


async def stored_events(
    session: AsyncSession, chain_id: int, loan_ids: Sequence[str]
) -> dict[str, list[StoredEvent]]:
    """Every stored LoanBook event of these loans, in emission order."""
    result = await session.execute(
        text(
            "SELECT loan_id, event, args, topics, data, block_number, log_index, block_timestamp "
            "FROM caas_chain_events WHERE chain_id = :chain_id AND contract = :contract "
            "AND loan_id = ANY(CAST(:ids AS text[])) ORDER BY loan_id, block_number, log_index"
        ),
        {"chain_id": chain_id, "contract": LOAN_BOOK, "ids": list(loan_ids)},
    )
    events: dict[str, list[StoredEvent]] = {loan_id: [] for loan_id in loan_ids}
    for row in result.all():
        events[row.loan_id].append(
            StoredEvent(
                event=row.event,
                args=row.args,
                topics=[bytes.fromhex(t[2:]) for t in row.topics],
                data=bytes.fromhex(row.data[2:]),
                block_number=row.block_number,
                log_index=row.log_index,
                block_timestamp=row.block_timestamp,
            )
        )
    return events


async def rebuild_loans(
    session: AsyncSession, chain_id: int, loan_ids: Iterable[str]
) -> dict[str, TrackedLoan]:
    """These loans replayed from their stored events alone (not saved: the caller checks the
    event chains first). A loan left without events (a reorg took its LoanCreated) keeps the
    terms its row had, as the backend wrote them when it originated the loan, with everything
    the chain said reset; `event_count == 0` tells the caller."""
    ids = sorted(set(loan_ids))
    if not ids:
        return {}
    current = await load_loans(session, ids)
    events = await stored_events(session, chain_id, ids)
    rebuilt: dict[str, TrackedLoan] = {}
    for loan_id in ids:
        if events[loan_id]:
            rebuilt[loan_id] = TrackedLoan(replay(loan_id, events[loan_id]))
        else:
            terms = {name: getattr(current[loan_id].mirror, name) for name in TERMS}
            rebuilt[loan_id] = TrackedLoan(LoanMirror(chain_loan_id=loan_id, **terms))
    return rebuilt


async def drop_unlinked(session: AsyncSession, loan_ids: Sequence[str]) -> None:
    """Delete the rows of loans only the chain knew (no partner linked, nothing referring to
    them): used when a reorg took every event of a loan away. Rows the backend owns stay,
    reset to "not on chain" by rebuild_loans."""
    for loan_id in loan_ids:
        try:
            async with session.begin_nested():  # a row other tables refer to must stay
                await session.execute(
                    text("DELETE FROM caas_loans WHERE chain_loan_id = :id AND partner_id IS NULL"),
                    {"id": loan_id},
                )
        except IntegrityError:
            continue
