"""The indexer's SQL: events, kept block headers, the checkpoint."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from offchain.chain.indexer.types import Checkpoint

# Rows already stored in a batch's range: none in normal operation (everything above the
# checkpoint was rolled back or never written); some after an operator moved the checkpoint back
# to re-index. Those are skipped: not published again, not folded into the projections twice.
_EXISTING_EVENTS = text(
    "SELECT block_hash, tx_hash, log_index FROM caas_chain_events "
    "WHERE chain_id = :chain_id AND block_number BETWEEN :first AND :last"
)
_INSERT_EVENTS = text(
    "WITH inserted AS (INSERT INTO caas_chain_events (chain_id, block_number, block_hash, tx_hash, "
    "tx_index, log_index, address, contract, event, loan_id, args, topics, data, block_timestamp) "
    "SELECT CAST(:chain_id AS bigint), t.block_number, t.block_hash, t.tx_hash, t.tx_index, t.log_index, "
    "t.address, t.contract, t.event, t.loan_id, CAST(t.args AS jsonb), string_to_array(t.topics, ','), "
    "t.data, t.block_timestamp "
    "FROM unnest(CAST(:block_number AS bigint[]), CAST(:block_hash AS text[]), CAST(:tx_hash AS text[]), "
    "CAST(:tx_index AS integer[]), CAST(:log_index AS integer[]), CAST(:address AS text[]), "
    "CAST(:contract AS text[]), CAST(:event AS text[]), CAST(:loan_id AS text[]), CAST(:args AS text[]), "
    "CAST(:topics AS text[]), CAST(:data AS text[]), CAST(:block_timestamp AS bigint[])) "
    "AS t(block_number, block_hash, tx_hash, tx_index, log_index, address, contract, event, loan_id, "
    "args, topics, data, block_timestamp) "
    "ON CONFLICT (chain_id, block_hash, tx_hash, log_index) DO NOTHING RETURNING 1) "
    "SELECT count(*) FROM inserted"
)
_INSERT_BLOCKS = text(
    'INSERT INTO caas_indexed_blocks (chain_id, number, hash, parent_hash, "timestamp") '
    "SELECT CAST(:chain_id AS bigint), t.number, t.hash, t.parent_hash, t.ts "
    "FROM unnest(CAST(:number AS bigint[]), CAST(:hash AS text[]), CAST(:parent_hash AS text[]), "
    "CAST(:ts AS bigint[])) AS t(number, hash, parent_hash, ts) "
    "ON CONFLICT (chain_id, number) DO UPDATE SET hash = EXCLUDED.hash, "
    'parent_hash = EXCLUDED.parent_hash, "timestamp" = EXCLUDED."timestamp", indexed_at = now()'
)
_UNCHECKED_LOANS = text(
    "SELECT chain_loan_id FROM caas_loans WHERE event_count > 0 AND "
    "(event_chain_checked_block IS NULL OR event_chain_checked_block < last_block_number) "
    "ORDER BY last_block_number LIMIT :limit"
)
_PRUNE_BLOCKS = text("DELETE FROM caas_indexed_blocks WHERE chain_id = :chain_id AND number < :keep_from")
_SAVE_CHECKPOINT = text(
    "INSERT INTO caas_indexer_checkpoints (name, chain_id, block_number, block_hash) "
    "VALUES (:name, :chain_id, :number, :hash) ON CONFLICT (name, chain_id) DO UPDATE SET "
    "block_number = EXCLUDED.block_number, block_hash = EXCLUDED.block_hash, updated_at = now()"
)
_LOAD_CHECKPOINT = text(
    "SELECT block_number, block_hash FROM caas_indexer_checkpoints "
    "WHERE name = :name AND chain_id = :chain_id"
)


async def load_checkpoint(session: AsyncSession, *, name: str, chain_id: int) -> Checkpoint | None:
    row = (await session.execute(_LOAD_CHECKPOINT, {"name": name, "chain_id": chain_id})).first()
    return None if row is None else Checkpoint(int(row.block_number), str(row.block_hash))
