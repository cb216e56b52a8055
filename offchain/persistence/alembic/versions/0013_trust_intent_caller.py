"""Trust boundaries: every transaction intent names the service that asked for it, and a
partner's audit log holds only that partner's entries.

- `caas_tx_intents.caller`: the service identity that recorded the intent (offchain.chain.
  allowlist). Existing rows are attributed by their idempotency key, which names the effect
  (create_loan:, disburse:, repay:, ...); anything else is 'unknown', which the sender never signs.
- `caas_audit_log`: platform-wide entries (partner_id NULL: operators' close-of-business runs,
  reconciliation runs, ...) were visible in every partner's scope; now only operators read them.

Revision ID: 0013_trust_intent_caller
Revises: 0012_clients_fees_notices
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from offchain.persistence import security

revision: str = "0013_trust_intent_caller"
down_revision: str | Sequence[str] | None = "0012_clients_fees_notices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BY_KEY = """
UPDATE caas_tx_intents SET caller = CASE
    WHEN idempotency_key LIKE 'create\\_loan:%' OR idempotency_key LIKE 'approve\\_with\\_signatures:%'
        THEN 'gateway'
    WHEN idempotency_key LIKE 'disburse:%' THEN 'disbursement'
    WHEN idempotency_key LIKE 'repay:%' OR idempotency_key LIKE 'reverse:%' THEN 'repayment'
    WHEN idempotency_key LIKE 'assess\\_late\\_fee:%' OR idempotency_key LIKE 'mark\\_default:%'
        OR idempotency_key LIKE 'propose\\_write\\_off:%' THEN 'collections'
    ELSE 'unknown'
END
"""


def _audit_policy(condition: str) -> list[str]:
    return [
        "DROP POLICY IF EXISTS partner_isolation ON caas_audit_log",
        f"CREATE POLICY partner_isolation ON caas_audit_log TO {security.APP_ROLE} "
        f"USING ({condition}) WITH CHECK ({condition})",
    ]


def upgrade() -> None:
    op.add_column("caas_tx_intents", sa.Column("caller", sa.String(length=32), nullable=True))
    op.execute(_BY_KEY)
    op.alter_column("caas_tx_intents", "caller", nullable=False)
    for statement in _audit_policy("partner_id = caas_current_partner()"):
        op.execute(statement)


def downgrade() -> None:
    for statement in _audit_policy("partner_id IS NULL OR partner_id = caas_current_partner()"):
        op.execute(statement)
    op.drop_column("caas_tx_intents", "caller")
