"""Bank-statement analysis and affordability maths, to the kobo."""

from __future__ import annotations

import statistics
from datetime import date
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain.domain.underwriting.bank_statement import (
    StatementError,
    Transaction,
    analyze,
    annuity_installment,
    max_principal,
    parse_transactions,
)


def tx(day: str, amount: int, balance: int | None = None, description: str = "") -> Transaction:
    return Transaction(date.fromisoformat(day), amount, balance, description)


QUARTER = [
    tx("2025-01-05", 100_000, 100_000, "POS sales"),
    tx("2025-01-20", -30_000, 70_000, "rent"),
    tx("2025-02-03", 200_000, 270_000, "transfer from customer"),
    tx("2025-02-10", -50_000, 220_000, "LOAN REPAYMENT ACME 0225"),
    tx("2025-03-10", -50_000, 170_000, "LOAN REPAYMENT ACME 0325"),
    tx("2025-03-15", 50_000, 220_000, "REVERSAL of failed transfer"),
    tx("2025-03-28", 90_000, 310_000, "POS sales"),
]


def test_analyze__monthly_figures_exact() -> None:
    a = analyze(QUARTER)

    assert (a.period_start, a.period_end, a.months) == (date(2025, 1, 5), date(2025, 3, 28), 3)
    # the reversal is money coming back, not income
    assert a.monthly_inflows == (100_000, 200_000, 90_000)
    assert a.total_inflow == 390_000 and a.total_outflow == 130_000
    assert a.average_monthly_inflow == 130_000
    assert a.average_monthly_outflow == 43_334  # 130_000 / 3 rounded up: costs on the prudent side
    assert a.net_monthly_cash_flow == 86_666  # (390_000 - 130_000) // 3
    expected_cv = statistics.pstdev([100_000, 200_000, 90_000]) / 130_000
    assert a.inflow_volatility_bps == round(expected_cv * 10_000) == 3_820


def test_analyze__recurring_loan_repayment_is_existing_debt_service() -> None:
    a = analyze(QUARTER)

    (stream,) = a.debt_streams
    assert stream.key == "loan repayment acme"  # digits stripped: one stream across months
    assert (stream.payments, stream.total, stream.monthly_amount, stream.active) == (2, 100_000, 50_000, True)
    assert a.monthly_debt_service == 50_000
    assert a.operating_cash_flow == 136_666
    assert a.dscr_bps(10_000) == 136_666 * 10_000 // 60_000 == 22_777
    # share: 86_666 * 50 %; DSCR >= 1.25: 136_666 / 1.25 - 50_000 = 59_332 (floored)
    assert a.max_installment(share_bps=5_000, min_dscr_bps=12_500) == 43_333
    assert a.max_installment(share_bps=10_000, min_dscr_bps=12_500) == 59_332


def test_analyze__one_off_or_finished_loan_is_not_existing_debt() -> None:
    one_off = [
        tx("2025-01-01", 500_000),
        tx("2025-01-10", -40_000, description="loan repayment x"),
        tx("2025-03-30", 1),
    ]
    assert analyze(one_off).debt_streams == ()

    finished = [
        tx("2025-01-10", -40_000, description="FAIRMONEY debit"),
        tx("2025-02-10", -40_000, description="FAIRMONEY debit"),
        tx("2025-06-30", 100_000, description="sales"),
    ]
    (stream,) = analyze(finished).debt_streams
    assert not stream.active
    assert analyze(finished).monthly_debt_service == 0


def test_analyze__nsf_overdraft_and_daily_balances() -> None:
    rows = [
        tx("2025-01-01", 10_000, 100, "deposit"),
        tx("2025-01-03", -150, -50, "transfer"),
        tx("2025-01-03", 5, -45, "NSF fee"),  # the day closes on the last balance of that day
        tx("2025-01-04", -20, -65, "RETURNED DD loan repayment"),
        tx("2025-01-06", 200, 135, "deposit"),
    ]
    a = analyze(rows)

    # closing balances 01..06: 100, 100, -45, -65, -65, 135
    assert a.average_daily_balance == (100 + 100 - 45 - 65 - 65 + 135) // 6 == 26
    assert a.minimum_balance == -65
    assert a.overdraft_days == 3
    assert a.nsf_count == 2
    assert a.returned_debt_payments == 1


