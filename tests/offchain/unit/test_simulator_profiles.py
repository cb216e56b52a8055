"""The simulated SME borrowers: id conventions, determinism, and statements that are really healthy."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from offchain.domain.underwriting.bank_statement import analyze, parse_transactions
from offchain.rails.simulator import profiles

TODAY = date(2026, 3, 15)


def test_prefixes_choose_the_kind() -> None:
    assert [
        profiles.kind_of(i)
        for i in ("kyc-pending-1", "kyc-rejected-1", "thin-file-1", "sanctioned-1", "acme", "x-kyc-pending-1")
    ] == ["pending", "rejected", "thin_file", "sanctioned", "verified", "verified"]
    assert profiles.kyc_record("kyc-pending-1", today=TODAY)["kycStatus"] == "pending"
    assert profiles.kyc_record("kyc-rejected-1", today=TODAY)["kycStatus"] == "rejected"
    thin = profiles.kyc_record("thin-file-1", today=TODAY)
    assert thin["kycStatus"] == "verified" and thin["bankStatementAnalysis"] is None
    assert profiles.bank_statement("thin-file-1", end=TODAY)["transactions"] == []
    now = datetime(2026, 3, 15, tzinfo=UTC)
    assert profiles.aml_screen("sanctioned-1", screened_at=now)["status"] == "hit"
    assert profiles.aml_screen("acme", screened_at=now)["status"] == "clear"


def test_statement_covers_the_twelve_months_before_the_current_one() -> None:
    statement = profiles.bank_statement("acme", end=TODAY)
    assert (statement["periodStart"], statement["periodEnd"]) == ("2025-03-01", "2026-02-28")
    assert profiles.bank_statement("acme", end=date(2026, 3, 31)) == statement  # stable within a month


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: profiles.kind_of(s) != "thin_file"))
def test_every_statement_is_deterministic_and_healthy(user_id: str) -> None:
    statement = profiles.bank_statement(user_id, end=TODAY)
    assert profiles.bank_statement(user_id, end=TODAY) == statement
    analysis = analyze(parse_transactions(statement["transactions"]))
    assert analysis.months == 12
    assert analysis.nsf_count == 0 and analysis.overdraft_days == 0 and analysis.debt_streams == ()
    assert analysis.net_monthly_cash_flow > 0
    assert min(analysis.monthly_inflows) > 0
    assert statement["closingBalance"] == statement["openingBalance"] + sum(
        t["amount"] for t in statement["transactions"]
    )
