"""Partner-scoped reads in one statement: `caas_partner_loan(partner, loan)`.

A partner read used to take four round trips (BEGIN, `set_config` of the partner scope, the
query, COMMIT); on the partner API's hottest path those round trips were most of the cost. This
function sets the scope and runs the read inside one statement, so a caller outside a
transaction pays one round trip. The setting is transaction-local (`set_config(.., true)`), and a
statement outside a transaction is its own transaction: the scope ends with the statement.

SECURITY INVOKER (the default, written out): the function runs as the caller (`caas_app`), so
the tables' row-level security policies decide what it sees, exactly as for any other query;
another partner's loan yields no row.

Revision ID: 0009_partner_reads
Revises: 0005_credit_api
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

from offchain.persistence.security import ROLES

revision: str = "0009_partner_reads"
down_revision: str | Sequence[str] | None = "0005_credit_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns the partner API shows of a loan, and its indexed events in chain order as one JSON
# array (what GET /v1/loans/{id} returns). SQL, not plpgsql: no variable/column name clashes,
# and the final SELECT's rows are the result.
PARTNER_LOAN = """
CREATE FUNCTION caas_partner_loan(partner uuid, loan uuid)
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
LANGUAGE sql VOLATILE SECURITY INVOKER AS $$
    SELECT set_config('caas.partner_id', partner::text, true);
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
     WHERE l.id = loan
$$
"""


def upgrade() -> None:
    op.execute(PARTNER_LOAN)
    op.execute("REVOKE ALL ON FUNCTION caas_partner_loan(uuid, uuid) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION caas_partner_loan(uuid, uuid) TO {', '.join(ROLES)}")


def downgrade() -> None:
    op.execute("DROP FUNCTION caas_partner_loan(uuid, uuid)")
