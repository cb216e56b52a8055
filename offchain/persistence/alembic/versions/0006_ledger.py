"""Double-entry ledger: accounts, postings, entries, slotted balances, reconciliation runs.

Revision ID: 0006_ledger
Revises: 0005_credit_api
Create Date: 2026-11-28

The invariants live in the database, not only in the code that writes it:
- a posting declares its number of legs (two or more); each entry carries it, fills one of the
  slots 0..legs-1 and references the posting by (seq, legs); a deferred constraint trigger checks
  at COMMIT that every slot is filled and the posting balances per currency, so entries are
  checked with their posting and none can be added to it afterwards;
- entries are append-only; a posting may only go pending -> posted | voided, nothing else;
- `caas_ledger_balances` is maintained by SECURITY DEFINER triggers from the entries and the
  postings' status, in the same transaction; the worker role may read it, never write it.
Balances are spread over 16 slots per account (chosen by the writing backend) so concurrent
transactions touching the same hot account do not queue on one row lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from offchain.persistence import security

revision: str = "0006_ledger"
down_revision: str | Sequence[str] | None = "0005_credit_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
NOW = sa.text("now()")
ZERO = sa.text("0")
SLOTS = 16
KINDS = (
    "loan_receivable",
    "loan_unearned_income",
    "borrower_credit",
    "partner_funding",
    "rail_clearing",
    "suspense",
    "fee_income",
    "interest_income",
    "credit_losses",
)
WORKER = security.WORKER_ROLE
APP = security.APP_ROLE

CHECK_POSTING = """
CREATE FUNCTION caas_ledger_check_posting() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    filled bigint := 0;
    off record;
    line record;
BEGIN
    FOR line IN
        SELECT currency, count(*) AS n,
               sum(CASE side WHEN 'debit' THEN amount ELSE -amount END) AS net
        FROM caas_ledger_entries WHERE posting_seq = NEW.seq GROUP BY currency
    LOOP
        filled := filled + line.n;
        IF line.net <> 0 AND off IS NULL THEN
            off := line;
        END IF;
    END LOOP;
    IF filled <> NEW.legs THEN
        RAISE EXCEPTION 'ledger posting % declares % legs but has % entries (at least two are needed)',
            NEW.posting_id, NEW.legs, filled USING ERRCODE = 'check_violation';
    END IF;
    IF off IS NOT NULL THEN
        RAISE EXCEPTION 'ledger posting % does not balance in %: debits - credits = %',
            NEW.posting_id, off.currency, off.net USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""

GUARD_POSTINGS = """
CREATE FUNCTION caas_ledger_postings_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'caas_ledger_postings: % refused; a posting is corrected by a reversal',
            TG_OP;
    END IF;
    IF OLD.status <> 'pending' OR NEW.status NOT IN ('posted', 'voided')
       OR (NEW.seq, NEW.posting_id, NEW.description, NEW.legs, NEW.metadata, NEW.reverses, NEW.created_at)
          IS DISTINCT FROM
          (OLD.seq, OLD.posting_id, OLD.description, OLD.legs, OLD.metadata, OLD.reverses, OLD.created_at)
    THEN
        RAISE EXCEPTION
            'caas_ledger_postings: only pending -> posted | voided may change (posting %: % -> %)',
            OLD.posting_id, OLD.status, NEW.status;
    END IF;
    RETURN NEW;
END $$
"""

_UPSERT_TAIL = """
    ON CONFLICT (account, currency, slot) DO UPDATE SET
        posted_debits = b.posted_debits + excluded.posted_debits,
        posted_credits = b.posted_credits + excluded.posted_credits,
        pending_debits = b.pending_debits + excluded.pending_debits,
        pending_credits = b.pending_credits + excluded.pending_credits
"""

# Rows are upserted in (account, currency) order: two transactions on the same slot then lock
# the rows they share in the same order and cannot deadlock within one posting.
BALANCES_ON_ENTRIES = f"""
CREATE FUNCTION caas_ledger_balances_on_entries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO caas_ledger_balances AS b
        (account, currency, slot, posted_debits, posted_credits, pending_debits, pending_credits)
    SELECT e.account, e.currency, pg_backend_pid() % {SLOTS},
           coalesce(sum(e.amount) FILTER (WHERE p.status = 'posted' AND e.side = 'debit'), 0),
           coalesce(sum(e.amount) FILTER (WHERE p.status = 'posted' AND e.side = 'credit'), 0),
           coalesce(sum(e.amount) FILTER (WHERE p.status = 'pending' AND e.side = 'debit'), 0),
           coalesce(sum(e.amount) FILTER (WHERE p.status = 'pending' AND e.side = 'credit'), 0)
    FROM inserted e JOIN caas_ledger_postings p ON p.seq = e.posting_seq
    WHERE p.status IN ('pending', 'posted')
    GROUP BY e.account, e.currency
    ORDER BY e.account, e.currency
    {_UPSERT_TAIL};
    RETURN NULL;
END $$
"""  # noqa: S608 - built from constants

