"""Notifications domain: signatures, the retry schedule, envelopes, templates, endpoint URLs."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import pytest

from offchain.domain.notifications import signing
from offchain.domain.notifications.envelope import envelope, partner_data, subscribed
from offchain.domain.notifications.retry import RetryPolicy
from offchain.domain.notifications.templates import TEMPLATE_NAMES, TemplateError, render

# -- signatures --------------------------------------------------------------------------------


def test_signature__matches_hmac_sha256_of_t_dot_body():
    body = b'{"id":"e1","type":"credit.loan.repaid"}'
    header = signing.signature_header(["whsec_abc"], body, timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_abc", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify("whsec_abc", header, body, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "body", "now", "reason"),
    [
        ("whsec_other", b"{}", 1_700_000_000, "no v1"),
        ("whsec_abc", b"{} ", 1_700_000_000, "no v1"),
        ("whsec_abc", b"{}", 1_700_000_301, "tolerance"),
        ("whsec_abc", b"{}", 1_699_999_699, "tolerance"),
    ],
)
def test_signature__wrong_secret_body_or_stale_time__refused(secret, body, now, reason):
    header = signing.signature_header(["whsec_abc"], b"{}", timestamp=1_700_000_000)
    with pytest.raises(signing.SignatureError, match=reason):
        signing.verify(secret, header, body, now=now)


def test_signature__several_secrets_each_verify():
    header = signing.signature_header(["whsec_new", "whsec_old"], b"x", timestamp=10)
    assert header.count("v1=") == 2
    for secret in ("whsec_new", "whsec_old"):
        assert signing.verify(secret, header, b"x", now=10) == 10


def test_signature__malformed_header__refused():
    for header in ("", "t=abc,v1=00", "t=10", "v1=00"):
        with pytest.raises(signing.SignatureError):
            signing.verify("s", header, b"", now=10)


def test_new_secret__prefixed_and_unique():
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50 and all(s.startswith("whsec_") and len(s) > 40 for s in secrets)


# -- retry schedule ----------------------------------------------------------------------------


def test_retry__exponential_then_capped():
    policy = RetryPolicy(base_s=30, max_interval_s=3600, window_s=3 * 86_400, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert policy.delay(8) == 3600 and policy.delay(500) == 3600


def test_retry__jitter_stays_within_its_band_and_varies():
    policy = RetryPolicy(base_s=100, max_interval_s=10_000, window_s=86_400, jitter=0.2)
    rng = random.Random(7)
    delays = [policy.delay(1, rng=rng) for _ in range(200)]
    assert all(80 <= d <= 120 for d in delays)
    assert max(delays) - min(delays) > 20


def test_retry__gives_up_past_the_window():
    policy = RetryPolicy(base_s=60, max_interval_s=3600, window_s=3600, jitter=0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.next_attempt(failed_attempts=1, window_started_at=start, now=start) == start + timedelta(
        seconds=60
    )
    late = start + timedelta(seconds=3590)
    assert policy.next_attempt(failed_attempts=3, window_started_at=start, now=late) is None


def test_retry__default_schedule_spans_three_days():
    policy = RetryPolicy()
    offsets = policy.nominal_schedule()
    assert offsets[:4] == [0, 30, 90, 210]
    assert 2.75 * 86_400 <= offsets[-1] <= 3 * 86_400
    assert 15 <= len(offsets) <= 30  # a bounded number of attempts


# -- envelope ----------------------------------------------------------------------------------


def test_partner_data__submitted_is_the_public_application_view():
    payload = {"application": {"id": "a1", "status": "submitted"}, "partner_claims": {"creditLimit": 5}}
    assert partner_data("credit.application.submitted", payload) == {"id": "a1", "status": "submitted"}


def test_partner_data__internal_keys_never_leave():
    payload = {"loan_id": "l1", "partner_claims": {"x": 1}, "amount": {"value": 1, "currency": "NGN"}}
    assert partner_data("credit.loan.repaid", payload) == {
        "loan_id": "l1",
        "amount": {"value": 1, "currency": "NGN"},
    }


def test_envelope_shape_and_subscriptions():
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert envelope(event_id="e", event_type="t", created_at=at, data={"k": 1}) == {
        "id": "e",
        "type": "t",
        "created_at": "2026-01-02T03:04:05+00:00",
        "data": {"k": 1},
    }
    assert subscribed(["*"], "credit.loan.repaid")
    assert subscribed(["credit.loan.repaid"], "credit.loan.repaid")
    assert not subscribed(["credit.loan.defaulted"], "credit.loan.repaid")


# -- templates ---------------------------------------------------------------------------------


def test_render__money_and_loan_reference():
    message = render(
        "repayment_due",
        {"amount_due": {"value": 1_250_050, "currency": "NGN"}, "due_date": "2026-12-01", "installment": 2},
        loan_id="loan-9",
    )
    assert "NGN 12,500.50" in message.body and "loan-9" in message.body and "2026-12-01" in message.subject
    assert "(installment 2)" in message.body


def test_render__optional_parts_follow_the_data_collections_sends():
    money = {"value": 500_000, "currency": "NGN"}
    missed = render(
        "repayment_missed",
        {"installment": 1, "due_date": "2026-11-01", "amount_missed": money, "amount_due": money},
        loan_id="L1",
    )
    assert "of NGN 5,000.00 due on 2026-11-01" in missed.body and "late." not in missed.body
    dunning = render(
        "repayment_missed",
        {"installment": 1, "days_past_due": 3, "bucket": "1-30", "amount_due": money, "outstanding": money},
        loan_id="L1",
    )
    assert "It is now 3 day(s) late." in dunning.body and "due on" not in dunning.body
    assert "$" not in missed.body + dunning.body + missed.subject + dunning.subject
    collection = render("collection_initiated", {"days_past_due": 7, "amount_due": money}, loan_id="L1")
    assert "7 day(s) past due." in collection.body and "outstanding" not in collection.body


def test_render__values_are_text_not_placeholders():
    message = render("collection_initiated", {"days_past_due": "$amount_due", "amount_due": "x"}, loan_id="L")
    assert "$amount_due day(s)" in message.body


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_render__every_template_refuses_missing_values(template):
    with pytest.raises(TemplateError, match="needs"):
        render(template, {}, loan_id="l")


def test_render__unknown_template_and_bad_money():
    with pytest.raises(TemplateError, match="unknown template"):
        render("birthday", {})
    with pytest.raises(TemplateError, match="bad money"):
        render(
            "repayment_due", {"amount_due": {"value": 1.5, "currency": "NGN"}, "due_date": "x"}, loan_id="l"
        )
