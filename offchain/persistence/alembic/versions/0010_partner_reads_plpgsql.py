"""`caas_partner_loan` in PL/pgSQL, so PostgreSQL plans its queries once per connection.

A LANGUAGE sql function of more than one statement is never inlined, and before PostgreSQL 18
its statements are parsed and planned again on every call (row-level security policies
included). On the partner API's hottest read that planning was most of the database's work:
pgbench, one seeded loan with four events, 4 clients on this 2-core machine: 10,700 calls/s as
SQL, 29,100 as PL/pgSQL, whose statements are prepared on first use and kept by the session.
The cached plans stay correct under row-level security: the policies compare against
`current_setting('caas.partner_id')` when the plan runs, and PostgreSQL replans by itself when
the role or the policies change.

Same name, arguments, result columns, grants (CREATE OR REPLACE keeps them) and behaviour:
the partner scope is set transaction-locally and the read runs as the caller (SECURITY INVOKER).

Revision ID: 0010_partner_reads_plpgsql
Revises: 0009_partner_reads
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_partner_reads_plpgsql"
down_revision: str | Sequence[str] | None = "0009_partner_reads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = """
CREATE OR REPLACE FUNCTION caas_partner_loan(partner uuid, loan uuid)
RETURNS TABLE (
    id uuid,
    chain_loan_id varchar,
    chain_state smallint,
    currency integer,
    principal numeric,
    total_due numeric,
    outstanding numeric,
    repaid numeric,
    late_fees_assessed numeric,
    installment_count integer,
    installment_interval bigint,
    grace_period bigint,
    disbursed_at timestamptz,
    event_chain varchar,
    event_chain_mismatch boolean,
    transactions jsonb
)
"""

# Every column is qualified: in PL/pgSQL the result columns above are also variables.
_READ = """
    SELECT l.id, l.chain_loan_id, l.chain_state, l.currency, l.principal, l.total_due,
           l.outstanding, l.repaid, l.late_fees_assessed, l.installment_count,
           l.installment_interval, l.grace_period, l.disbursed_at, l.event_chain,
           l.event_chain_mismatch,
           COALESCE((
               SELECT jsonb_agg(
                          jsonb_build_object(
                              'event', e.event, 'block_number', e.block_number,
                              'tx_hash', e.tx_hash, 'log_index', e.log_index, 'args', e.args)
                          ORDER BY e.block_number, e.log_index)
                 FROM caas_chain_events e
                WHERE e.loan_id = l.chain_loan_id
           ), '[]'::jsonb)
      FROM caas_loans l
     WHERE l.id = caas_partner_loan.loan
"""


def upgrade() -> None:
    op.execute(
        _SIGNATURE
        + "LANGUAGE plpgsql VOLATILE SECURITY INVOKER AS $$\nBEGIN\n"
        + "    PERFORM set_config('caas.partner_id', partner::text, true);\n"
        + "    RETURN QUERY"
        + _READ
        + ";\nEND\n$$"
    )


def downgrade() -> None:
    op.execute(
        _SIGNATURE
        + "LANGUAGE sql VOLATILE SECURITY INVOKER AS $$\n"
        + "    SELECT set_config('caas.partner_id', partner::text, true);"
        + _READ.replace("caas_partner_loan.loan", "loan")
        + "$$"
    )