BALANCES_ON_SETTLE = f"""
CREATE FUNCTION caas_ledger_balances_on_settle() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    keep int := CASE WHEN NEW.status = 'posted' THEN 1 ELSE 0 END;
BEGIN
    INSERT INTO caas_ledger_balances AS b
        (account, currency, slot, posted_debits, posted_credits, pending_debits, pending_credits)
    SELECT account, currency, pg_backend_pid() % {SLOTS},
           keep * coalesce(sum(amount) FILTER (WHERE side = 'debit'), 0),
           keep * coalesce(sum(amount) FILTER (WHERE side = 'credit'), 0),
           -coalesce(sum(amount) FILTER (WHERE side = 'debit'), 0),
           -coalesce(sum(amount) FILTER (WHERE side = 'credit'), 0)
    FROM caas_ledger_entries WHERE posting_seq = NEW.seq
    GROUP BY account, currency
    ORDER BY account, currency
    {_UPSERT_TAIL};
    RETURN NULL;
END $$
"""  # noqa: S608 - built from constants

FUNCTIONS = (
    "caas_ledger_check_posting",
    "caas_ledger_postings_guard",
    "caas_ledger_balances_on_entries",
    "caas_ledger_balances_on_settle",
)


def upgrade() -> None:
    op.create_table(
        "caas_ledger_accounts",
        sa.Column("code", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("normal_side", sa.String(6), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        sa.Column("loan_id", sa.String(100), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.CheckConstraint(f"kind IN {KINDS}", name=op.f("ck_caas_ledger_accounts_kind_known")),
        sa.CheckConstraint(
            "normal_side IN ('debit', 'credit')", name=op.f("ck_caas_ledger_accounts_normal_side_known")
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_caas_ledger_accounts_currency_iso")),
        sa.PrimaryKeyConstraint("code", "currency", name=op.f("pk_caas_ledger_accounts")),
    )
    op.create_index(op.f("ix_caas_ledger_accounts_partner_id"), "caas_ledger_accounts", ["partner_id"])
    op.create_index(
        op.f("ix_caas_ledger_accounts_loan_id"),
        "caas_ledger_accounts",
        ["loan_id"],
        postgresql_where=sa.text("loan_id IS NOT NULL"),
    )

    op.create_table(
        "caas_ledger_postings",
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("posting_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("legs", sa.SmallInteger(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("reverses", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("posted_at", TIMESTAMP, nullable=True),
        sa.Column("voided_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'posted', 'voided')", name=op.f("ck_caas_ledger_postings_status_known")
        ),
        sa.CheckConstraint(
            "(status = 'posted') = (posted_at IS NOT NULL)",
            name=op.f("ck_caas_ledger_postings_posted_at_iff_posted"),
        ),
        sa.CheckConstraint(
            "(status = 'voided') = (voided_at IS NOT NULL)",
            name=op.f("ck_caas_ledger_postings_voided_at_iff_voided"),
        ),
        sa.CheckConstraint("legs >= 2", name=op.f("ck_caas_ledger_postings_two_legs_or_more")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_caas_ledger_postings")),
        sa.UniqueConstraint("posting_id", name=op.f("uq_caas_ledger_postings_posting_id")),
        sa.UniqueConstraint("seq", "legs", name=op.f("uq_caas_ledger_postings_seq_legs")),
        sa.ForeignKeyConstraint(
            ["reverses"],
            ["caas_ledger_postings.posting_id"],
            name=op.f("fk_caas_ledger_postings_reverses_caas_ledger_postings"),
        ),
    )
    op.create_index(
        op.f("ix_caas_ledger_postings_reverses"),
        "caas_ledger_postings",
        ["reverses"],
        unique=True,
        postgresql_where=sa.text("reverses IS NOT NULL"),
    )
    op.create_index(
        "ix_caas_ledger_postings_pending",
        "caas_ledger_postings",
        ["seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )

    op.create_table(
        "caas_ledger_entries",
        sa.Column("posting_seq", sa.BigInteger(), nullable=False),
        sa.Column("leg", sa.SmallInteger(), nullable=False),
        sa.Column("legs", sa.SmallInteger(), nullable=False),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("side", sa.String(6), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("side IN ('debit', 'credit')", name=op.f("ck_caas_ledger_entries_side_known")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_caas_ledger_entries_amount_positive")),
        sa.CheckConstraint("leg >= 0 AND leg < legs", name=op.f("ck_caas_ledger_entries_leg_in_posting")),
        sa.PrimaryKeyConstraint("posting_seq", "leg", name=op.f("pk_caas_ledger_entries")),
        sa.ForeignKeyConstraint(
            ["posting_seq", "legs"],
            ["caas_ledger_postings.seq", "caas_ledger_postings.legs"],
            name=op.f("fk_caas_ledger_entries_posting_seq_caas_ledger_postings"),
        ),
        sa.ForeignKeyConstraint(
            ["account", "currency"],
            ["caas_ledger_accounts.code", "caas_ledger_accounts.currency"],
            name=op.f("fk_caas_ledger_entries_account_caas_ledger_accounts"),
        ),
    )
    op.create_index(
        op.f("ix_caas_ledger_entries_account_currency_posting_seq"),
        "caas_ledger_entries",
        ["account", "currency", "posting_seq"],
    )

    op.create_table(
        "caas_ledger_balances",
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("posted_debits", sa.BigInteger(), server_default=ZERO, nullable=False),
        sa.Column("posted_credits", sa.BigInteger(), server_default=ZERO, nullable=False),
        sa.Column("pending_debits", sa.BigInteger(), server_default=ZERO, nullable=False),
        sa.Column("pending_credits", sa.BigInteger(), server_default=ZERO, nullable=False),
        sa.CheckConstraint(f"slot >= 0 AND slot < {SLOTS}", name=op.f("ck_caas_ledger_balances_slot_range")),
        sa.PrimaryKeyConstraint("account", "currency", "slot", name=op.f("pk_caas_ledger_balances")),
        sa.ForeignKeyConstraint(
            ["account", "currency"],
            ["caas_ledger_accounts.code", "caas_ledger_accounts.currency"],
            name=op.f("fk_caas_ledger_balances_account_caas_ledger_accounts"),
        ),
    )

    op.create_table(
        "caas_ledger_recon_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("chain_block", sa.BigInteger(), nullable=True),
        sa.Column("loans_checked", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("mismatch_count", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'consistent', 'mismatches', 'failed')",
            name=op.f("ck_caas_ledger_recon_runs_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_caas_ledger_recon_runs")),
    )
    op.create_index(op.f("ix_caas_ledger_recon_runs_started_at"), "caas_ledger_recon_runs", ["started_at"])

    op.create_table(
        "caas_ledger_mismatches",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("expected", postgresql.JSONB(), nullable=True),
        sa.Column("actual", postgresql.JSONB(), nullable=True),
        sa.Column("detail", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "n", name=op.f("pk_caas_ledger_mismatches")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["caas_ledger_recon_runs.id"],
            name=op.f("fk_caas_ledger_mismatches_run_id_caas_ledger_recon_runs"),
        ),
    )
    op.create_index(op.f("ix_caas_ledger_mismatches_subject"), "caas_ledger_mismatches", ["subject"])

    op.execute(CHECK_POSTING)
    op.execute(GUARD_POSTINGS)
    op.execute(BALANCES_ON_ENTRIES)
    op.execute(BALANCES_ON_SETTLE)
    op.execute(
        "CREATE CONSTRAINT TRIGGER caas_ledger_postings_balanced AFTER INSERT ON caas_ledger_postings "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION caas_ledger_check_posting()"
    )
    op.execute(
        "CREATE TRIGGER caas_ledger_postings_guard BEFORE UPDATE OR DELETE ON caas_ledger_postings "
        "FOR EACH ROW EXECUTE FUNCTION caas_ledger_postings_guard()"
    )
    op.execute(
        "CREATE TRIGGER caas_ledger_postings_no_truncate BEFORE TRUNCATE ON caas_ledger_postings "
        "FOR EACH STATEMENT EXECUTE FUNCTION caas_ledger_postings_guard()"
    )
    for statement in security.append_only("caas_ledger_entries"):
        op.execute(statement)
    op.execute(
        "CREATE TRIGGER caas_ledger_entries_balances AFTER INSERT ON caas_ledger_entries "
        "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT "
        "EXECUTE FUNCTION caas_ledger_balances_on_entries()"
    )
    op.execute(
        "CREATE TRIGGER caas_ledger_postings_settle AFTER UPDATE OF status ON caas_ledger_postings "
        "FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status IN ('posted', 'voided')) "
        "EXECUTE FUNCTION caas_ledger_balances_on_settle()"
    )
    for function in ("caas_ledger_balances_on_entries", "caas_ledger_balances_on_settle"):
        op.execute(f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")

    # Ledger tables are platform data: workers write them, partner sessions see only their own
    # accounts. No role may write balances (the triggers do, as the owner) or edit entries.
    op.execute(f"GRANT SELECT, INSERT ON caas_ledger_accounts TO {WORKER}")
    op.execute(f"GRANT SELECT ON caas_ledger_accounts TO {APP}")
    for statement in security.partner_policies("caas_ledger_accounts", "partner_id", shared_rows=True):
        op.execute(statement)
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE (status, posted_at, voided_at) ON caas_ledger_postings TO {WORKER}"
    )
    op.execute(f"GRANT SELECT, INSERT ON caas_ledger_entries TO {WORKER}")
    op.execute(f"GRANT SELECT ON caas_ledger_balances TO {WORKER}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON caas_ledger_recon_runs TO {WORKER}")
    op.execute(f"GRANT SELECT, INSERT ON caas_ledger_mismatches TO {WORKER}")


def downgrade() -> None:
    for table in (
        "caas_ledger_mismatches",
        "caas_ledger_recon_runs",
        "caas_ledger_balances",
        "caas_ledger_entries",
        "caas_ledger_postings",
        "caas_ledger_accounts",
    ):
        op.drop_table(table)  # its triggers, policies and grants go with it
    op.execute(security.drop_append_only("caas_ledger_entries"))
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
