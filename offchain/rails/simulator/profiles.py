"""The simulated SME platform's borrowers: KYC records, bank statements and AML screens.

Every `sme_user_id` is known (DESIGN §4), and what the platform says about it follows from the id
alone, so tests and demos can pick the borrower they need by its name:

    kyc-pending-*    KYC pending: documents submitted, nothing verified yet
    kyc-rejected-*   KYC rejected: a document failed verification
    thin-file-*      KYC verified, but no bank history (an empty statement, no bureau score)
    sanctioned-*     KYC verified, healthy statement, and a hit on the sanctions screen
    anything else    KYC verified with a healthy 12-month statement

Everything is generated from a random generator seeded with a hash of the id: the same id gives
the same borrower on every call and every machine. The statement covers the twelve calendar
months before `end`'s month (the caller passes today), so it stays the same within a month.

"Healthy" means: regular salary or sales inflows, outflows well below them, a balance that never
goes negative, and no transaction that a statement analysis would read as a bounced payment, a
reversal or an existing loan.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

Kind = Literal["verified", "pending", "rejected", "thin_file", "sanctioned"]

_PREFIXES: tuple[tuple[str, Kind], ...] = (
    ("kyc-pending-", "pending"),
    ("kyc-rejected-", "rejected"),
    ("thin-file-", "thin_file"),
    ("sanctioned-", "sanctioned"),
)
STATEMENT_MONTHS = 12
_KOBO = 100

_TRADES = ("Provisions", "Pharmacy", "Fashion House", "Logistics", "Foods", "Tech Hub", "Agro Ventures")
_NAMES = ("Adaeze", "Bello", "Chukwuemeka", "Danjuma", "Folake", "Ibrahim", "Ngozi", "Olumide", "Tunde")
_SURNAMES = ("Okafor", "Adeyemi", "Nwosu", "Abubakar", "Balogun", "Eze", "Okonkwo", "Ogunleye")
_BANKS = ("Access Bank", "GTBank", "Zenith Bank", "First Bank", "UBA", "Wema Bank")
_SANCTIONS_LISTS = (
    "UN Security Council Consolidated List",
    "OFAC SDN",
    "EU Consolidated Financial Sanctions",
    "Nigeria Sanctions List (NIGSAC)",
)


def kind_of(user_id: str) -> Kind:
    for prefix, kind in _PREFIXES:
        if user_id.startswith(prefix):
            return kind
    return "verified"


def _rng(user_id: str, purpose: str) -> random.Random:
    digest = hashlib.sha256(f"{purpose}:{user_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class _Business:
    name: str
    owner: str
    bank: str
    account_number: str
    salaried: bool
    monthly_income: int  # kobo
    years_in_business: int


def _business(user_id: str) -> _Business:
    rng = _rng(user_id, "business")
    owner = f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}"
    return _Business(
        name=f"{owner.split()[1]} {rng.choice(_TRADES)} Ltd",
        owner=owner,
        bank=rng.choice(_BANKS),
        account_number=f"{rng.randrange(10**9, 10**10)}",
        salaried=rng.random() < 0.3,
        monthly_income=rng.randrange(800_000, 5_000_000, 1_000) * _KOBO,
        years_in_business=rng.randint(1, 12),
    )


def _month_starts(end: date, months: int) -> list[date]:
    first = end.replace(day=1)
    starts = []
    for back in range(months, 0, -1):
        year, month = divmod(first.year * 12 + first.month - 1 - back, 12)
        starts.append(date(year, month + 1, 1))
    return starts


def _days_in(month: date) -> int:
    following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (following - month).days


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    weights = [rng.uniform(0.5, 1.5) for _ in range(parts)]
    scale = sum(weights)
    amounts = [int(total * w / scale) // _KOBO * _KOBO for w in weights]
    amounts[-1] += total - sum(amounts)
    return amounts


def _month_transactions(rng: random.Random, biz: _Business, month: date) -> list[tuple[date, int, str]]:
    days = _days_in(month)
    income = int(biz.monthly_income * rng.uniform(0.9, 1.1)) // _KOBO * _KOBO
    label = month.strftime("%b %Y").upper()
    items: list[tuple[date, int, str]] = []
    if biz.salaried:
        items.append((month.replace(day=min(25, days)), income, f"SALARY {biz.name.upper()} {label}"))
    else:
        count = rng.randint(6, 12)
        for amount in _split(rng, income, count):
            day = month.replace(day=rng.randint(1, days))
            source = rng.choice(
                ("POS SETTLEMENT", "PAYSTACK SETTLEMENT", f"TRF FROM {rng.choice(_SURNAMES).upper()}")
            )
            items.append((day, amount, source))
    # Outflows: 50-70 % of income in all, split over the usual costs of a small business.
    spend = int(income * rng.uniform(0.5, 0.7))
    costs = (
        ("RENT PAYMENT", 0.25, 1),
        ("SUPPLIER PAYMENT", 0.40, rng.randint(2, 4)),
        ("IKEDC ELECTRICITY", 0.05, 1),
        ("MTN AIRTIME", 0.02, rng.randint(1, 3)),
        ("STAFF WAGES" if not biz.salaried else "HOUSEHOLD SHOPPING", 0.18, 1),
        ("POS PURCHASE", 0.10, rng.randint(2, 6)),
    )
    for description, share, count in costs:
        for amount in _split(rng, int(spend * share), count):
            if amount > 0:
                items.append((month.replace(day=rng.randint(1, days)), -amount, description))
    return items


def bank_statement(user_id: str, *, end: date) -> dict[str, Any]:
    """`GET /sme/kyc/{user_id}/bank-statement`: amounts in signed kobo, inflow positive."""
    if kind_of(user_id) == "thin_file":
        return {"userId": user_id, "currency": "NGN", "transactions": []}
    biz = _business(user_id)
    rng = _rng(user_id, "statement")
    starts = _month_starts(end, STATEMENT_MONTHS)
    balance = int(biz.monthly_income * rng.uniform(0.2, 0.5)) // _KOBO * _KOBO
    opening = balance
    transactions: list[dict[str, Any]] = []
    for month in starts:
        # credits before debits on the same day, as banks post them
        items = sorted(_month_transactions(rng, biz, month), key=lambda t: (t[0], t[1] < 0))
        for day, amount, description in items:
            if balance + amount < 0:
                # a healthy account pays what it can afford: smaller, never overdrawn
                amount = -(balance // 2 // _KOBO * _KOBO)
                if amount == 0:
                    continue
            balance += amount
            transactions.append(
                {"date": day.isoformat(), "amount": amount, "balance": balance, "description": description}
            )
    return {
        "userId": user_id,
        "currency": "NGN",
        "accountName": biz.name,
        "bankName": biz.bank,
        "accountNumber": "******" + biz.account_number[-4:],
        "periodStart": starts[0].isoformat(),
        "periodEnd": (starts[-1].replace(day=_days_in(starts[-1]))).isoformat(),
        "openingBalance": opening,
        "closingBalance": balance,
        "transactions": transactions,
    }


def _analysis(statement: dict[str, Any]) -> dict[str, Any] | None:
    transactions = statement["transactions"]
    if not transactions:
        return None
    months = STATEMENT_MONTHS
    inflow = sum(t["amount"] for t in transactions if t["amount"] > 0)
    outflow = -sum(t["amount"] for t in transactions if t["amount"] < 0)
    return {
        "months": months,
        "transactionCount": len(transactions),
        "averageMonthlyInflow": inflow // months,
        "averageMonthlyOutflow": outflow // months,
        "closingBalance": statement["closingBalance"],
        "nsfCount": 0,
        "overdraftDays": 0,
        "currency": "NGN",
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def kyc_record(user_id: str, *, today: date) -> dict[str, Any]:
    """`GET /sme/kyc/{user_id}`: the SME platform's KYC record with the credit extension."""
    kind = kind_of(user_id)
    biz = _business(user_id)
    rng = _rng(user_id, "kyc")
    submitted = datetime.combine(today - timedelta(days=rng.randint(30, 400)), time(9, 30), tzinfo=UTC)
    record: dict[str, Any] = {
        "userId": user_id,
        "businessName": biz.name,
        "kycStatus": "verified",
        "documents": [],
        "verificationDate": None,
        "riskScore": None,
        "creditScore": None,
        "employmentVerification": None,
        "incomeVerification": None,
        "bankStatementAnalysis": None,
    }
    document_types = ("bvn", "cac_certificate", "director_id", "utility_bill")
    if kind == "pending":
        record["kycStatus"] = "pending"
        record["documents"] = [
            {"type": t, "status": "submitted", "submittedAt": _iso(submitted)} for t in document_types
        ]
        return record
    if kind == "rejected":
        record["kycStatus"] = "rejected"
        record["documents"] = [
            {"type": t, "status": "verified", "submittedAt": _iso(submitted)} for t in document_types[1:]
        ]
        record["documents"].insert(
            0,
            {
                "type": "bvn",
                "status": "rejected",
                "submittedAt": _iso(submitted),
                "reason": "BVN holder's name does not match the registered director",
            },
        )
        record["riskScore"] = rng.randint(40, 70)
        return record

    verified_at = submitted + timedelta(days=rng.randint(1, 5), hours=rng.randint(0, 8))
    statement = bank_statement(user_id, end=today)
    analysis = _analysis(statement)
    record["documents"] = [
        {"type": t, "status": "verified", "submittedAt": _iso(submitted), "verifiedAt": _iso(verified_at)}
        for t in document_types
    ]
    record["verificationDate"] = _iso(verified_at)
    record["riskScore"] = rng.randint(88, 99) if kind == "sanctioned" else rng.randint(5, 35)
    record["creditScore"] = None if kind == "thin_file" else rng.randint(620, 790)
    start = date(today.year - biz.years_in_business, rng.randint(1, 12), 1)
    record["employmentVerification"] = {
        "status": "verified",
        "verified": True,
        "type": "employed" if biz.salaried else "self_employed",
        "businessName": biz.name,
        "yearsInBusiness": biz.years_in_business,
        "businessStartDate": start.isoformat(),
    }
    if analysis is None:
        record["incomeVerification"] = {
            "status": "unverified",
            "verified": False,
            "reason": "no bank history",
        }
    else:
        record["incomeVerification"] = {
            "status": "verified",
            "verified": True,
            "source": "bank_statement",
            "averageMonthlyIncome": analysis["averageMonthlyInflow"],
            "currency": "NGN",
        }
    record["bankStatementAnalysis"] = analysis
    return record


def aml_screen(user_id: str, *, screened_at: datetime) -> dict[str, Any]:
    """`GET /sme/aml/{user_id}`: `status` hit or clear, `lists` the lists with a match."""
    screened = {"screenedLists": list(_SANCTIONS_LISTS), "screenedAt": _iso(screened_at)}
    if kind_of(user_id) != "sanctioned":
        return {"userId": user_id, "status": "clear", "lists": [], **screened}
    rng = _rng(user_id, "aml")
    biz = _business(user_id)
    hits = rng.sample(_SANCTIONS_LISTS, k=rng.randint(1, 2))
    return {
        "userId": user_id,
        "status": "hit",
        "lists": [
            {"list": name, "matchedName": biz.owner.upper(), "matchScore": rng.randint(90, 100)}
            for name in hits
        ],
        **screened,
    }