def test_analyze__without_balances() -> None:
    a = analyze([tx("2025-01-01", 1_000), tx("2025-02-01", -500)])
    assert a.average_daily_balance is None and a.minimum_balance is None and a.overdraft_days == 0


def test_analyze__gap_months_count_as_zero_income() -> None:
    a = analyze([tx("2025-01-15", 300_000), tx("2025-04-15", 300_000)])
    assert a.months == 4 and a.monthly_inflows == (300_000, 0, 0, 300_000)
    assert a.average_monthly_inflow == 150_000


def test_annuity__known_values() -> None:
    assert annuity_installment(1_000_000, 12, 0) == 83_334  # 83_333.33 rounded up
    assert annuity_installment(1_000_000, 12, 1_200) == 88_849  # 1 % a month: 88_848.79
    assert max_principal(88_849, 12, 1_200) >= 1_000_000 > max_principal(88_848, 12, 1_200)
    assert max_principal(0, 12, 2_400) == 0
    assert max_principal(83_334, 12, 0) == 1_000_008


@given(
    installment=st.integers(1, 10**12),
    months=st.integers(1, 60),
    apr_bps=st.integers(0, 20_000),
)
def test_max_principal__is_the_largest_affordable(installment: int, months: int, apr_bps: int) -> None:
    principal = max_principal(installment, months, apr_bps)
    assert annuity_installment(principal, months, apr_bps) <= installment
    assert annuity_installment(principal + 1, months, apr_bps) > installment


@given(principal=st.integers(1, 10**12), months=st.integers(1, 60), apr_bps=st.integers(0, 20_000))
def test_annuity__pays_off_the_principal(principal: int, months: int, apr_bps: int) -> None:
    installment = annuity_installment(principal, months, apr_bps)
    rate = Fraction(apr_bps, 120_000)
    balance = Fraction(principal)
    for _ in range(months):
        balance = balance * (1 + rate) - installment
    assert balance <= 0  # rounding up never leaves a remainder
    # and overpays by less than a kobo per installment (each grown by the interest after it)
    assert balance > -sum((1 + rate) ** k for k in range(months))


def test_parse__json_records() -> None:
    parsed = parse_transactions(
        [
            {"date": "2025-01-02", "amount": 150_000, "balance": 150_000, "description": "sales"},
            {"date": "2025-01-03T10:00:00Z", "amount": "-2500"},
        ]
    )
    assert parsed == [
        Transaction(date(2025, 1, 2), 150_000, 150_000, "sales"),
        Transaction(date(2025, 1, 3), -2_500, None, ""),
    ]


def test_parse__every_bad_field_is_reported() -> None:
    with pytest.raises(StatementError) as caught:
        parse_transactions(
            [
                {"date": "02/01/2025", "amount": 10.5},
                {"amount": True, "balance": "1,000"},
                "not an object",
                {"date": "2025-01-01", "amount": 1, "description": 5},
            ]
        )
    fields = {(e["field"], e["reason"].split(" ")[0]) for e in caught.value.errors}
    assert fields == {
        ("transactions[0].date", "must"),
        ("transactions[0].amount", "must"),
        ("transactions[1].date", "is"),
        ("transactions[1].amount", "must"),
        ("transactions[1].balance", "must"),
        ("transactions[2]", "must"),
        ("transactions[3].description", "must"),
    }
    assert "decimals are not accepted" in next(
        e["reason"] for e in caught.value.errors if e["field"] == "transactions[0].amount"
    )


@pytest.mark.parametrize("records", [[], {}, "x"])
def test_parse__not_a_list_or_empty(records: object) -> None:
    with pytest.raises(StatementError) as caught:
        parse_transactions(records)
    assert caught.value.errors[0]["field"] == "transactions"
